"""Hostile task folders: each gives one message naming file, line and field, never a traceback."""

import json
import os
from pathlib import Path

import pytest

from manyicl.errors import Collector, TaskFormatError
from manyicl.sources import _read_delimited, resolve_hf_args
from manyicl.tasks import (
    Example,
    Task,
    find_task_dirs,
    load_task_dir,
    load_task_dirs,
    safe_path_component,
    validate_task,
    write_task_dir,
)

GOOD = "".join(json.dumps({"input": f"text {i}", "output": "ab"[i % 2]}) + "\n" for i in range(4))


def _task(root: Path, meta: str, files: dict[str, str | bytes] | None = None, name: str = "t") -> Path:
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "task.yaml").write_text(meta)
    for fname, content in (files or {}).items():
        (d / fname).write_bytes(content.encode() if isinstance(content, str) else content)
    return d


def _problems(d: Path) -> str:
    with pytest.raises(TaskFormatError) as e:
        load_task_dir(d)
    return str(e.value)


# 1. task names become output paths ----------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../../../victim/model", "a/b", "a\\\\b", "..", "a..b", ".hidden", "x y", "-flag", "a" * 129]
)
def test_unsafe_task_name_is_rejected(tmp_path, name):
    d = _task(tmp_path, f'name: "{name}"\ncategory: cls\n', {"train.jsonl": GOOD})
    msg = _problems(d)
    assert "task.yaml [name]" in msg and "not a safe task name" in msg and "choose another name" in msg


def test_unsafe_folder_name_needs_a_name_field(tmp_path):
    d = _task(tmp_path, "category: cls\n", {"train.jsonl": GOOD}, name="my task")
    assert "folder name 'my task' is not a safe task name" in _problems(d)
    (d / "task.yaml").write_text("name: my_task\ncategory: cls\n")
    assert load_task_dir(d).name == "my_task"


def test_safe_names_still_load(tmp_path):
    for name in ("bbh:date_understanding", "sst2", "v1.2+extra", "A-b_c"):
        d = _task(tmp_path, f"name: '{name}'\ncategory: cls\n", {"train.jsonl": GOOD}, name="t")
        assert load_task_dir(d).name == name


def test_validate_task_rejects_unsafe_names_built_in_code():
    c = Collector()
    validate_task(Task("../x", "other", splits={"train": [Example("a", "b")]}), c)
    assert c and "not a safe task name" in str(c.errors[0]) and c.errors[0].field == "name"


def test_safe_path_component():
    assert safe_path_component("bbh:date_understanding") == "bbh_date_understanding"
    assert safe_path_component("sst2") == "sst2"
    for bad in ("../../../victim/model", "a/b", "a\\b", "..", "", ".", "a\x00b", "/abs"):
        with pytest.raises(ValueError, match="not a safe task name|must be a string"):
            safe_path_component(bad)


# 2. folders and files that used to give tracebacks -------------------------------------------


def test_task_yaml_that_is_a_folder(tmp_path):
    d = tmp_path / "t"
    (d / "task.yaml").mkdir(parents=True)
    msg = _problems(d)
    assert "task.yaml: is a folder, not a YAML file" in msg


def test_unreadable_task_yaml_simulated(tmp_path, monkeypatch):
    d = _task(tmp_path, "category: cls\n", {"train.jsonl": GOOD})
    real = Path.read_bytes

    def deny(self):
        if self.name == "task.yaml":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", deny)
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: deny(self).decode())
    msg = _problems(d)
    assert "task.yaml: cannot read (Permission denied)" in msg and "chmod" in msg


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read anything")
def test_unreadable_task_yaml_chmod(tmp_path):
    d = _task(tmp_path, "category: cls\n", {"train.jsonl": GOOD})
    (d / "task.yaml").chmod(0)
    try:
        assert "cannot read (Permission denied)" in _problems(d)
    finally:
        (d / "task.yaml").chmod(0o644)


