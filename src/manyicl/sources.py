"""Reading a user's own data without code: JSONL / CSV / TSV / Hugging Face ``datasets`` with a field mapping.

A task folder's ``task.yaml`` may carry a ``source:`` section that says how raw rows become examples::

    source:
      format: csv                       # jsonl | csv | tsv | lines | hf
      files: {train: train.csv, test: dev.csv}
      input: [premise, hypothesis]      # one field or several
      input_template: "{premise}\\nHypothesis: {hypothesis}"   # optional; default joins the fields with a newline
      output: label
      options: choices                  # optional: a list field, or a string split on options_separator
      label_names: {0: entailment, 1: neutral, 2: contradiction}   # optional raw value -> label, or a file
                                        # (one name per line for ids 0, 1, ..., or "id<TAB>name" lines)
      columns: [text, label]            # optional: names for header-less CSV/TSV columns
      quoting: csv                      # CSV/TSV only: csv (quoted fields) | none; default csv for CSV, none for TSV

``format: lines`` reads parallel plain-text files, one example per line, one file per field and split
(``files: {train: {text: train_text.txt, label: train_labels.txt}}``; by default every
``{split}_{field}.txt`` for the fields that ``input``, ``output`` and ``options`` name).

``format: hf`` reads with ``datasets.load_dataset(**hf)`` (``hf: {path: json, data_files: {...}}`` for local
files, relative to the task folder; a hub name needs network). Values are kept as strings (the ``datasets``
CSV loader would turn numeric-looking strings into ints; we read CSV with the ``csv`` module and stringify
``datasets`` values).

Importing this module raises ``csv.field_size_limit`` (131,072 characters by default) so that long documents,
normal for summarisation, can be read.
"""

from __future__ import annotations

import csv
import io
import string
from pathlib import Path
from typing import Any

from .errors import Collector, Problem
from .examples import (  # noqa: F401 - outside_problem, parse_json_line, read_text_file re-exported
    LINE_END,
    Example,
    check_strings,
    json_type,
    jsonl_lines,
    non_finite,
    outside_problem,
    parse_json_line,
    read_text_file,
    regular_file_problem,
)
from .source_hf import read_hf, resolve_hf_args  # noqa: F401 - resolve_hf_args re-exported

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
    "quoting",
    "hf",
}
FORMATS = ("jsonl", "csv", "tsv", "lines", "hf")
QUOTING = ("csv", "none")
DEFAULT_QUOTING = {"csv": "csv", "tsv": "none"}
"""TSV files are usually plain tab-separated text in which '"' is an ordinary character; CSV files quote."""


csv.field_size_limit(2**31 - 1)  # the largest value every platform's C long holds


NON_FINITE_HINT = (
    "not text: a JSON NaN/Infinity literal, a number too large for a float, or a missing value written "
    'by a dataframe; write the value as a string ("NaN") if it is meant, else fill it in or drop the row'
)


def _fields(spec: Any) -> list[str]:
    if isinstance(spec, str):
        return [spec]
    if isinstance(spec, list) and spec and all(isinstance(x, str) for x in spec):
        return list(spec)
    return []


def template_problem(tmpl: Any, fields: list[str]) -> str | None:
    """Why ``tmpl`` is not a usable ``source.input_template`` for these input fields, or None."""
    if not isinstance(tmpl, str):
        return f"must be a string like '{{text}}' or '{{premise}} {{hypothesis}}', got {type(tmpl).__name__}"
    hint = "placeholders are {field} with a field from source.input; write {{ and }} for literal braces"
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(tmpl) if f is not None]
    except ValueError as e:
        return f"is not a valid template ({e}): {hint}"
    if any(not f for f in names):
        return f"has an empty placeholder {{}}: {hint}"
    missing = sorted(set(names) - set(fields))
    if missing:
        return f"uses {missing} which are not listed in source.input: {hint}"
    try:
        tmpl.format(**{f: "x" for f in fields})
    except (ValueError, KeyError, IndexError, AttributeError, TypeError) as e:
        return f"cannot be filled in ({type(e).__name__}: {e}): {hint}"
    return None


