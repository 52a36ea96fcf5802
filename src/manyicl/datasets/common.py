"""What every loader of the shared data folder needs: where the data is, how files are read (problems
collected with file and line), how a single-split dataset is split, the shared prompt pieces, and the
:class:`DatasetSpec` that each source module declares for the registry."""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Collector
from ..tasks import DEFAULT_METRIC, Example, Task, Template

SPLIT_SEED = 20240917
"""Seed of the shuffle that derives train/test splits for datasets that ship only one split."""
TEST_FRACTION = 0.2
"""Share of the examples that the seeded shuffle puts in 'test'."""


def default_data_dir() -> Path | None:
    """``$MANYICL_DATA`` if set; else the first existing of ``<repo>/../shared/data``,
    ``./../shared/data`` and ``./shared/data``; ``None`` if none exists."""
    env = os.environ.get("MANYICL_DATA")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[3]
    for cand in (
        repo.parent / "shared" / "data",
        Path.cwd().parent / "shared" / "data",
        Path.cwd() / "shared" / "data",
    ):
        if cand.is_dir():
            return cand.resolve()
    return None


@dataclass(frozen=True)
class SharedTask:
    """One task available in the shared data folder."""

    name: str
    """Task name used everywhere, e.g. 'clinc150', 'gsm8k_cot', 'metaicl:glue-sst2'."""
    category: str
    dataset: str
    """Folder under the data dir, e.g. 'clinc150', 'metaicl_rethinking', 'bigbench_subset'."""
    description: str


@dataclass(frozen=True)
class DatasetSpec:
    """How to load one task of the shared folder: its catalog entry, its loader, the files it needs."""

    name: str
    category: str
    dataset: str
    description: str
    loader: Callable[[DatasetSpec, LoadContext], Task]
    needs: tuple[str, ...]
    """Files (relative to the data dir) whose presence makes the task available."""


# --------------------------------------------------------------------------------------------
# Prompt templates shared by several sources
# --------------------------------------------------------------------------------------------


def task_instruction(text: str) -> str:
    return f"Task: {text} Here are some examples:"


INTENT_TEMPLATE = Template(
    instruction=task_instruction(
        "You will receive a text input. Your task is to classify the intent of the input text."
    ),
    input_prefix="Text: ",
    output_prefix="Intent:",
)


def nli_template(three_way: bool) -> Template:
    what = (
        "Decide whether the premise entails, contradicts, or is neutral towards the hypothesis."
        if three_way
        else "Decide whether the premise entails the hypothesis."
    )
    return Template(instruction=task_instruction(what), input_prefix="Premise: ", output_prefix="Answer:")


def text_template(what: str, output_prefix: str, input_prefix: str = "Text: ") -> Template:
    return Template(
        instruction=task_instruction(what), input_prefix=input_prefix, output_prefix=output_prefix
    )


# --------------------------------------------------------------------------------------------
# Reading helpers (parsed files are cached within one call, never on disk)
# --------------------------------------------------------------------------------------------


@dataclass
class LoadContext:
    """One load call: the data folder, the problems found so far, the files parsed so far."""

    root: Path
    problems: Collector = field(default_factory=Collector)
    cache: dict[Any, Any] = field(default_factory=dict)


def one_line(s: str) -> str:
    """Collapse all whitespace runs (newlines included) to single spaces."""
    return " ".join(s.split())


def humanize(label: str) -> str:
    return label.strip().replace("_", " ").lower()


def read_text(path: Path, ctx: LoadContext) -> str | None:
    key = ("text", path)
    if key in ctx.cache:
        return ctx.cache[key]
    text: str | None = None
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        ctx.problems.add(str(path), "file not found (is the shared data folder complete? see its SOURCE.txt)")
    except OSError as e:
        ctx.problems.add(str(path), f"cannot read: {e.strerror}")
    else:
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            line = raw[: e.start].count(b"\n") + 1
            ctx.problems.add(f"{path}:{line}", f"not UTF-8 (byte {e.start}); re-save the file as UTF-8")
    ctx.cache[key] = text
    return text


