"""A user's own CSV / TSV / JSONL / datasets files, mapped to examples by task.yaml alone."""

import json

import pytest
import yaml

from manyicl.errors import TaskFormatError
from manyicl.tasks import load_task_dir


def _task(tmp_path, meta: str, files: dict[str, str]):
    d = tmp_path / "t"
    d.mkdir(exist_ok=True)
    (d / "task.yaml").write_text(meta)
    for name, text in files.items():
        (d / name).write_text(text)
    return d


def test_csv_with_two_input_fields_and_label_names(tmp_path):
    meta = """
category: nli
labels: [entailment, not entailment]
source:
  format: csv
  files: {train: train.csv, test: dev.csv}
  input: [premise, hypothesis]
  input_template: "{premise}\\nHypothesis: {hypothesis}"
  output: label
  label_names: {0: entailment, 1: not entailment}
"""
    csv_text = 'premise,hypothesis,label\n"A cat, asleep.",An animal sleeps.,0\nIt rains.,It is dry.,1\n'
    t = load_task_dir(_task(tmp_path, meta, {"train.csv": csv_text, "dev.csv": csv_text}))
    ex = t.splits["train"][0]
    assert ex.input == "A cat, asleep.\nHypothesis: An animal sleeps." and ex.output == "entailment"
    assert ex.line == 2 and t.splits["test"][1].output == "not entailment"
    assert t.split_files["train"].endswith("train.csv")


def test_headerless_tsv_with_column_names(tmp_path):
    meta = "category: cls\nsource:\n  format: tsv\n  columns: [text, label, id]\n  input: text\n  output: label\n"
    tsv = "good film\tpositive\t1\nbad film\tnegative\t2\n007\t0123\t3\n"
    t = load_task_dir(_task(tmp_path, meta, {"train.tsv": tsv}))
    assert [e.output for e in t.splits["train"]] == ["positive", "negative", "0123"]  # strings stay strings
    assert t.splits["train"][2].input == "007"


def test_jsonl_mapping_with_options(tmp_path):
    meta = "category: qa\nmetric: accuracy\nsource:\n  format: jsonl\n  input: question\n  output: answer\n  options: choices\n"
    rows = [
        {"question": "2+2?", "answer": 4, "choices": [3, 4, 5]},
        {"question": "Capital of France?", "answer": "Paris", "choices": "Rome|Paris"},
    ]
    t = load_task_dir(_task(tmp_path, meta, {"train.jsonl": "\n".join(json.dumps(r) for r in rows)}))
    assert t.splits["train"][0].options == ("3", "4", "5") and t.splits["train"][0].output == "4"
    assert t.splits["train"][1].options == ("Rome", "Paris")


def test_hf_datasets_source_from_local_files(tmp_path):
    pytest.importorskip("datasets")
    rows = [{"text": f"sentence {i}", "label": i % 2} for i in range(6)]
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    meta = f"""
category: cls
source:
  format: hf
  hf: {{path: json, data_files: {{train: {tmp_path / "data.jsonl"}}}}}
  input: text
  output: label
  label_names: {{0: no, 1: yes}}
"""
    t = load_task_dir(_task(tmp_path, meta, {}))
    assert [e.output for e in t.splits["train"]] == ["no", "yes"] * 3


def test_mapping_errors_are_collected_with_file_line_and_field(tmp_path):
    meta = """
category: cls
source:
  format: csv
  input: [text]
  output: label
  label_names: {0: neg, 1: pos}
  colums: [x]
"""
    # the unknown key alone stops reading; fix it and see the row problems
    with pytest.raises(TaskFormatError, match=r"source\.colums"):
        load_task_dir(_task(tmp_path, meta, {"train.csv": "text,label\na,0\n"}))
    meta = meta.replace("  colums: [x]\n", "")
    bad = "text,label\nfine,0\n,1\nmissing label,\nthree,2\ntoo,many,cols\n"
    with pytest.raises(TaskFormatError) as e:
        load_task_dir(_task(tmp_path, meta, {"train.csv": bad}))
    msg = str(e.value)
    assert "train.csv:4 [label]: missing or empty output" in msg
    assert "train.csv:5 [label]: value '2' has no entry in source.label_names" in msg
    assert "train.csv:6: has 3 columns" in msg


# --------------------------------------------------------------------------------------------
# Parallel line files and label-id mapping files
# --------------------------------------------------------------------------------------------

LINES_META = (
    "category: cls\nsource:\n  format: lines\n  input: text\n  output: labels\n  label_names: mapping.txt\n"
)


def _lines_task(tmp_path, mapping: str, train_labels: str = "1\n0\n0\n1\n", meta: str = LINES_META):
    return _task(
        tmp_path,
        meta,
        {
            "train_text.txt": "good film\nbad plot\nawful\nlovely\n",
            "train_labels.txt": train_labels,
            "test_text.txt": "great\nboring\n\n",  # blank lines at the end are not examples
            "test_labels.txt": "1\n0",  # no final line break
            "mapping.txt": mapping,
        },
    )


@pytest.mark.parametrize(
    "mapping", ["negative\npositive\n", "0\tnegative\n1\tpositive\n", "1\tpositive\n0\tnegative"]
)
def test_parallel_line_files_with_a_mapping_file(tmp_path, mapping):
    t = load_task_dir(_lines_task(tmp_path, mapping))
    assert [(e.input, e.output) for e in t.splits["test"]] == [("great", "positive"), ("boring", "negative")]
    assert [e.output for e in t.splits["train"]] == ["positive", "negative", "negative", "positive"]
    assert t.splits["train"][2].line == 3 and t.split_files["train"].endswith("train_text.txt")
    assert set(t.labels) == {"negative", "positive"}  # a cls task takes its labels from the mapping