def check_source(src: Any, where: str, c: Collector) -> bool:
    """Validate a ``source:`` mapping; returns whether it is usable."""
    if not isinstance(src, dict):
        c.add(where, "must be a mapping (format:, files:, input:, output:, ...)", "source")
        return False
    n_errors = len(c.errors)
    for k in src:
        if k not in SOURCE_KEYS:
            c.add(where, f"unknown key; known: {', '.join(sorted(SOURCE_KEYS))}", f"source.{k}")
    fmt = src.get("format", "jsonl")
    if not isinstance(fmt, str) or fmt not in FORMATS:
        c.add(where, f"must be one of {', '.join(FORMATS)}, got {fmt!r}", "source.format")
        fmt = ""
    files = src.get("files")
    if files is not None:
        if fmt == "hf":
            c.add(
                where, "format hf takes its files from hf: {data_files: ...}; remove files:", "source.files"
            )
        elif not isinstance(files, dict):
            example = (
                "{train: {text: train_text.txt, label: train_labels.txt}}"
                if fmt == "lines"
                else f"{{train: train.{fmt or 'csv'}, test: test.{fmt or 'csv'}}}"
            )
            c.add(
                where,
                f"must map split names to file names, e.g. files: {example}, got {type(files).__name__} "
                f"{str(files)[:80]}",
                "source.files",
            )
        elif fmt == "lines":
            need = [f for f, _ in _needed_fields(src)] if _fields(src.get("input")) else []
            for split, spec in files.items():
                if not isinstance(spec, dict):
                    c.add(
                        where,
                        "with format: lines, each split maps field names to line files, e.g. "
                        f"{{text: {split}_text.txt, label: {split}_labels.txt}}, got {spec!r}",
                        f"source.files.{split}",
                    )
                    continue
                for fld, name in spec.items():
                    if not isinstance(name, str) or not name.strip():
                        c.add(where, f"must be one file name, got {name!r}", f"source.files.{split}.{fld}")
                    elif outside_problem(name):
                        c.add(where, outside_problem(name) or "", f"source.files.{split}.{fld}")
                for fld in need:
                    if fld and fld not in spec:
                        c.add(
                            where,
                            f"no file for field {fld!r} (named by source.input/output/options); the split "
                            f"lists {sorted(map(str, spec))}",
                            f"source.files.{split}",
                        )
        else:
            for split, name in files.items():
                if not isinstance(name, str) or not name.strip():
                    c.add(where, f"must be one file name, got {name!r}", f"source.files.{split}")
                elif outside_problem(name):
                    c.add(where, outside_problem(name) or "", f"source.files.{split}")
    if not _fields(src.get("input")):
        c.add(
            where, "name the input field(s), e.g. input: text or input: [premise, hypothesis]", "source.input"
        )
    if not isinstance(src.get("output"), str) or not src["output"]:
        c.add(where, "name the output field, e.g. output: label", "source.output")
    if src.get("input_template") is not None:
        problem = template_problem(src["input_template"], _fields(src.get("input")))
        if problem:
            c.add(where, problem, "source.input_template")
    if src.get("options") is not None and (not isinstance(src["options"], str) or not src["options"]):
        c.add(
            where,
            f"name the field holding the options, e.g. options: choices, got {src['options']!r}",
            "source.options",
        )
    sep = src.get("options_separator")
    if sep is not None and (not isinstance(sep, str) or not sep):
        c.add(where, f"must be a non-empty string, e.g. '|', got {sep!r}", "source.options_separator")
    cols = src.get("columns")
    if cols is not None:
        if not _fields(cols) or isinstance(cols, str):
            c.add(
                where, f"must be a list of column names, e.g. [text, label], got {cols!r}", "source.columns"
            )
        elif len(set(cols)) != len(cols):
            c.add(where, f"names a column twice: {cols}", "source.columns")
        elif fmt in ("jsonl", "lines", "hf"):
            c.add(where, "only for csv and tsv files (names for header-less columns)", "source.columns")
    quoting = src.get("quoting")
    if quoting is not None:
        if fmt in ("jsonl", "lines", "hf"):
            c.add(where, "only for csv and tsv files", "source.quoting")
        elif quoting not in QUOTING:
            c.add(
                where,
                f'must be csv (fields may be quoted with ") or none (" is plain text), got {quoting!r}',
                "source.quoting",
            )
    if fmt == "hf":
        hf = src.get("hf")
        if not isinstance(hf, dict) or not isinstance(hf.get("path"), str):
            c.add(
                where,
                "format hf needs hf: {path: ..., data_files: ...} (arguments of datasets.load_dataset)",
                "source.hf",
            )
        elif hf.get("splits") is not None and not isinstance(hf["splits"], dict):
            c.add(
                where,
                "must map our split names to the dataset's, e.g. {test: validation}",
                "source.hf.splits",
            )
    names = src.get("label_names")
    if names is not None:
        if isinstance(names, str):
            if not names.strip():
                c.add(where, "must name a mapping file, e.g. label_names: mapping.txt", "source.label_names")
            elif outside_problem(names):
                c.add(where, outside_problem(names) or "", "source.label_names")
        elif not isinstance(names, dict):
            c.add(
                where,
                "must map raw values to label names, e.g. {0: negative, 1: positive}, or name a file "
                "(mapping.txt: one label name per line, or id<TAB>name lines)",
                "source.label_names",
            )
        else:
            for k, v in names.items():
                if not isinstance(v, (str, int, float)) or isinstance(v, bool) or not str(v).strip():
                    c.add(where, f"must be a label name (a string), got {v!r}", f"source.label_names.{k}")
    return len(c.errors) == n_errors


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v)


