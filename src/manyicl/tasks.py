"""Tasks: examples, prompt templates, and the on-disk task format.

A task folder holds ``task.yaml`` and one JSONL file per split (``train.jsonl``, ``test.jsonl``, ...),
one example per line: ``{"input": str, "output": str, "options": [str, ...]}`` (``options`` optional).
See ``docs/task_format.md``. Loading validates everything and reports all problems together.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import Collector, TaskFormatError
from .fileio import atomic_write_text, load_yaml

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


@dataclass(frozen=True)
class Example:
    """One input -> output pair. ``options`` lists the answer choices when the task is multiple choice."""

    input: str
    output: str
    options: tuple[str, ...] = ()
    line: int = field(default=0, compare=False)
    """Line (or row) in the source file, for error messages; 0 when generated."""


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


def read_jsonl_examples(path: Path, c: Collector) -> list[Example]:
    """Read ``{"input", "output", "options"?}`` lines, recording every bad line in ``c``."""
    out: list[Example] = []
    try:
        raw = path.read_bytes()
    except OSError as e:
        c.add(str(path), f"cannot read: {e.strerror}")
        return out
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        c.add(f"{path}:{line}", f"not UTF-8 (byte {e.start}); re-save the file as UTF-8")
        return out
    if not text.strip():
        c.add(str(path), "empty file: a split needs at least one example")
        return out
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            c.add(where, f"malformed JSON ({e.msg} at column {e.colno}); each line must be one JSON object")
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
    if not ok:
        return None
    return Example(obj["input"], obj["output"], tuple(options), line=line)


def load_task_dir(path: str | Path) -> Task:
    """Load one task folder; raises :class:`TaskFormatError` listing every problem."""
    path = Path(path)
    c = Collector()
    meta_path = path / "task.yaml"
    if not meta_path.exists():
        raise TaskFormatError.single(str(path), "no task.yaml here; see docs/task_format.md")
    try:
        meta = load_yaml(meta_path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise TaskFormatError.single(str(meta_path), f"not valid UTF-8 YAML: {e}") from None
    if not isinstance(meta, dict):
        raise TaskFormatError.single(str(meta_path), "must be a mapping (name:, category:, template:, ...)")
    where = str(meta_path)
    for key in meta:
        if key not in _TASK_KEYS:
            c.add(where, f"unknown key; known keys: {', '.join(sorted(_TASK_KEYS))}", str(key))
    name = meta.get("name") or path.name
    category = meta.get("category")
    if category not in CATEGORIES:
        c.add(where, f"must be one of {', '.join(CATEGORIES)}, got {category!r}", "category")
    metric = meta.get("metric") or DEFAULT_METRIC.get(category or "", "exact_match")
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
        from .sources import check_source, read_source_splits

        split_files = {}
        if check_source(meta["source"], where, c):
            splits, files = read_source_splits(path, meta["source"], c)
            split_files = {k: Path(v) for k, v in files.items()}
            if not splits and not c:
                c.add(where, "the source produced no splits", "source")
    elif meta.get("splits"):
        if not isinstance(meta["splits"], dict):
            c.add(where, "must map split names to JSONL file names", "splits")
            split_files = {}
        else:
            split_files = {str(k): path / str(v) for k, v in meta["splits"].items()}
    else:
        split_files = {p.stem: p for p in sorted(path.glob("*.jsonl"))}
    if not split_files and "source" not in meta:
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
        name=str(name),
        category=str(category),
        template=template,
        splits=splits,
        metric=str(metric),
        labels=tuple(labels),
        label_separator=str(meta.get("label_separator", ", ")),
        family=str(meta.get("family") or name),
        description=str(meta.get("description") or ""),
    )
    # empty files and bad lines were reported while reading
    validate_task(task, c, where=str(path), check_empty=False)
    c.raise_if_any(TaskFormatError, title=f"invalid task {path}")
    return task


def validate_task(task: Task, c: Collector, where: str | None = None, check_empty: bool = True) -> None:
    """Task-level checks that need all splits: label sets, single-label classification, empties."""
    where = where or task.name
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

    Duplicate examples, labels with stray whitespace, labels that differ only in case, options that
    do not contain the gold output. Each names file, line and field (at most ``max_per_kind`` per
    kind and split, then a count).
    """
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


def find_task_dirs(root: str | Path) -> list[Path]:
    """``root`` itself if it is a task folder, else every task folder below it."""
    root = Path(root)
    if (root / "task.yaml").exists():
        return [root]
    return sorted(p.parent for p in root.rglob("task.yaml"))


def load_task_dirs(roots: list[str]) -> list[Task]:
    """Load all task folders under ``roots``, collecting the problems of every task."""
    c = Collector()
    tasks: list[Task] = []
    for root in roots:
        dirs = find_task_dirs(root)
        if not dirs:
            c.add(str(root), "no task.yaml found here or below; see docs/task_format.md")
        for d in dirs:
            try:
                tasks.append(load_task_dir(d))
            except TaskFormatError as e:
                c.problems.extend(e.problems)
    names = Counter(t.name for t in tasks)
    for n, k in names.items():
        if k > 1:
            c.add(n, f"{k} task folders share this name; names must be unique")
    c.raise_if_any(TaskFormatError)
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
