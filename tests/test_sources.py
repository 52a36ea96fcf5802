"""A user's own CSV / TSV / JSONL / datasets files, mapped to examples by task.yaml alone."""

import json

import pytest

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