def row_to_example(row: dict[str, Any], src: dict, where: str, c: Collector, line: int) -> Example | None:
    """One raw row -> Example, recording missing fields and bad values in ``c``."""
    n_errors = len(c.errors)
    values = {}
    for f in _fields(src["input"]):
        if f not in row or row[f] is None:
            c.add(where, "missing input field", f)
        elif isinstance(row[f], (list, dict)):
            c.add(where, f"must be a string or number, got {type(row[f]).__name__} {str(row[f])[:60]}", f)
        elif non_finite(row[f]):
            c.add(where, f"is {row[f]!r}, {NON_FINITE_HINT}", f)
        else:
            values[f] = _text(row[f]).strip()
    out_field = src["output"]
    raw_out = row.get(out_field)
    if raw_out is None or (isinstance(raw_out, str) and not raw_out.strip()):
        c.add(where, "missing or empty output field", out_field)
    elif isinstance(raw_out, (list, dict)):
        c.add(
            where, f"must be a string or number, got {type(raw_out).__name__} {str(raw_out)[:60]}", out_field
        )
    elif non_finite(raw_out):
        c.add(where, f"is {raw_out!r}, {NON_FINITE_HINT}", out_field)
    if len(c.errors) > n_errors:
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
    try:
        text = tmpl.format(**values) if tmpl else "\n".join(values[f] for f in _fields(src["input"]))
    except (ValueError, KeyError, IndexError, AttributeError, TypeError) as e:  # checked up front; kept safe
        c.add(where, f"cannot be filled in: {type(e).__name__}: {e}", "source.input_template")
        return None
    options: tuple[str, ...] = ()
    opt_field = src.get("options")
    if opt_field:
        raw = row.get(opt_field)
        if isinstance(raw, str):
            ok, parsed = parse_json_line(raw, where, Collector())
            if not ok or not isinstance(parsed, list):
                parsed = raw.split(src.get("options_separator") or "|")
            raw = parsed
        if not isinstance(raw, list) or not raw:
            c.add(where, f"must be a non-empty list of options, got {raw!r}", opt_field)
            return None
        for i, o in enumerate(raw):
            if non_finite(o):
                c.add(where, f"option {i + 1} is {o!r}, {NON_FINITE_HINT}", opt_field)
            elif o is None or isinstance(o, (list, dict)):
                c.add(where, f"option {i + 1} must be a string or number, got {json_type(o)}", opt_field)
        if len(c.errors) > n_errors:
            return None
        options = tuple(lookup.get(str(o).strip(), str(o).strip()) for o in raw)
        if out not in options:
            c.add(where, f"gold output {out!r} is not one of the options {list(options)[:6]}", opt_field)
            return None
    for fld, value in ((src["input"] if isinstance(src["input"], str) else "input", text), (out_field, out)):
        check_strings(value, where, c, fld)
    if opt_field:
        check_strings(list(options), where, c, opt_field)
    if len(c.errors) > n_errors:
        return None
    return Example(text, out, options, line=line)