def test_unreadable_split_file_in_a_source(tmp_path, monkeypatch):
    d = _task(
        tmp_path,
        "category: cls\nsource: {format: csv, input: text, output: label}\n",
        {"train.csv": "text,label\na,x\nb,y\n"},
    )
    real = Path.read_bytes

    def deny(self):
        if self.suffix == ".csv":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", deny)
    assert "train.csv: cannot read (Permission denied)" in _problems(d)


def test_csv_field_longer_than_the_default_limit(tmp_path):
    long_doc = "word " * 40_000  # 200,000 characters, over csv's default 131,072
    d = _task(
        tmp_path,
        "category: sum\nsource: {format: csv, input: document, output: summary}\n",
        {"train.csv": f'document,summary\n"{long_doc}",short\nsecond doc,also short\n'},
    )
    t = load_task_dir(d)
    assert len(t.splits["train"]) == 2 and len(t.splits["train"][0].input) == len(long_doc.strip())


@pytest.mark.parametrize(
    "files,needle",
    [
        ("[train.csv, test.csv]", "must map split names to file names"),
        ("train.csv", "must map split names to file names"),
        ("{train: [a.csv, b.csv]}", "[source.files.train]: must be one file name"),
    ],
)
def test_source_files_of_the_wrong_shape(tmp_path, files, needle):
    meta = f"category: cls\nsource:\n  format: csv\n  files: {files}\n  input: text\n  output: label\n"
    d = _task(tmp_path, meta, {"train.csv": "text,label\na,x\nb,y\n"})
    msg = _problems(d)
    assert needle in msg and "task.yaml" in msg


@pytest.mark.parametrize(
    "tmpl,needle",
    [
        ("'{} {text}'", "empty placeholder"),
        ("'{text'", "not a valid template"),
        ("'text}'", "not a valid template"),
        ("'{0}'", "not listed in source.input"),
        ("'{text.upper}'", "not listed in source.input"),
        ("'{text!z}'", "cannot be filled in"),
        ("'{text:d}'", "cannot be filled in"),
        ("'{text:{width}}'", "cannot be filled in"),
        ("[a, b]", "must be a string"),
    ],
)
def test_bad_input_template(tmp_path, tmpl, needle):
    meta = (
        f"category: cls\nsource:\n  format: csv\n  input: text\n  output: label\n  input_template: {tmpl}\n"
    )
    d = _task(tmp_path, meta, {"train.csv": "text,label\na,x\nb,y\n"})
    msg = _problems(d)
    assert "[source.input_template]" in msg and needle in msg


def test_literal_braces_in_input_template(tmp_path):
    meta = "category: cls\nsource:\n  format: csv\n  input: text\n  output: label\n  input_template: '{{{text}}}'\n"
    t = load_task_dir(_task(tmp_path, meta, {"train.csv": "text,label\na,x\nb,y\n"}))
    assert t.splits["train"][0].input == "{a}"


def test_deeply_nested_json_line(tmp_path):
    deep = "[" * 100_000
    d = _task(tmp_path, "category: cls\n", {"train.jsonl": GOOD + deep + "\n"})
    msg = _problems(d)
    assert "train.jsonl:5: malformed JSON (nested too deeply to read)" in msg
    d2 = _task(
        tmp_path,
        "category: cls\nsource: {format: jsonl, input: q, output: a}\n",
        {"train.jsonl": '{"q": "x", "a": "p"}\n' + deep + "\n"},
        name="t2",
    )
    assert "train.jsonl:2: malformed JSON (nested too deeply to read)" in _problems(d2)


def test_deeply_nested_task_yaml(tmp_path):
    d = _task(tmp_path, "category: cls\nlabels: " + "[" * 5000 + "\n", {"train.jsonl": GOOD})
    assert "task.yaml: not valid YAML" in _problems(d)


