"""Tasks: examples, prompt templates, and the on-disk task format.

A task folder holds ``task.yaml`` and one JSONL file per split (``train.jsonl``, ``test.jsonl``, ...),
one example per line: ``{"input": str, "output": str, "options": [str, ...]}`` (``options`` optional).
See ``docs/task_format.md``. Loading validates everything and reports all problems together.
:class:`Example` and the checked file readers live in :mod:`manyicl.examples` (shared with
:mod:`manyicl.sources`) and are importable from here too.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import Collector, Problem, TaskFormatError
from .examples import Example, check_strings, jsonl_lines, text_problem
from .fileio import atomic_write_text, load_yaml
from .sources import outside_problem, parse_json_line, read_text_file

CATEGORIES = ("cls", "nli", "qa", "mlcls", "sum", "math", "other")
METRICS = ("accuracy", "exact_match", "rouge_l", "math_accuracy", "multilabel_f1")
DEFAULT_METRIC = {
    "cls": "accuracy",
    "nli": "accuracy",
    "qa": "exact_match",
    "mlcls": "multilabel_f1",
    "sum": "rouge_l",
    "math": "math_accuracy",
    "other": "exact_match",
}


@dataclass
class Template:
    """How examples become text. One example renders as::

        {input_prefix}{input}{input_output_separator}{output_prefix}{target_prefix}{output}{example_separator}

    and everything from ``target_prefix`` on is the *target* (the tokens that carry loss and are scored).
    A sequence starts with ``{instruction}{instruction_separator}`` when an instruction is set.
    The default mirrors the paper's Appendix A.2 prompt.
    """

    instruction: str = ""
    """Task description placed once at the start, e.g. 'Task: ... Here are some examples:'."""
    instruction_separator: str = "\n"
    """Text between the instruction and the first example."""
    input_prefix: str = "Input: "
    """Text before each input, e.g. 'Text: '."""
    input_output_separator: str = "\n"
    """Text between an input and its output prefix."""
    output_prefix: str = "Output:"
    """Text before each output, e.g. 'Intent:'."""
    target_prefix: str = " "
    """Start of the target, before the output (a space keeps BPE word tokens intact)."""
    example_separator: str = "\n"
    """Ends each example; part of the target, so the model learns where an answer stops."""

    def query_text(self, input: str) -> str:
        return f"{self.input_prefix}{input}{self.input_output_separator}{self.output_prefix}"

    def target_text(self, output: str) -> str:
        return f"{self.target_prefix}{output}{self.example_separator}"

    def header_text(self) -> str:
        return f"{self.instruction}{self.instruction_separator}" if self.instruction else ""

    def stop_strings(self) -> list[str]:
        """Where greedy generation ends: the example separator, or the start of a next example."""
        stops = [self.example_separator] if self.example_separator.strip(" ") else []
        head = self.input_prefix.strip()
        if head:
            stops.append("\n" + head)
        return stops or ["\n"]


@dataclass
class Task:
    """A named task with a category, a metric, a template and splits of examples."""

    name: str
    category: str
    template: Template = field(default_factory=Template)
    splits: dict[str, list[Example]] = field(default_factory=dict)
    metric: str = ""
    labels: tuple[str, ...] = ()
    """The label set of a classification task; each example's options default to it."""
    label_separator: str = ", "
    """How a multi-label output joins its labels."""
    family: str = ""
    """Task family (synthetic suite) or source dataset; used for splits and reports."""
    description: str = ""
    source: str = ""
    """Where the data came from (folder or file), for messages."""
    split_files: dict[str, str] = field(default_factory=dict)
    """Split name -> file it was read from, for messages that name file and line."""
    notes: list[str] = field(default_factory=list)
    """Facts a user should know (e.g. 'test.jsonl is unlabeled and not used', 'test split derived')."""
    load_warnings: list[Problem] = field(default_factory=list, compare=False, repr=False)
    """Warnings found while reading the task's files; :func:`check_quality` reports them again."""

    def __post_init__(self) -> None:
        if not self.metric:
            self.metric = DEFAULT_METRIC.get(self.category, "exact_match")
        self.labels = tuple(self.labels)

    def options_for(self, ex: Example) -> tuple[str, ...]:
        """Answer choices for scoring: the example's own, else the task's label set (not for multi-label)."""
        if ex.options:
            return ex.options
        if self.category != "mlcls":
            return self.labels
        return ()

    def stratify_key(self, ex: Example) -> str | None:
        """Label used for stratified sampling (classification-like tasks only)."""
        if self.category in ("cls", "nli") or (self.labels and self.category != "mlcls"):
            return ex.output
        return None

    def has_split(self, spec: str) -> bool:
        return any(p in self.splits for p in spec.split("+"))

    def split(self, spec: str) -> list[Example]:
        """Examples of a split, or of several joined with '+' (e.g. 'train+dev'; missing parts are skipped)."""
        parts = [p for p in spec.split("+") if p in self.splits]
        if not parts:
            raise TaskFormatError.single(
                self.name, f"has no split '{spec}' (it has: {', '.join(self.splits) or 'none'})"
            )
        if len(parts) == 1:
            return self.splits[parts[0]]
        return [e for p in parts for e in self.splits[p]]