def read_jsonl(path: Path, ctx: LoadContext) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line; bad lines are recorded as errors."""
    key = ("jsonl", path)
    if key in ctx.cache:
        return ctx.cache[key]
    out: list[tuple[int, dict]] = []
    text = read_text(path, ctx)
    if text is not None:
        loads = json.loads
        for lineno, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                obj = loads(line)
            except json.JSONDecodeError as e:
                ctx.problems.add(
                    f"{path}:{lineno}",
                    f"malformed JSON ({e.msg} at column {e.colno}); each line must be one JSON object",
                )
                continue
            if not isinstance(obj, dict):
                ctx.problems.add(f"{path}:{lineno}", f"expected a JSON object, got {type(obj).__name__}")
                continue
            out.append((lineno, obj))
        if not out and not any(p.where.startswith(f"{path}:") for p in ctx.problems.errors):
            ctx.problems.add(str(path), "no examples in this file")
    ctx.cache[key] = out
    return out


def read_json(path: Path, ctx: LoadContext) -> Any:
    key = ("json", path)
    if key in ctx.cache:
        return ctx.cache[key]
    obj = None
    text = read_text(path, ctx)
    if text is not None:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            ctx.problems.add(f"{path}:{e.lineno}", f"malformed JSON ({e.msg} at column {e.colno})")
    ctx.cache[key] = obj
    return obj


_WS = re.compile(r"[ \t\r\n]*")


def array_lines(path: Path, key: str, n: int, ctx: LoadContext) -> list[int]:
    """1-based line of each element of the array stored under ``"key": [...]`` in a JSON file.

    Lets messages about pretty-printed JSON name real lines. Falls back to the element's position
    (index + 1) when the array cannot be located unambiguously.
    """
    ck = ("lines", path, key)
    if ck in ctx.cache:
        return ctx.cache[ck]
    text = read_text(path, ctx) or ""
    dec = json.JSONDecoder()
    result = list(range(1, n + 1))
    for m in re.finditer('"' + re.escape(key) + r'"\s*:\s*\[', text):
        pos, last = m.end(), m.end()
        line = text.count("\n", 0, pos) + 1
        lines: list[int] = []
        try:
            while True:
                pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
                if text[pos] == "]":
                    break
                line += text.count("\n", last, pos)
                last = pos
                lines.append(line)
                _, pos = dec.raw_decode(text, pos)
                pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
                if text[pos] == ",":
                    pos += 1
        except (ValueError, IndexError):
            continue
        if len(lines) == n:
            result = lines
            break
    ctx.cache[ck] = result
    return result


def file_line(path: Path, line: int) -> str:
    return f"{path}:{line}"


class BadRow(Exception):
    """Raised by a row parser: the row is skipped and each (message, field) recorded at its line."""

    def __init__(self, message: str, field: str | None = None, *more: tuple[str, str | None]):
        super().__init__(message)
        self.problems = [(message, field), *more]


def text_rows(path: Path, ctx: LoadContext) -> Iterator[tuple[int, str]]:
    """(line number, line without its line ending) for every non-blank line of a text file."""
    text = read_text(path, ctx)
    for line, row in enumerate((text or "").split("\n"), 1):
        if row.strip():
            yield line, row.rstrip("\r")


def csv_rows(path: Path, ctx: LoadContext, header: list[str]) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) for every data row of a CSV file whose first row must be ``header``; rows
    with another number of columns are recorded as problems and skipped."""
    import csv
    import io

    text = read_text(path, ctx)
    if text is None:
        return
    reader = csv.reader(io.StringIO(text, newline=""))
    start = 1
    for i, row in enumerate(reader):
        line, start = start, reader.line_num + 1  # a quoted cell may span lines: report where the row starts
        if i == 0:
            if [x.strip() for x in row] != header:
                ctx.problems.add(
                    file_line(path, line),
                    f"expected the header '{','.join(header)}', got {','.join(row)!r:.80}",
                )
            continue
        if not row:
            continue
        if len(row) != len(header):
            ctx.problems.add(
                file_line(path, line), f"expected {len(header)} columns ({', '.join(header)}), got {len(row)}"
            )
            continue
        yield line, row


