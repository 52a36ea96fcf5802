import json

import pytest

from manyicl.errors import TaskFormatError
from manyicl.tasks import load_task_dir, load_task_dirs, write_task_dir


def test_round_trip(tmp_path, task):
    write_task_dir(task, tmp_path / "toy")
    back = load_task_dir(tmp_path / "toy")
    assert back.splits == task.splits and back.template == task.template and back.labels == task.labels


def test_broken_task_reports_every_problem(tmp_path):
    d = tmp_path / "broken"
    d.mkdir()
    (d / "task.yaml").write_text("name: broken\ncategory: clss\ntemplate:\n  input_prefx: 'Q: '\n")
    lines = [
        '{"input": "a", "output": "x"}',
        "{not json",
        '{"input": "b"}',
        '{"input": 3, "output": "y"}',
        '{"input": "c", "output": "z", "options": ["p", "q"]}',
        "[1, 2]",
    ]
    (d / "train.jsonl").write_text("\n".join(lines) + "\n")
    (d / "test.jsonl").write_bytes(b'{"input": "\xff\xfe", "output": "x"}\n')
    with pytest.raises(TaskFormatError) as e:
        load_task_dir(d)
    msg = str(e.value)
    assert "category" in msg and "clss" in msg
    assert "template.input_prefx" in msg
    assert "train.jsonl:2" in msg and "malformed JSON" in msg
    assert "train.jsonl:3 [output]" in msg
    assert "train.jsonl:4 [input]" in msg
    assert "train.jsonl:5 [options]" in msg
    assert "train.jsonl:6" in msg and "JSON object" in msg
    assert "test.jsonl:1" in msg and "UTF-8" in msg
    assert len(e.value.problems) >= 8


def test_empty_split_and_single_label(tmp_path):
    d = tmp_path / "t"
    d.mkdir()
    (d / "task.yaml").write_text("category: cls\n")
    (d / "train.jsonl").write_text(
        "\n".join(json.dumps({"input": f"i{i}", "output": "same"}) for i in range(5))
    )
    (d / "test.jsonl").write_text("")
    with pytest.raises(TaskFormatError) as e:
        load_task_dir(d)
    msg = str(e.value)
    assert "empty file" in msg and "at least 2 labels" in msg


def test_load_many_and_duplicate_names(tmp_path, task):
    write_task_dir(task, tmp_path / "a")
    write_task_dir(task, tmp_path / "b")
    with pytest.raises(TaskFormatError, match="share this name"):
        load_task_dirs([str(tmp_path)])
    with pytest.raises(TaskFormatError, match="no task.yaml"):
        load_task_dirs([str(tmp_path / "nothing")])