# --------------------------------------------------------------------------------------------
# Reading and writing task folders
# --------------------------------------------------------------------------------------------

_TASK_KEYS = {
    "name",
    "category",
    "metric",
    "labels",
    "label_separator",
    "family",
    "description",
    "template",
    "splits",
    "source",
}


_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}")
NAME_RULE = (
    "a task name is 1-128 letters, digits and . _ : + - starting with a letter or digit, "
    "without '/', '\\' or '..' (it becomes part of output file names)"
)
WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"{d}{i}" for d in ("COM", "LPT") for i in range(10)]
)
"""Device names Windows reserves in every folder, whatever the case and extension (``nul.txt`` is NUL)."""


def name_problem(name: object) -> str | None:
    """Why ``name`` is not a safe task name, or None when it is."""
    if not isinstance(name, str):
        return f"must be a string, got {type(name).__name__} {name!r}"
    if not _NAME_RE.fullmatch(name) or ".." in name:
        return f"{name[:80]!r} is not a safe task name: {NAME_RULE}"
    stem = name.replace(":", "_").split(".", 1)[0]
    if stem.upper() in WINDOWS_RESERVED:
        return (
            f"{name!r} is not a safe task name: {stem!r} is a device name on Windows (CON, PRN, AUX, NUL, "
            "COM0-COM9, LPT0-LPT9, in any case and with any extension), so no file can be named after it "
            f"there; add to it, e.g. '{stem.lower()}_task'"
        )
    if name.endswith("."):
        return (
            f"{name!r} is not a safe task name: it ends with '.', which Windows drops from file names "
            f"('{name}' and '{name.rstrip('.')}' would be one file); remove the final '.'"
        )
    return None


def safe_path_component(name: str) -> str:
    """A (validated) task name as one file or folder name: ':' becomes '_'.

    Raises ``ValueError`` for anything that is not a safe task name (``/``, ``\\``, ``..``, empty,
    control characters, ...), so a name can never make a path escape its folder.
    """
    problem = name_problem(name)
    if problem:
        raise ValueError(f"task name cannot be used in a file name: {problem}")
    return name.replace(":", "_")


def read_jsonl_examples(path: Path, c: Collector) -> list[Example]:
    """Read ``{"input", "output", "options"?}`` lines, recording every bad line in ``c``."""
    out: list[Example] = []
    text = read_text_file(path, c)
    if text is None:
        return out
    if not text.strip():
        c.add(str(path), "empty file: a split needs at least one example")
        return out
    for lineno, line in jsonl_lines(text):
        where = f"{path}:{lineno}"
        ok, obj = parse_json_line(line, where, c, "; each line must be one JSON object")
        if not ok:
            continue
        if not isinstance(obj, dict):
            c.add(where, f"expected a JSON object, got {type(obj).__name__}")
            continue
        ex = example_from_record(obj, where, c, line=lineno)
        if ex is not None:
            out.append(ex)
    return out