def parse_splits(
    files: dict[str, Path],
    rows: Callable[[Path], Iterable[tuple[int, Any]]],
    parse: Callable[[Any], tuple[str, str]],
    ctx: LoadContext,
) -> tuple[dict[str, list[Example]], dict[str, int]]:
    """Each split's examples: ``parse(row) -> (input, output)`` for every row of its file. A row that
    raises :class:`BadRow` is recorded with its file and line; inputs are collapsed to one line, and rows
    whose input is then empty are dropped and counted per split (the second value). A split whose file
    cannot be read is left out (the read recorded why)."""
    splits: dict[str, list[Example]] = {}
    dropped: dict[str, int] = {}
    for split, path in files.items():
        if read_text(path, ctx) is None:
            continue
        exs: list[Example] = []
        for line, row in rows(path):
            try:
                inp, out = parse(row)
            except BadRow as bad:
                for message, fld in bad.problems:
                    ctx.problems.add(file_line(path, line), message, fld)
                continue
            inp = one_line(inp)
            if not inp:
                dropped[split] = dropped.get(split, 0) + 1
                continue
            exs.append(Example(inp, out, line=line))
        splits[split] = exs
    return splits, dropped


def derive_splits(
    exs: list[Example], name: str, cap_train: int | None = None, cap_test: int | None = None
) -> tuple[dict[str, list[Example]], str]:
    """Deterministic 80/20 train/test split by a seeded shuffle; identical inputs stay on one side."""
    groups: dict[str, list[Example]] = {}
    for ex in exs:
        groups.setdefault(" ".join(ex.input.lower().split()), []).append(ex)
    keys = list(groups)
    random.Random(f"{SPLIT_SEED}:{name}").shuffle(keys)
    n_test = round(len(exs) * TEST_FRACTION)
    train: list[Example] = []
    test: list[Example] = []
    for k in keys:
        (test if len(test) < n_test else train).extend(groups[k])
    dropped = []
    if cap_test is not None and len(test) > cap_test:
        dropped.append(f"test capped at {cap_test} (of {len(test)})")
        test = test[:cap_test]
    if cap_train is not None and len(train) > cap_train:
        dropped.append(f"train capped at {cap_train} (of {len(train)})")
        train = train[:cap_train]
    train.sort(key=lambda e: e.line)  # file order within each side (the caps above cut the shuffled order)
    test.sort(key=lambda e: e.line)
    note = (
        f"no official train/test split: 'train' ({len(train)}) and 'test' ({len(test)}) are derived from "
        f"{len(exs)} examples by a seeded shuffle (seed {SPLIT_SEED}, {1 - TEST_FRACTION:.0%}/{TEST_FRACTION:.0%}; "
        "identical inputs kept on one side)" + (("; " + ", ".join(dropped)) if dropped else "")
    )
    return {"train": train, "test": test}, note


def drop_notes(dropped: dict[str, int], what: str) -> list[str]:
    return [f"dropped {n} {what} in {split}" for split, n in dropped.items() if n]


def make_task(
    spec: DatasetSpec,
    template: Template,
    splits: dict[str, list[Example]],
    *,
    labels: tuple[str, ...] = (),
    notes: list[str],
    split_files: dict[str, str],
    metric: str = "",
    family: str = "",
    label_separator: str = ", ",
) -> Task:
    """The :class:`Task` of ``spec`` with these splits (metric defaulting to the category's)."""
    return Task(
        name=spec.name,
        category=spec.category,
        template=template,
        splits=splits,
        metric=metric or DEFAULT_METRIC.get(spec.category, "exact_match"),
        labels=labels,
        label_separator=label_separator,
        family=family or spec.dataset,
        description=spec.description,
        source=spec.dataset,
        split_files=split_files,
        notes=[n for n in notes if n],
    )