def _needed_fields(src: dict) -> list[tuple[str, str]]:
    """(column, the source key that names it) for every column a row must have."""
    out = [(f, "source.input") for f in _fields(src.get("input"))]
    if isinstance(src.get("output"), str) and src["output"]:
        out.append((src["output"], "source.output"))
    if src.get("options"):
        out.append((src["options"], "source.options"))
    return out


def _read_delimited(
    path: Path,
    delimiter: str,
    columns: list[str] | None,
    c: Collector,
    quoting: str = "csv",
    src: dict | None = None,
    where: str | None = None,
) -> list[tuple[int, dict]]:
    """Rows of a CSV/TSV file as (line where the row starts, {column: value}).

    ``quoting: csv`` reads quoted fields (which may hold the delimiter and line breaks) strictly, so a
    stray '"' is an error at its line instead of silently joining rows; ``quoting: none`` reads one row per
    line with '"' as plain text.
    """
    text = read_text_file(path, c)
    if text is None:
        return []
    if not text.strip():
        c.add(str(path), "empty file: a split needs at least one example")
        return []
    quoted = quoting == "csv"
    reader = csv.reader(
        io.StringIO(text, newline=""),
        delimiter=delimiter,
        quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE,
        strict=quoted,
    )
    header = list(columns) if columns else None
    need = _needed_fields(src) if src else []
    if header is not None and not _check_header(header, need, where or str(path), "source.columns", c):
        return []
    out = []
    spans: list[tuple[int, int]] = []  # rows that take up more than one line
    looks_quoted = 0
    while True:
        start = reader.line_num + 1
        try:
            r = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            c.add(
                f"{path}:{start}",
                f"cannot split this row ({e}): with source.quoting: csv a field that starts with '\"' must end "
                "with '\"' right before a delimiter or the line end, and '\"' inside it is written '\"\"'; if "
                "'\"' is plain text in this file, set source.quoting: none",
            )
            continue
        if reader.line_num > start:
            spans.append((start, reader.line_num))
        if not r or all(not x.strip() for x in r):
            continue
        if header is None:
            header = r
            if not _check_header(header, need, f"{path}:{start}", None, c):
                return []
            continue
        if len(r) != len(header):
            c.add(f"{path}:{start}", f"has {len(r)} columns, the header has {len(header)} ({header})")
            continue
        row = dict(zip(header, r))
        if not quoted and not looks_quoted:
            for f, _ in need:
                v = row.get(f, "")
                if len(v) >= 2 and v[0] == v[-1] == '"':
                    looks_quoted = start
                    c.warn(
                        f"{path}:{start}",
                        "value is wrapped in '\"'; with source.quoting: none quotes stay part of the text. If "
                        "the file was written with CSV quoting, set source.quoting: csv",
                        f,
                    )
                    break
        out.append((start, row))
    if spans:
        a, b = spans[0]
        n_lines = sum(e - s + 1 for s, e in spans)
        c.warn(
            str(path),
            f"{len(spans)} rows span {n_lines} lines (quoted fields with line breaks; the first is lines {a}-{b}). "
            "If no field should hold a line break, a stray '\"' joined rows: set source.quoting: none",
        )
    return out


def _check_header(
    header: list[str], need: list[tuple[str, str]], where: str, fld: str | None, c: Collector
) -> bool:
    ok = True
    for col, key in need:
        if col not in header:
            c.add(
                where,
                f"no column {col!r} (named by {key}); the columns are {header[:12]}. Fix {key} or the header "
                "row, or give columns: [...] for a file without a header row",
                fld or key,
            )
            ok = False
        elif header.count(col) > 1:
            c.add(
                where, f"column {col!r} appears {header.count(col)} times; rename the duplicates", fld or key
            )
            ok = False
    return ok