def example_from_record(obj: dict[str, Any], where: str, c: Collector, line: int = 0) -> Example | None:
    ok = True
    for key in ("input", "output"):
        if key not in obj:
            c.add(where, f"missing field; every example needs '{key}'", key)
            ok = False
        elif not isinstance(obj[key], str):
            c.add(where, f"must be a string, got {type(obj[key]).__name__} {obj[key]!r}", key)
            ok = False
    if ok and not obj["output"].strip():
        c.add(where, "is empty; every example needs a non-empty output", "output")
        ok = False
    options = obj.get("options") or []
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        c.add(where, f"must be a list of strings, got {options!r}", "options")
        ok = False
    elif ok and options and obj["output"] not in options:
        c.add(where, f"gold output {obj['output']!r} is not one of the options {options[:6]!r}", "options")
        ok = False
    if ok:
        for key, value in (("input", obj["input"]), ("output", obj["output"]), ("options", options)):
            n = len(c.errors)
            check_strings(value, where, c, key)
            ok = ok and len(c.errors) == n
    if not ok:
        return None
    return Example(obj["input"], obj["output"], tuple(options), line=line)


def _read_task_yaml(path: Path) -> tuple[Path, dict]:
    """task.yaml of a task folder as a mapping; raises :class:`TaskFormatError` when there is none."""
    meta_path = path / "task.yaml"
    try:
        meta_path.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise TaskFormatError.single(str(path), "no task.yaml here; see docs/task_format.md") from None
    except OSError as e:
        raise TaskFormatError.single(
            str(path), f"cannot look inside this folder ({e.strerror}); check its permissions"
        ) from None
    c = Collector()
    text = read_text_file(meta_path, c, what="YAML file")
    c.raise_if_any(TaskFormatError)
    try:
        meta = load_yaml(text) or {}
    except yaml.YAMLError as e:
        raise TaskFormatError.single(str(meta_path), f"not valid YAML: {e}") from None
    except RecursionError:
        raise TaskFormatError.single(str(meta_path), "not valid YAML: nested too deeply to read") from None
    except ValueError as e:  # an integer of more than 4,300 digits
        raise TaskFormatError.single(str(meta_path), f"not valid YAML: {str(e).split(':')[0]}") from None
    if not isinstance(meta, dict):
        raise TaskFormatError.single(str(meta_path), "must be a mapping (name:, category:, template:, ...)")
    return meta_path, meta


