"""Reading a user's own data without code: JSONL / CSV / TSV / Hugging Face ``datasets`` with a field mapping.

A task folder's ``task.yaml`` may carry a ``source:`` section that says how raw rows become examples::

    source:
      format: csv                       # jsonl | csv | tsv | hf
      files: {train: train.csv, test: dev.csv}
      input: [premise, hypothesis]      # one field or several
      input_template: "{premise}\\nHypothesis: {hypothesis}"   # optional; default joins the fields with a newline
      output: label
      options: choices                  # optional: a list field, or a string split on options_separator
      label_names: {0: entailment, 1: neutral, 2: contradiction}   # optional raw value -> label
      columns: [text, label]            # optional: names for header-less CSV/TSV columns

``format: hf`` reads with ``datasets.load_dataset(**hf)`` (``hf: {path: json, data_files: {...}}`` for local
files; a hub name needs network). Values are kept as strings (the ``datasets`` CSV loader would turn
numeric-looking strings into ints; we read CSV with the ``csv`` module and stringify ``datasets`` values).
"""

from __future__ import annotations

import csv
import io
import json
import string
from pathlib import Path
from typing import Any

from .errors import Collector
from .tasks import Example

SOURCE_KEYS = {
    "format",
    "files",
    "input",
    "input_template",
    "output",
    "options",
    "options_separator",
    "label_names",
    "columns",
    "hf",
}
FORMATS = ("jsonl", "csv", "tsv", "hf")


def _fields(spec: Any) -> list[str]:
    if isinstance(spec, str):
        return [spec]
    if isinstance(spec, list) and all(isinstance(x, str) for x in spec):
        return list(spec)
    return []


def check_source(src: Any, where: str, c: Collector) -> bool:
    """Validate a ``source:`` mapping; returns whether it is usable."""
    if not isinstance(src, dict):
        c.add(where, "must be a mapping (format:, files:, input:, output:, ...)", "source")
        return False
    ok = True
    for k in src:
        if k not in SOURCE_KEYS:
            c.add(where, f"unknown key; known: {', '.join(sorted(SOURCE_KEYS))}", f"source.{k}")
            ok = False
    fmt = src.get("format", "jsonl")
    if fmt not in FORMATS:
        c.add(where, f"must be one of {', '.join(FORMATS)}, got {fmt!r}", "source.format")
        ok = False
    if not _fields(src.get("input")):
        c.add(
            where, "name the input field(s), e.g. input: text or input: [premise, hypothesis]", "source.input"
        )
        ok = False
    if not isinstance(src.get("output"), str):
        c.add(where, "name the output field, e.g. output: label", "source.output")
        ok = False
    tmpl = src.get("input_template")
    if tmpl is not None:
        names = {f for _, f, _, _ in string.Formatter().parse(str(tmpl)) if f}
        missing = names - set(_fields(src.get("input")))
        if missing:
            c.add(
                where, f"uses {sorted(missing)} which are not listed in source.input", "source.input_template"
            )
            ok = False
    if fmt == "hf" and not isinstance(src.get("hf"), dict):
        c.add(
            where,
            "format hf needs hf: {path: ..., data_files: ...} (arguments of datasets.load_dataset)",
            "source.hf",
        )
        ok = False
    if src.get("label_names") is not None and not isinstance(src["label_names"], dict):
        c.add(
            where, "must map raw values to label names, e.g. {0: negative, 1: positive}", "source.label_names"
        )
        ok = False
    return ok


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v)


def row_to_example(row: dict[str, Any], src: dict, where: str, c: Collector, line: int) -> Example | None:
    """One raw row -> Example, recording missing fields and bad values in ``c``."""
    ok = True
    values = {}
    for f in _fields(src["input"]):
        if f not in row or row[f] is None:
            c.add(where, "missing input field", f)
            ok = False
        else:
            values[f] = _text(row[f]).strip()
    out_field = src["output"]
    raw_out = row.get(out_field)
    if raw_out is None or (isinstance(raw_out, str) and not raw_out.strip()):
        c.add(where, "missing or empty output field", out_field)
        ok = False
    if not ok:
        return None
    names = src.get("label_names") or {}
    lookup = {str(k): str(v) for k, v in names.items()}
    out = _text(raw_out)
    if lookup:
        if out.strip() not in lookup:
            c.add(
                where, f"value {out!r} has no entry in source.label_names ({sorted(lookup)[:8]})", out_field
            )
            return None
        out = lookup[out.strip()]
    tmpl = src.get("input_template")
    text = tmpl.format(**values) if tmpl else "\n".join(values[f] for f in _fields(src["input"]))
    options: tuple[str, ...] = ()
    opt_field = src.get("options")
    if opt_field:
        raw = row.get(opt_field)
        if isinstance(raw, str):
            try:
                parsed = json.loads(raw)
            except json.JSONDecodeError:
                parsed = raw.split(src.get("options_separator") or "|")
            raw = parsed
        if not isinstance(raw, list) or not raw:
            c.add(where, f"must be a non-empty list of options, got {raw!r}", opt_field)
            return None
        options = tuple(lookup.get(str(o).strip(), str(o).strip()) for o in raw)
        if out not in options:
            c.add(where, f"gold output {out!r} is not one of the options {list(options)[:6]}", opt_field)
            return None
    return Example(text, out, options, line=line)