def test_unreadable_subfolder_is_reported(tmp_path, monkeypatch):
    _task(tmp_path / "root", "category: cls\n", {"train.jsonl": GOOD}, name="ok")
    _task(tmp_path / "root" / "locked", "category: cls\n", {"train.jsonl": GOOD}, name="hidden")
    locked = str(tmp_path / "root" / "locked")
    real = os.scandir

    def scandir(p):
        if str(p) == locked:
            raise PermissionError(13, "Permission denied", str(p))
        return real(p)

    monkeypatch.setattr(os, "scandir", scandir)
    c = Collector()
    assert find_task_dirs(tmp_path / "root", c) == [tmp_path / "root" / "ok"]
    assert "cannot read this folder (Permission denied)" in str(c.errors[0]) and locked in str(c.errors[0])
    with pytest.raises(TaskFormatError, match="task folders inside it would be missed"):
        load_task_dirs([str(tmp_path / "root")])


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read anything")
def test_unreadable_subfolder_chmod(tmp_path):
    _task(tmp_path / "root", "category: cls\n", {"train.jsonl": GOOD}, name="ok")
    locked = tmp_path / "root" / "locked"
    _task(locked, "category: cls\n", {"train.jsonl": GOOD}, name="hidden")
    locked.chmod(0)
    try:
        with pytest.raises(TaskFormatError, match="cannot read this folder"):
            load_task_dirs([str(tmp_path / "root")])
    finally:
        locked.chmod(0o755)


def test_symlinked_task_folder_is_found_once(tmp_path):
    real = _task(tmp_path / "data", "category: cls\n", {"train.jsonl": GOOD}, name="linked")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "linked").symlink_to(real, target_is_directory=True)
    (tmp_path / "root" / "loop").symlink_to(tmp_path / "root", target_is_directory=True)
    assert [t.name for t in load_task_dirs([str(tmp_path / "root")])] == ["linked"]


@pytest.mark.parametrize(
    "line,field",
    [
        ('{"input": "a\\ud800b", "output": "x"}', "input"),
        ('{"input": "a", "output": "x\\udfff"}', "output"),
        ('{"input": "a", "output": "x", "options": ["x", "\\ud800"]}', "options.1"),
    ],
)
def test_lone_surrogate_is_invalid_text(tmp_path, line, field):
    d = _task(tmp_path, "category: other\n", {"train.jsonl": GOOD + line + "\n"})
    msg = _problems(d)
    assert f"train.jsonl:5 [{field}]: invalid text: lone surrogate" in msg


def test_lone_surrogate_in_a_jsonl_source_and_in_task_yaml(tmp_path):
    d = _task(
        tmp_path,
        "category: other\nsource: {format: jsonl, input: q, output: a}\n",
        {"train.jsonl": '{"q": "ok", "a": "p"}\n{"q": "bad \\ud83d", "a": "p"}\n'},
    )
    assert "train.jsonl:2 [q]: invalid text: lone surrogate" in _problems(d)
    d2 = _task(
        tmp_path, 'category: other\ntemplate: {input_prefix: "Q\\ud800: "}\n', {"train.jsonl": GOOD}, "t2"
    )
    assert "task.yaml [template.input_prefix]: invalid text" in _problems(d2)


def test_raw_line_separator_characters_inside_json_strings(tmp_path):
    """U+2028 / U+0085 are legal unescaped in JSON; they are not line ends (str.splitlines says they are)."""
    task = Task("t", "other", splits={"train": [Example("a\u2028b\x85c", "x"), Example("d", "y")]})
    write_task_dir(task, tmp_path / "t")
    back = load_task_dir(tmp_path / "t")
    assert [e.input for e in back.splits["train"]] == ["a\u2028b\x85c", "d"]


def test_unhashable_category_and_wrong_scalar_types(tmp_path):
    d = _task(tmp_path, "category: [cls]\nlabel_separator: [a]\ndescription: {a: 1}\n", {"train.jsonl": GOOD})
    msg = _problems(d)
    assert "[category]: must be one of" in msg
    assert "[label_separator]: must be a non-empty string" in msg and "[description]: must be a string" in msg


# 3. hf paths and duplicate names ---------------------------------------------------------------