def load_task_dir(path: str | Path) -> Task:
    """Load one task folder; raises :class:`TaskFormatError` listing every problem."""
    path = Path(path)
    c = Collector()
    meta_path, meta = _read_task_yaml(path)
    where = str(meta_path)
    check_strings(meta, where, c)
    for key in meta:
        if key not in _TASK_KEYS:
            c.add(where, f"unknown key; known keys: {', '.join(sorted(_TASK_KEYS))}", str(key))
    name = meta.get("name")
    if name is None or name == "":
        name = path.name or path.resolve().name
        problem = name_problem(name)
        if problem:
            c.add(where, f"no name given and the folder name {problem}; set name: in task.yaml", "name")
    else:
        if isinstance(name, int) and not isinstance(name, bool):
            name = str(name)
        problem = name_problem(name)
        if problem:
            c.add(where, f"{problem}; choose another name", "name")
    name = str(name)
    for key in ("family", "description"):
        if meta.get(key) is not None and not isinstance(meta[key], (str, int, float)):
            c.add(where, f"must be a string, got {type(meta[key]).__name__}", key)
    label_separator = meta.get("label_separator", ", ")
    if not isinstance(label_separator, str) or not label_separator:
        c.add(where, f"must be a non-empty string, e.g. ', ', got {label_separator!r}", "label_separator")
        label_separator = ", "
    category = meta.get("category")
    if category not in CATEGORIES:
        c.add(where, f"must be one of {', '.join(CATEGORIES)}, got {category!r}", "category")
    metric = meta.get("metric") or DEFAULT_METRIC.get(
        category if isinstance(category, str) else "", "exact_match"
    )
    if metric not in METRICS:
        c.add(where, f"must be one of {', '.join(METRICS)}, got {metric!r}", "metric")
    tmpl_data = meta.get("template") or {}
    template = Template()
    if not isinstance(tmpl_data, dict):
        c.add(where, "must be a mapping of template fields", "template")
    else:
        known = {f.name for f in fields(Template)}
        for k, v in tmpl_data.items():
            if k not in known:
                c.add(where, f"unknown template key; known: {', '.join(sorted(known))}", f"template.{k}")
            elif not isinstance(v, str):
                c.add(where, f"must be a string, got {v!r}", f"template.{k}")
        template = Template(**{k: v for k, v in tmpl_data.items() if k in known and isinstance(v, str)})
    labels = meta.get("labels") or []
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        c.add(where, f"must be a list of strings, got {labels!r}", "labels")
        labels = []
    split_files: dict[str, Path]
    splits: dict[str, list[Example]] = {}
    if "source" in meta:  # raw JSONL/CSV/TSV/datasets with a field mapping
        from .sources import check_source, read_source_splits, source_labels

        split_files = {}
        if check_source(meta["source"], where, c):
            splits, files = read_source_splits(path, meta["source"], c, where=where)
            split_files = {k: Path(v) for k, v in files.items()}
            if not splits and not c:
                c.add(where, "the source produced no splits", "source")
            if not labels and category in ("cls", "nli") and meta["source"].get("label_names") and not c:
                labels = source_labels(path, meta["source"])
    elif meta.get("splits"):
        split_files = {}
        if not isinstance(meta["splits"], dict):
            c.add(where, "must map split names to JSONL file names, e.g. {train: train.jsonl}", "splits")
        else:
            for k, v in meta["splits"].items():
                if not isinstance(v, str) or not v:
                    c.add(where, f"must be a JSONL file name, got {v!r}", f"splits.{k}")
                elif outside_problem(v):
                    c.add(where, outside_problem(v) or "", f"splits.{k}")
                else:
                    split_files[str(k)] = path / v
    else:
        split_files = {p.stem: p for p in sorted(path.glob("*.jsonl"))}
    if not split_files and "source" not in meta and not meta.get("splits"):
        c.add(str(path), "no splits: add train.jsonl / test.jsonl (one JSON example per line)")
    for split, f in split_files.items():
        if split in splits:
            continue
        if not f.exists():
            c.add(where, f"split file {f.name} does not exist", f"splits.{split}")
            continue
        splits[split] = read_jsonl_examples(f, c)
    task = Task(
        source=str(path),
        split_files={k: str(v) for k, v in split_files.items()},
        name=name,
        category=str(category),
        template=template,
        splits=splits,
        metric=str(metric),
        labels=tuple(labels),
        label_separator=label_separator,
        family=str(meta.get("family") or name),
        description=str(meta.get("description") or ""),
    )
    # empty files and bad lines were reported while reading
    validate_task(task, c, where=str(path), check_empty=False, check_text=False)
    c.raise_if_any(TaskFormatError, title=f"invalid task {path}")
    task.load_warnings = c.warnings
    task.notes.extend(str(p) for p in c.warnings)
    return task


def validate_task(
    task: Task, c: Collector, where: str | None = None, check_empty: bool = True, check_text: bool = True
) -> None:
    """Task-level checks that need all splits: a safe name, label sets, single-label classification,
    empties, and (``check_text``; the loader checks while reading) text that cannot be encoded."""
    where = where or task.name
    if check_text:
        problem = name_problem(task.name)
        if problem:
            c.add(where, problem, "name")
        for split, exs in task.splits.items():
            n_bad = 0
            for e in exs:
                for fld, value in (
                    ("input", e.input),
                    ("output", e.output),
                    *(("options", o) for o in e.options),
                ):
                    text_bad = text_problem(value)
                    if text_bad:
                        n_bad += 1
                        if n_bad <= 5:
                            c.add(_at(task, split, e), text_bad, fld)
                        break
            if n_bad > 5:
                c.add(f"{where}/{split}", f"... and {n_bad - 5} more examples with invalid text")
    if task.category in ("cls", "nli"):
        for split, exs in task.splits.items():
            n_labels = len({e.output for e in exs})
            if exs and n_labels < 2 and split == "train":
                c.add(f"{where}/{split}", f"a {task.category} task needs at least 2 labels, found {n_labels}")
    if task.labels and task.category != "mlcls":
        allowed = set(task.labels)
        for split, exs in task.splits.items():
            bad = Counter(e.output for e in exs if e.output not in allowed)
            for label, n in bad.most_common(5):
                c.add(f"{where}/{split}", f"output {label!r} ({n}x) is not in the task's labels", "output")
    if check_empty:
        for split, exs in task.splits.items():
            if not exs:
                c.add(f"{where}/{split}", "split has no examples")


