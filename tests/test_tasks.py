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


def test_check_quality_warns_on_empty_inputs_and_unlabelled_classification(tmp_path):
    from manyicl.errors import Collector
    from manyicl.tasks import check_quality

    d = tmp_path / "t"
    d.mkdir()
    (d / "task.yaml").write_text("category: cls\n")
    rows = [{"input": "", "output": "a"}, {"input": "x", "output": "b"}, {"input": " \t", "output": "a"}]
    (d / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    c = Collector()
    check_quality(load_task_dir(d), c)
    msgs = [str(p) for p in c.warnings]
    assert sum("input is empty" in m for m in msgs) == 2 and any("train.jsonl:3 [input]" in m for m in msgs)
    assert any("a cls task without labels" in m for m in msgs)


def test_load_task_dirs_collecting_keeps_the_good_tasks(tmp_path, task):
    from manyicl.errors import Collector
    from manyicl.tasks import load_task_dirs_collecting

    write_task_dir(task, tmp_path / "good")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "task.yaml").write_text("category: nope\n")
    c = Collector()
    tasks = load_task_dirs_collecting([str(tmp_path)], c)
    assert [t.name for t in tasks] == ["toy"] and any("nope" in str(p) for p in c.errors)
    with pytest.raises(TaskFormatError, match="nope"):
        load_task_dirs([str(tmp_path)])