def test_hf_data_files_resolve_against_the_task_folder(tmp_path):
    folder = tmp_path / "task"
    args = {
        "path": "json",
        "data_files": {"train": "data/train.jsonl", "test": ["a.jsonl", "/abs/b.jsonl"]},
        "cache_dir": "cache",
    }
    out = resolve_hf_args(args, folder)
    assert out["data_files"] == {
        "train": str(folder / "data/train.jsonl"),
        "test": [str(folder / "a.jsonl"), "/abs/b.jsonl"],
    }
    assert out["cache_dir"] == str(folder / "cache") and args["data_files"]["train"] == "data/train.jsonl"
    assert resolve_hf_args({"path": "csv", "data_files": "x.csv"}, folder)["data_files"] == str(
        folder / "x.csv"
    )
    assert resolve_hf_args({"path": "json", "data_files": "https://h/x.json"}, folder)["data_files"] == (
        "https://h/x.json"
    )
    # a hub dataset's data_files are paths inside its repository: left alone
    hub = {"path": "someone/dataset", "data_files": "train.csv", "data_dir": "sub"}
    assert resolve_hf_args(hub, folder) == hub


def test_hf_source_reads_relative_files_from_any_working_directory(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    rows = "".join(json.dumps({"text": f"s{i}", "label": i % 2}) + "\n" for i in range(4))
    meta = (
        "category: cls\nsource:\n  format: hf\n"
        f"  hf: {{path: json, data_files: {{train: data.jsonl}}, cache_dir: '{tmp_path / 'hf_cache'}'}}\n"
        "  input: text\n  output: label\n  label_names: {0: no, 1: yes}\n"
    )
    d = _task(tmp_path, meta, {"data.jsonl": rows})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    t = load_task_dir(d)
    assert [e.output for e in t.splits["train"]] == ["no", "yes", "no", "yes"]


def test_duplicate_task_names_name_both_folders(tmp_path):
    a = _task(tmp_path, "name: same\ncategory: cls\n", {"train.jsonl": GOOD}, name="a")
    b = _task(tmp_path, "name: same\ncategory: cls\n", {"train.jsonl": GOOD}, name="b")
    with pytest.raises(TaskFormatError) as e:
        load_task_dirs([str(tmp_path)])
    msg = str(e.value)
    assert "share this name" in msg and f"{a}/task.yaml" in msg and f"{b}/task.yaml" in msg


def test_folder_named_like_another_task(tmp_path):
    _task(tmp_path, "name: b\ncategory: cls\n", {"train.jsonl": GOOD}, name="a")
    _task(tmp_path, "category: cls\n", {"train.jsonl": GOOD}, name="b")  # name defaults to the folder: b
    with pytest.raises(TaskFormatError, match=r"b \[name\]: 2 task folders share this name"):
        load_task_dirs([str(tmp_path)])


def test_duplicate_across_roots_and_file_name_collisions(tmp_path):
    _task(tmp_path / "r1", "name: 'x:y'\ncategory: cls\n", {"train.jsonl": GOOD}, name="a")
    _task(tmp_path / "r2", "name: X_y\ncategory: cls\n", {"train.jsonl": GOOD}, name="a")
    with pytest.raises(TaskFormatError, match="would share output file names"):
        load_task_dirs([str(tmp_path / "r1"), str(tmp_path / "r2")])


def test_the_same_folder_through_two_roots_loads_once(tmp_path):
    _task(tmp_path, "category: cls\n", {"train.jsonl": GOOD}, name="a")
    assert [t.name for t in load_task_dirs([str(tmp_path), str(tmp_path / "a")])] == ["a"]


# 4. quoting in delimited files ------------------------------------------------------------------

TSV_WITH_QUOTES = 'label\ttext\npos\t"Best film ever\nneg\tdull plot\npos\tloved it" said Ann\nneg\tboring\n'


def test_tsv_quote_does_not_merge_rows(tmp_path):
    meta = "category: cls\nsource: {format: tsv, input: text, output: label}\n"
    t = load_task_dir(_task(tmp_path, meta, {"train.tsv": TSV_WITH_QUOTES}))
    assert [e.input for e in t.splits["train"]] == [
        '"Best film ever',
        "dull plot",
        'loved it" said Ann',
        "boring",
    ]
    assert [e.line for e in t.splits["train"]] == [2, 3, 4, 5]


def test_tsv_with_csv_quoting_reports_the_merge(tmp_path):
    meta = "category: cls\nsource: {format: tsv, quoting: csv, input: text, output: label}\n"
    msg = _problems(_task(tmp_path, meta, {"train.tsv": TSV_WITH_QUOTES}))
    assert "train.tsv:2: cannot split this row" in msg and "source.quoting: none" in msg


def test_csv_stray_quote_is_an_error_not_a_merge(tmp_path):
    meta = "category: cls\nsource: {format: csv, input: text, output: label}\n"
    bad = 'text,label\n"unclosed start,pos\nplain,neg\nother,pos\n'
    msg = _problems(_task(tmp_path, meta, {"train.csv": bad}))
    assert "train.csv:2: cannot split this row" in msg


def test_rows_spanning_lines_are_counted_and_noted(tmp_path):
    meta = "category: sum\nsource: {format: csv, input: doc, output: summary}\n"
    csv_text = 'doc,summary\n"line one\nline two",s1\nsingle,s2\n'
    t = load_task_dir(_task(tmp_path, meta, {"train.csv": csv_text}))
    assert [e.line for e in t.splits["train"]] == [2, 4]
    assert any("1 rows span 2 lines" in n and "train.csv" in n for n in t.notes)
    assert any("rows span" in str(p) for p in t.load_warnings)


def test_physical_lines_match_rows_with_quoting_none(tmp_path):
    p = tmp_path / "x.tsv"
    p.write_text(TSV_WITH_QUOTES)
    c = Collector()
    rows = _read_delimited(p, "\t", None, c, "none", {"input": "text", "output": "label"})
    data_lines = [ln for ln in TSV_WITH_QUOTES.splitlines()[1:] if ln.strip()]
    assert len(rows) == len(data_lines) and not c.problems


def test_quoted_looking_tsv_value_warns(tmp_path):
    meta = "category: cls\nsource: {format: tsv, input: text, output: label}\n"
    t = load_task_dir(_task(tmp_path, meta, {"train.tsv": 'label\ttext\npos\t"he said ""hi"""\nneg\tno\n'}))
    assert any("set source.quoting: csv" in n for n in t.notes)


def test_quoting_option_is_validated(tmp_path):
    meta = "category: cls\nsource: {format: csv, quoting: minimal, input: text, output: label}\n"
    assert "[source.quoting]: must be csv" in _problems(
        _task(tmp_path, meta, {"train.csv": "text,label\na,x\n"})
    )
    meta = "category: cls\nsource: {format: jsonl, quoting: none, input: text, output: label}\n"
    assert "only for csv and tsv" in _problems(_task(tmp_path, meta, {"train.jsonl": "{}\n"}, name="t2"))


def test_missing_column_is_one_error_per_file(tmp_path):
    meta = "category: cls\nsource: {format: csv, input: txt, output: label}\n"
    rows = "text,label\n" + "".join(f"t{i},{'ab'[i % 2]}\n" for i in range(200))
    with pytest.raises(TaskFormatError) as e:
        load_task_dir(_task(tmp_path, meta, {"train.csv": rows}))
    assert len(e.value.problems) == 1
    assert "train.csv:1 [source.input]: no column 'txt'" in str(e.value)


def test_columns_given_as_a_string(tmp_path):
    meta = "category: cls\nsource: {format: tsv, columns: text, input: text, output: label}\n"
    assert "[source.columns]: must be a list of column names" in _problems(
        _task(tmp_path, meta, {"train.tsv": "a\tx\nb\ty\n"})
    )


def test_list_values_are_not_stringified(tmp_path):
    meta = "category: other\nsource: {format: jsonl, input: q, output: a}\n"
    d = _task(tmp_path, meta, {"train.jsonl": '{"q": ["a", "b"], "a": "x"}\n{"q": "ok", "a": {"k": 1}}\n'})
    msg = _problems(d)
    assert "train.jsonl:1 [q]: must be a string or number, got list" in msg
    assert "train.jsonl:2 [a]: must be a string or number, got dict" in msg


def test_roots_that_are_files(tmp_path):
    d = _task(tmp_path, "category: cls\n", {"train.jsonl": GOOD})
    assert [t.name for t in load_task_dirs([str(d / "task.yaml")])] == ["t"]
    with pytest.raises(TaskFormatError, match="train.jsonl: is a file; give a task folder"):
        load_task_dirs([str(d / "train.jsonl")])


def test_splits_null_without_files_is_reported(tmp_path):
    d = _task(tmp_path, "category: cls\nsplits:\n", {})
    assert "no splits" in _problems(d)


# 5. names Windows cannot hold, files outside the folder, non-finite numbers, odd files ------------


@pytest.mark.parametrize(
    "name", ["CON", "con", "Con.v1", "nul.txt", "PRN", "aux", "COM1", "com9.x.y", "LPT1", "lpt0", "x."]
)
def test_names_windows_cannot_hold_are_refused(tmp_path, name):
    d = _task(tmp_path, f"name: '{name}'\ncategory: cls\n", {"train.jsonl": GOOD})
    msg = _problems(d)
    assert "task.yaml [name]" in msg and "is not a safe task name" in msg
    assert ("device name on Windows" in msg) != name.endswith(".")
    with pytest.raises(ValueError, match="not a safe task name"):
        safe_path_component(name)


@pytest.mark.parametrize(
    "name", ["console", "con_task", "com10", "lpt", "nul2", "aux:x", "CONTRACT.v1", "a.b"]
)
def test_names_that_only_look_reserved_still_load(tmp_path, name):
    d = _task(tmp_path, f"name: '{name}'\ncategory: cls\n", {"train.jsonl": GOOD})
    assert load_task_dir(d).name == name


def test_a_folder_named_like_a_device_needs_a_name_field(tmp_path):
    d = _task(tmp_path, "category: cls\n", {"train.jsonl": GOOD}, name="PRN")
    assert "folder name 'PRN' is not a safe task name" in _problems(d)


CSV_ROWS = "text,label\na,x\nb,y\n"


@pytest.mark.parametrize(
    "meta,field",
    [
        (
            "source: {format: csv, files: {train: /etc/hostname}, input: text, output: label}",
            "source.files.train",
        ),
        (
            "source: {format: csv, files: {train: ../t/train.csv}, input: text, output: label}",
            "source.files.train",
        ),
        (
            "source: {format: csv, files: {train: sub/../../x.csv}, input: text, output: label}",
            "source.files.train",
        ),
        (
            "source: {format: csv, files: {train: '~/x.csv'}, input: text, output: label}",
            "source.files.train",
        ),
        (
            "source: {format: csv, files: {train: 'C:\\\\data\\\\x.csv'}, input: text, output: label}",
            "source.files.train",
        ),
        (
            "source: {format: csv, files: {train: '..\\\\x.csv'}, input: text, output: label}",
            "source.files.train",
        ),
        (
            "source: {format: lines, files: {train: {text: /etc/hostname, label: l.txt}}, input: text, output: label}",
            "source.files.train.text",
        ),
        (
            "source: {format: csv, input: text, output: label, label_names: ../mapping.txt}",
            "source.label_names",
        ),
        ("splits: {train: /etc/hostname}", "splits.train"),
        ("splits: {train: ../other/train.jsonl}", "splits.train"),
    ],
)
def test_files_outside_the_task_folder_are_refused(tmp_path, meta, field):
    d = _task(tmp_path, f"category: cls\n{meta}\n", {"train.csv": CSV_ROWS, "train.jsonl": GOOD})
    msg = _problems(d)
    assert f"task.yaml [{field}]" in msg and "is outside the task folder" in msg
    assert "copy the file into the task folder" in msg


def test_a_link_inside_the_task_folder_is_followed(tmp_path):
    data = tmp_path / "big_data"
    data.mkdir()
    (data / "all.csv").write_text(CSV_ROWS)
    d = _task(
        tmp_path,
        "category: cls\nsource: {format: csv, files: {train: train.csv}, input: text, output: label}\n",
    )
    (d / "train.csv").symlink_to(data / "all.csv")
    assert [e.output for e in load_task_dir(d).splits["train"]] == ["x", "y"]


@pytest.mark.parametrize(
    "line,field,shown",
    [
        ('{"q": NaN, "a": "x"}', "q", "nan"),
        ('{"q": "t", "a": Infinity}', "a", "inf"),
        ('{"q": -Infinity, "a": "x"}', "q", "-inf"),
        ('{"q": 1e400, "a": "x"}', "q", "inf"),
        ('{"q": "t", "a": "x", "c": ["x", NaN]}', "c", "option 2 is nan"),
        ('{"q": "t", "a": "x", "c": ["x", null]}', "c", "option 2 must be a string or number, got null"),
    ],
)
def test_non_finite_numbers_in_a_jsonl_source_are_located_errors(tmp_path, line, field, shown):
    meta = "category: other\nsource: {format: jsonl, input: q, output: a, options: c}\n"
    d = _task(tmp_path, meta, {"train.jsonl": '{"q": "ok", "a": "x", "c": ["x", "y"]}\n' + line + "\n"})
    msg = _problems(d)
    assert f"train.jsonl:2 [{field}]:" in msg and shown in msg
    if "option" not in shown or "is nan" in shown:
        assert "JSON NaN/Infinity literal" in msg


def test_non_finite_numbers_in_plain_task_files_are_not_strings(tmp_path):
    d = _task(tmp_path, "category: other\n", {"train.jsonl": GOOD + '{"input": NaN, "output": "a"}\n'})
    assert "train.jsonl:5 [input]: must be a string, got float nan" in _problems(d)


def test_a_string_nan_is_kept_as_text(tmp_path):
    meta = "category: other\nsource: {format: jsonl, input: q, output: a}\n"
    d = _task(tmp_path, meta, {"train.jsonl": '{"q": "NaN", "a": "nan"}\n{"q": 2.5, "a": 3.0}\n'})
    assert [(e.input, e.output) for e in load_task_dir(d).splits["train"]] == [("NaN", "nan"), ("2.5", "3")]


def _with_alarm(seconds: int):
    import signal

    def boom(*_):
        raise TimeoutError(f"still reading after {seconds} s")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    return lambda: (signal.alarm(0), signal.signal(signal.SIGALRM, old))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
@pytest.mark.parametrize("where", ["train.jsonl", "task.yaml", "source"])
def test_a_pipe_is_refused_not_read_forever(tmp_path, where):
    meta = "category: cls\n" + (
        "source: {format: csv, input: text, output: label}\n" if where == "source" else ""
    )
    d = _task(tmp_path, meta, {} if where != "task.yaml" else {"train.jsonl": GOOD})
    target = d / {"train.jsonl": "train.jsonl", "task.yaml": "task.yaml", "source": "train.csv"}[where]
    target.unlink(missing_ok=True)
    os.mkfifo(target)
    restore = _with_alarm(20)
    try:
        msg = _problems(d)
    finally:
        restore()
    assert f"{target}: is not a regular file" in msg


def test_numbers_too_long_to_convert(tmp_path):
    digits = "1" * 5000  # Python refuses to convert integers of more than 4,300 digits
    d = _task(
        tmp_path, "category: other\n", {"train.jsonl": GOOD + f'{{"input": {digits}, "output": "a"}}\n'}
    )
    assert "train.jsonl:5: malformed JSON (Exceeds the limit (4300 digits)" in _problems(d)
    meta = "category: other\nsource: {format: jsonl, input: q, output: a}\n"
    d2 = _task(tmp_path, meta, {"train.jsonl": f'{{"q": {digits}, "a": "x"}}\n'}, name="t2")
    assert "train.jsonl:1: malformed JSON (Exceeds the limit" in _problems(d2)
    meta = "category: other\nsource: {format: csv, input: q, output: a, options: c}\n"
    d3 = _task(tmp_path, meta, {"train.csv": f"q,a,c\nx,a,[{digits}]\n"}, name="t3")
    assert "options" in _problems(d3)  # the cell is read as 'a|b|c' text, not a crash
    d4 = _task(tmp_path, f"category: other\nlabels: [{digits}]\n", {"train.jsonl": GOOD}, name="t4")
    assert "task.yaml: not valid YAML: Exceeds the limit (4300 digits)" in _problems(d4)