def _at(task: Task, split: str, ex: Example) -> str:
    f = task.split_files.get(split) or f"{task.name}/{split}"
    return f"{f}:{ex.line}" if ex.line else f"{f} ({ex.input[:40]!r})"


def check_quality(task: Task, c: Collector, max_per_kind: int = 5) -> None:
    """Warnings for data that loads but is probably not what was meant.

    Empty inputs, duplicate examples, labels with stray whitespace, labels that differ only in case,
    options that do not contain the gold output. Each names file, line and field (at most ``max_per_kind`` per
    kind and split, then a count). Warnings found while loading the task's files come first.
    """
    c.problems.extend(task.load_warnings)
    if (
        task.category in ("cls", "nli")
        and not task.labels
        and not any(e.options for exs in task.splits.values() for e in exs)
    ):
        c.warn(
            task.source or task.name,
            f"a {task.category} task without labels: evaluation generates free text and compares it with the "
            "gold label instead of choosing among the labels; list them in task.yaml (labels: [...])",
            "labels",
        )
    for split, exs in task.splits.items():
        found: dict[str, list[tuple[str, str, str]]] = {}
        seen: dict[tuple[str, str], Example] = {}
        first_with: dict[str, Example] = {}
        for ex in exs:
            key = (" ".join(ex.input.split()).lower(), ex.output)
            if key in seen:
                found.setdefault("duplicate", []).append(
                    (_at(task, split, ex), f"duplicate of {_at(task, split, seen[key])}", "input")
                )
            else:
                seen[key] = ex
            if not ex.input.strip():
                found.setdefault("empty_input", []).append(
                    (
                        _at(task, split, ex),
                        "input is empty: the model sees only the prompt's prefixes",
                        "input",
                    )
                )
            if ex.output != ex.output.strip():
                found.setdefault("whitespace", []).append(
                    (_at(task, split, ex), f"label {ex.output!r} has leading/trailing whitespace", "output")
                )
            if ex.options and ex.output not in ex.options:
                found.setdefault("options", []).append(
                    (_at(task, split, ex), f"gold output {ex.output!r} is not among the options", "options")
                )
            first_with.setdefault(ex.output, ex)
        if task.category in ("cls", "nli") or task.labels:
            by_fold: dict[str, list[str]] = {}
            for out in first_with:
                by_fold.setdefault(out.strip().lower(), []).append(out)
            for variants in by_fold.values():
                if len(variants) > 1:
                    ex = first_with[variants[1]]
                    found.setdefault("case", []).append(
                        (_at(task, split, ex), f"labels {variants} differ only in case/whitespace", "output")
                    )
        for items in found.values():
            for where, msg, fld in items[:max_per_kind]:
                c.warn(where, msg, fld)
            if len(items) > max_per_kind:
                src = task.split_files.get(split) or f"{task.name}/{split}"
                c.warn(src, f"... and {len(items) - max_per_kind} more like the above")


def _exists(p: Path) -> bool:
    """Whether ``p`` exists; False also when a parent folder cannot be searched (reported elsewhere)."""
    try:
        p.stat()
    except OSError:
        return False
    return True