def _read_jsonl_rows(path: Path, c: Collector) -> list[tuple[int, dict]]:
    text = read_text_file(path, c)
    if text is None:
        return []
    if not text.strip():
        c.add(str(path), "empty file: a split needs at least one example")
        return []
    rows = []
    for lineno, line in jsonl_lines(text):
        ok, obj = parse_json_line(line, f"{path}:{lineno}", c)
        if not ok:
            continue
        if not isinstance(obj, dict):
            c.add(f"{path}:{lineno}", f"expected a JSON object, got {type(obj).__name__}")
            continue
        rows.append((lineno, obj))
    return rows


def read_source_splits(
    folder: Path, src: dict, c: Collector, where: str | None = None
) -> tuple[dict[str, list[Example]], dict[str, str]]:
    """All splits of a mapped source: (examples per split, file per split)."""
    where = where or str(folder / "task.yaml")
    fmt = src.get("format", "jsonl")
    splits: dict[str, list[Example]] = {}
    files: dict[str, str] = {}
    if isinstance(src.get("label_names"), str):
        names = read_label_file(folder / src["label_names"], c, where)
        if names is None:
            return {}, {}
        src = {**src, "label_names": names}
    if fmt == "hf":
        return read_hf(src, folder, c, where, row_to_example)
    if fmt == "lines":
        return _read_lines_splits(folder, src, c, where)
    ext = {"jsonl": ".jsonl", "csv": ".csv", "tsv": ".tsv"}[fmt]
    spec = src.get("files") or {p.stem: p.name for p in sorted(folder.glob(f"*{ext}"))}
    if not spec:
        c.add(
            str(folder),
            f"no {ext} files; list them in source.files, e.g. {{train: train{ext}}}",
            "source.files",
        )
    quoting = src.get("quoting") or DEFAULT_QUOTING.get(fmt, "csv")
    for split, name in spec.items():
        path = folder / str(name)
        if not path.exists():
            c.add(where, f"file {name} does not exist", f"source.files.{split}")
            continue
        if fmt == "jsonl":
            rows = _read_jsonl_rows(path, c)
        else:
            delimiter = "," if fmt == "csv" else "\t"
            rows = _read_delimited(path, delimiter, src.get("columns"), c, quoting, src, where)
        exs = [row_to_example(r, src, f"{path}:{ln}", c, ln) for ln, r in rows]
        splits[str(split)] = [e for e in exs if e is not None]
        files[str(split)] = str(path)
    return splits, files


def read_label_file(path: Path, c: Collector, where: str) -> dict[str, str] | None:
    """A label-id mapping file: one label name per line (line 1 is id 0, line 2 id 1, ...), or
    ``id<TAB>name`` lines. Blank lines at the end are ignored; None after recording a problem."""
    if not path.exists():
        c.add(where, f"mapping file {path.name} does not exist (next to task.yaml)", "source.label_names")
        return None
    text = read_text_file(path, c)
    if text is None:
        return None
    lines = LINE_END.split(text)
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        c.add(str(path), "empty mapping file: write one label name per line, or id<TAB>name lines")
        return None
    tabbed = ["\t" in ln for ln in lines]
    out: dict[str, str] = {}
    n_errors = len(c.errors)
    if any(tabbed) and not all(tabbed):
        first = tabbed.index(not tabbed[0]) + 1
        c.add(
            f"{path}:{first}",
            "mixes id<TAB>name lines with plain label names: use one style for the whole file",
        )
        return None
    for i, ln in enumerate(lines):
        if tabbed[i]:
            key, _, name = ln.partition("\t")
            key, name = key.strip(), name.strip()
        else:
            key, name = str(i), ln.strip()
        if not key or not name:
            c.add(
                f"{path}:{i + 1}", "empty label id or name" if tabbed[i] else "empty line: a label per line"
            )
            continue
        if key in out:
            c.add(f"{path}:{i + 1}", f"label id {key!r} appears twice (also as {out[key]!r})")
            continue
        check_strings(name, f"{path}:{i + 1}", c)
        out[key] = name
    return out if len(c.errors) == n_errors else None