def test_parallel_line_files_listed_explicitly_with_two_inputs(tmp_path):
    meta = """
category: nli
labels: [yes, no]
source:
  format: lines
  files:
    train: {premise: p.txt, hypothesis: h.txt, gold: y.txt}
  input: [premise, hypothesis]
  input_template: "{premise} Question: {hypothesis}?"
  output: gold
"""
    d = _task(
        tmp_path,
        meta,
        {"p.txt": "It rains.\nThe sun shines.\n", "h.txt": "It is wet\nIt is dark\n", "y.txt": "yes\nno\n"},
    )
    t = load_task_dir(d)
    assert (
        t.splits["train"][0].input == "It rains. Question: It is wet?" and t.splits["train"][1].output == "no"
    )


def test_line_file_problems_name_the_file_of_the_field_and_the_line(tmp_path):
    with pytest.raises(TaskFormatError) as e:
        load_task_dir(_lines_task(tmp_path, "negative\npositive\n", train_labels="1\n0\n7\n\n1\n"))
    msg = str(e.value)
    # the blank label line inside the file is an example with an empty label; 5 labels vs 4 texts
    assert "need one line per example each" in msg and "train_text.txt has 4" in msg
    with pytest.raises(TaskFormatError) as e:
        load_task_dir(_lines_task(tmp_path, "negative\npositive\n", train_labels="1\n0\n7\n1\n"))
    assert "train_labels.txt:3 [labels]: value '7' has no entry in source.label_names" in str(e.value)


@pytest.mark.parametrize(
    "mapping,needle",
    [
        ("0\tnegative\npositive\n", "mapping.txt:2: mixes id<TAB>name lines"),
        ("0\tnegative\n0\tpositive\n", "mapping.txt:2: label id '0' appears twice"),
        ("negative\n\npositive\n", "mapping.txt:2: empty line"),
        ("", "empty mapping file"),
    ],
)
def test_bad_mapping_files_are_reported_at_their_line(tmp_path, mapping, needle):
    with pytest.raises(TaskFormatError, match=needle):
        load_task_dir(_lines_task(tmp_path, mapping))


def test_missing_line_files_and_mapping_file(tmp_path):
    with pytest.raises(TaskFormatError, match="mapping file nope.txt does not exist"):
        load_task_dir(_lines_task(tmp_path, "a\nb\n", meta=LINES_META.replace("mapping.txt", "nope.txt")))
    d = tmp_path / "t"
    (d / "task.yaml").write_text(LINES_META)
    (d / "test_labels.txt").unlink()
    with pytest.raises(TaskFormatError, match=r"split 'test' has no test_labels\.txt"):
        load_task_dir(d)
    meta = "category: cls\nsource:\n  format: lines\n  files: {train: [a.txt]}\n  input: text\n  output: labels\n"
    with pytest.raises(TaskFormatError, match="each split maps field names to line files"):
        load_task_dir(_task(tmp_path, meta, {}))


def test_a_mapping_file_works_for_csv_too(tmp_path):
    meta = "category: cls\nsource:\n  format: csv\n  input: text\n  output: label\n  label_names: ids.tsv\n"
    t = load_task_dir(
        _task(tmp_path, meta, {"train.csv": "text,label\nhi,1\nbye,0\n", "ids.tsv": "0\tneg\n1\tpos\n"})
    )
    assert [e.output for e in t.splits["train"]] == ["pos", "neg"] and t.labels == ("neg", "pos")


# --------------------------------------------------------------------------------------------
# docs/task_format.md: every file shown under a "<!-- file: PATH -->" marker is written and loaded
# --------------------------------------------------------------------------------------------


def _doc_files() -> dict[str, str]:
    from pathlib import Path

    lines = (Path(__file__).resolve().parents[1] / "docs" / "task_format.md").read_text().splitlines()
    files = {}
    for i, line in enumerate(lines):
        if line.startswith("<!-- file: "):
            path = line.removeprefix("<!-- file: ").removesuffix(" -->").strip()
            assert lines[i + 1].startswith("```"), f"task_format.md:{i + 1}: a fence must follow the marker"
            end = next(j for j in range(i + 2, len(lines)) if lines[j].startswith("```"))
            files[path] = "\n".join(lines[i + 2 : end]) + "\n"
    return files


def test_every_documented_source_format_has_a_worked_example_that_loads(tmp_path):
    from manyicl.errors import Collector
    from manyicl.sources import FORMATS
    from manyicl.tasks import check_quality, load_task_dirs

    files = _doc_files()
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    tasks = load_task_dirs([str(tmp_path)])
    assert len(tasks) == len({p.split("/")[0] for p in files if p.endswith("/task.yaml")})
    formats = set()
    for t in tasks:
        meta = yaml.safe_load((tmp_path / t.name / "task.yaml").read_text())
        formats.add(meta["source"].get("format", "jsonl"))
        assert t.splits["train"] and t.splits["test"], t.name
        c = Collector()
        check_quality(t, c)
        assert not c.problems, [str(p) for p in c.problems]  # the examples are clean, not just loadable
        if t.category in ("cls", "nli"):
            assert t.labels and {e.output for e in t.splits["train"]} <= set(t.labels)
    assert formats == set(FORMATS)
    by_name = {t.name: t for t in tasks}
    assert by_name["sentiment_lines"].splits["test"][0].output == "positive"
    assert by_name["reviews"].splits["train"][1].output == "neutral"
    assert by_name["headlines"].splits["train"][2].input == '"Record" crowd at the final'