def find_task_dirs(root: str | Path, c: Collector | None = None) -> list[Path]:
    """``root`` itself if it is a task folder, else every task folder below it.

    Symbolic links to folders are followed (each real folder is visited once). A folder that cannot be
    read is recorded in ``c`` (when given) instead of being skipped silently.
    """
    root = Path(root)
    if _exists(root / "task.yaml"):
        return [root]
    found: list[Path] = []
    seen: set[str] = set()
    stack = [root]
    while stack:
        d = stack.pop()
        real = os.path.realpath(d)
        if real in seen:
            continue
        seen.add(real)
        try:
            with os.scandir(d) as it:
                entries = list(it)
        except FileNotFoundError:
            continue
        except OSError as e:
            if c is not None and d != root:
                c.add(
                    str(d),
                    f"cannot read this folder ({e.strerror}); task folders inside it would be missed: fix its "
                    f"permissions (e.g. chmod a+rx {d}) or move it out of {root}",
                )
            elif c is not None:
                c.add(str(d), f"cannot read this folder ({e.strerror}); check its permissions")
            continue
        for entry in entries:
            if entry.name == "task.yaml":
                found.append(d)
                continue
            try:
                is_dir = entry.is_dir()  # follows symbolic links
            except OSError:
                is_dir = False
            if is_dir:
                stack.append(Path(entry.path))
    return sorted(found)


def load_task_dirs(roots: list[str]) -> list[Task]:
    """Load all task folders under ``roots``, collecting the problems of every task.

    A folder reached twice (overlapping roots, links) is loaded once. Two folders whose tasks share a
    name, or whose names would share output file names, are an error naming both folders.
    """
    c = Collector()
    tasks = load_task_dirs_collecting(roots, c)
    c.raise_if_any(TaskFormatError)
    return tasks


def load_task_dirs_collecting(roots: list[str], c: Collector) -> list[Task]:
    """:func:`load_task_dirs` that records every problem in ``c`` instead of raising, and returns the
    tasks that did load (``manyicl tasks validate`` reports the good folders next to the broken ones)."""
    tasks: list[Task] = []
    loaded: set[str] = set()
    for root in roots:
        try:
            Path(root).stat()
        except (FileNotFoundError, NotADirectoryError):
            c.add(str(root), "does not exist, so no task.yaml here; give a task folder or a folder of them")
            continue
        except OSError as e:
            c.add(str(root), f"cannot read ({e.strerror}); check the permissions of the folders above it")
            continue
        n_errors = len(c.errors)
        if Path(root).is_file():
            if Path(root).name != "task.yaml":
                c.add(
                    str(root),
                    "is a file; give a task folder (the folder holding task.yaml) or a folder of them",
                )
                continue
            dirs = [Path(root).parent]
        else:
            dirs = find_task_dirs(root, c)
        if not dirs and len(c.errors) == n_errors:
            c.add(str(root), "no task.yaml found here or below; see docs/task_format.md")
        for d in dirs:
            real = os.path.realpath(d)
            if real in loaded:
                continue
            loaded.add(real)
            try:
                tasks.append(load_task_dir(d))
            except TaskFormatError as e:
                c.problems.extend(e.problems)
    by_key: dict[str, list[Task]] = {}
    for t in tasks:
        key = t.name.replace(":", "_").lower()  # as a file name, on case-insensitive file systems too
        by_key.setdefault(key, []).append(t)
    for group in by_key.values():
        if len(group) < 2:
            continue
        folders = ", ".join(f"{t.source}/task.yaml" for t in group)
        names = sorted({t.name for t in group})
        if len(names) == 1:
            msg = f"{len(group)} task folders share this name ({folders}); names must be unique"
        else:
            msg = (
                f"task names {names} would share output file names ({folders}); names must be unique "
                "ignoring case and with ':' read as '_'"
            )
        c.add(names[0], f"{msg}: set a different name: in all but one of them", "name")
    return tasks


def write_task_dir(task: Task, path: str | Path) -> Path:
    """Write a task in the on-disk format (atomically per file)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    meta = {
        "name": task.name,
        "category": task.category,
        "metric": task.metric,
        "family": task.family,
        "description": task.description,
        "template": asdict(task.template),
    }
    if task.labels:
        meta["labels"] = list(task.labels)
    if task.category == "mlcls":
        meta["label_separator"] = task.label_separator
    atomic_write_text(path / "task.yaml", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True))
    for split, exs in task.splits.items():
        lines = []
        for e in exs:
            rec: dict[str, Any] = {"input": e.input, "output": e.output}
            if e.options:
                rec["options"] = list(e.options)
            lines.append(json.dumps(rec, ensure_ascii=False))
        atomic_write_text(path / f"{split}.jsonl", "\n".join(lines) + "\n")
    return path