def _read_delimited(
    path: Path, delimiter: str, columns: list[str] | None, c: Collector
) -> list[tuple[int, dict]]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        c.add(f"{path}", f"not UTF-8 (byte {e.start}); re-save the file as UTF-8")
        return []
    if not text.strip():
        c.add(str(path), "empty file: a split needs at least one example")
        return []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = list(columns) if columns else None
    out = []
    for r in reader:
        lineno = reader.line_num  # the row's last physical line (quoted fields may span lines)
        if not r or all(not x.strip() for x in r):
            continue
        if header is None:
            header = r
            continue
        if len(r) != len(header):
            c.add(f"{path}:{lineno}", f"has {len(r)} columns, the header has {len(header)} ({header})")
            continue
        out.append((lineno, dict(zip(header, r))))
    return out


def _read_jsonl_rows(path: Path, c: Collector) -> list[tuple[int, dict]]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        c.add(str(path), f"not UTF-8 (byte {e.start}); re-save the file as UTF-8")
        return []
    if not text.strip():
        c.add(str(path), "empty file: a split needs at least one example")
        return []
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            c.add(f"{path}:{lineno}", f"malformed JSON ({e.msg} at column {e.colno})")
            continue
        if not isinstance(obj, dict):
            c.add(f"{path}:{lineno}", f"expected a JSON object, got {type(obj).__name__}")
            continue
        rows.append((lineno, obj))
    return rows


def read_source_splits(
    folder: Path, src: dict, c: Collector
) -> tuple[dict[str, list[Example]], dict[str, str]]:
    """All splits of a mapped source: (examples per split, file per split)."""
    fmt = src.get("format", "jsonl")
    splits: dict[str, list[Example]] = {}
    files: dict[str, str] = {}
    if fmt == "hf":
        return _read_hf(src, c)
    ext = {"jsonl": ".jsonl", "csv": ".csv", "tsv": ".tsv"}[fmt]
    spec = src.get("files") or {p.stem: p.name for p in sorted(folder.glob(f"*{ext}"))}
    if not spec:
        c.add(
            str(folder),
            f"no {ext} files; list them in source.files, e.g. {{train: train{ext}}}",
            "source.files",
        )
    for split, name in spec.items():
        path = folder / str(name)
        if not path.exists():
            c.add(str(folder / "task.yaml"), f"file {name} does not exist", f"source.files.{split}")
            continue
        if fmt == "jsonl":
            rows = _read_jsonl_rows(path, c)
        else:
            rows = _read_delimited(path, "," if fmt == "csv" else "\t", src.get("columns"), c)
        exs = [row_to_example(r, src, f"{path}:{ln}", c, ln) for ln, r in rows]
        splits[str(split)] = [e for e in exs if e is not None]
        files[str(split)] = str(path)
    return splits, files


def _read_hf(src: dict, c: Collector) -> tuple[dict[str, list[Example]], dict[str, str]]:
    try:
        import datasets
    except ImportError:
        c.add("source.hf", "format hf needs the datasets package: pip install datasets==5.2.0")
        return {}, {}
    args = dict(src["hf"])
    split_map = args.pop("splits", None)
    try:
        dd = datasets.load_dataset(**args)
    except Exception as e:  # noqa: BLE001 - any loader failure is a user-facing data problem
        c.add(
            "source.hf",
            f"datasets.load_dataset({args}) failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}. Offline, "
            "use local files (path: json|csv, data_files: ...) or a dataset already in the Hugging Face cache",
        )
        return {}, {}
    split_map = split_map or {k: k for k in dd}
    splits, files = {}, {}
    for ours, theirs in split_map.items():
        if theirs not in dd:
            c.add("source.hf.splits", f"dataset has no split {theirs!r} (it has {list(dd)})", str(ours))
            continue
        where = f"hf:{args.get('path')}[{theirs}]"
        exs = [row_to_example(row, src, f"{where}:{i + 1}", c, i + 1) for i, row in enumerate(dd[theirs])]
        splits[str(ours)] = [e for e in exs if e is not None]
        files[str(ours)] = where
    return splits, files