def source_labels(folder: Path, src: dict) -> list[str]:
    """The label set that ``source.label_names`` (a mapping or a mapping file) defines, in order: a
    classification task without ``labels:`` takes it, so its options are scored."""
    names = src.get("label_names")
    if isinstance(names, str):
        names = read_label_file(folder / names, Collector(), str(folder / "task.yaml"))
    if not isinstance(names, dict):
        return []
    return list(dict.fromkeys(str(v).strip() for v in names.values()))


def _line_files(folder: Path, src: dict, c: Collector) -> dict[str, dict[str, str]]:
    """Split -> field -> file for ``format: lines``: source.files, else every ``{split}_{field}.txt``."""
    if src.get("files"):
        return {str(k): {str(f): str(n) for f, n in v.items()} for k, v in src["files"].items()}
    need = [f for f, _ in _needed_fields(src)]
    out: dict[str, dict[str, str]] = {}
    for p in sorted(folder.glob("*.txt")):
        for f in sorted(need, key=len, reverse=True):
            if p.stem.endswith(f"_{f}") and len(p.stem) > len(f) + 1:
                out.setdefault(p.stem[: -len(f) - 1], {})[f] = p.name
                break
    if not out:
        c.add(
            str(folder),
            f"no line files: name them {{split}}_{{field}}.txt (e.g. train_{need[0]}.txt"
            + (f", train_{need[-1]}.txt" if len(need) > 1 else "")
            + ") or list them in source.files",
            "source.files",
        )
    for split, fields in out.items():
        for f in need:
            if f not in fields:
                c.add(str(folder), f"split {split!r} has no {split}_{f}.txt (field {f!r})", "source.files")
    return out


def _read_lines(path: Path, c: Collector) -> list[str] | None:
    text = read_text_file(path, c)
    if text is None:
        return None
    lines = LINE_END.split(text)
    while lines and not lines[-1].strip():  # the final line break, and blank lines after the last example
        lines.pop()
    if not lines:
        c.add(str(path), "empty file: a split needs at least one example")
        return None
    return lines


def _read_lines_splits(
    folder: Path, src: dict, c: Collector, where: str
) -> tuple[dict[str, list[Example]], dict[str, str]]:
    """``format: lines``: line i of every field's file of a split is example i. Problems name the file
    of the field they concern and the line."""
    splits: dict[str, list[Example]] = {}
    files: dict[str, str] = {}
    for split, spec in _line_files(folder, src, c).items():
        need = [f for f, _ in _needed_fields(src)]
        if any(f not in spec for f in need):
            continue
        cols: dict[str, list[str]] = {}
        paths = {f: folder / spec[f] for f in need}
        for f, path in paths.items():
            if not path.exists():
                c.add(where, f"file {spec[f]} does not exist", f"source.files.{split}.{f}")
                continue
            lines = _read_lines(path, c)
            if lines is not None:
                cols[f] = lines
        if len(cols) < len(need):
            continue
        counts = {f: len(v) for f, v in cols.items()}
        if len(set(counts.values())) > 1:
            c.add(
                where,
                f"parallel files of split {split!r} need one line per example each, but "
                + ", ".join(f"{paths[f].name} has {n}" for f, n in counts.items())
                + " lines (blank lines at the end are ignored; a blank line inside is an example)",
                f"source.files.{split}",
            )
            continue
        first = paths[need[0]]
        exs = []
        for i in range(counts[need[0]]):
            row = {f: cols[f][i] for f in need}
            local = Collector()
            ex = row_to_example(row, src, f"{first}:{i + 1}", local, i + 1)
            for p in local.problems:
                at = f"{paths[p.field]}:{i + 1}" if p.field in paths else p.where
                c.problems.append(Problem(at, p.message, p.field, p.level))
            if ex is not None:
                exs.append(ex)
        splits[split] = exs
        files[split] = str(first)
    return splits, files
