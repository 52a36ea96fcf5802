"""Faults found by a second hostile round beyond the first catalogue (docs/faults.md, classes 7-9).

The YAML, config and cell cases go through the Python API (the CLI cases are in
``tests/test_faults_cli.py``); the serve cases talk to a real ``manyicl serve`` process on the tiny model,
started as ``tests/test_serve.py`` starts it.
"""

from __future__ import annotations

import json
import threading

import pytest
import yaml

from manyicl.cells import Cells
from manyicl.config import DistillConfig, EvalConfig, ExperimentConfig, TrainConfig, load_config
from manyicl.errors import ConfigError, TaskFormatError
from manyicl.fileio import load_yaml
from manyicl.tasks import load_task_dir, write_task_dir

from conftest import toy_task

BOMB = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi")
)
"""Nine levels of nine aliases: 9**9 (387 million) values once expanded, in 10 lines."""


def _problems(e: pytest.ExceptionInfo) -> str:
    return "\n".join(str(p) for p in e.value.problems)


# --------------------------------------------------------------------------------------------
# YAML: aliases, nesting, duplicate keys (config files, overrides, task.yaml)
# --------------------------------------------------------------------------------------------


def test_an_alias_bomb_is_refused_while_it_is_read(tmp_path):
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(BOMB + "seeds: *i\n")
    with pytest.raises(ConfigError) as e:  # was: a message echoing hundreds of MB (or out of memory)
        load_config(EvalConfig, cfg)
    assert "aliases (*name) expand to more than 1,000,000 values" in _problems(e)
    assert len(str(e.value)) < 1000
    d = tmp_path / "task"
    d.mkdir()
    (d / "task.yaml").write_text(BOMB + "category: cls\nlabels: *i\n")
    with pytest.raises(TaskFormatError) as e:
        load_task_dir(d)
    assert "task.yaml: not valid YAML: its aliases" in _problems(e)


def test_anchors_and_merges_that_stay_small_still_load():
    assert load_yaml("a: &a [1, 2]\nb: *a\nc: &c {x: 1, y: 2}\nd:\n  <<: *c\n  x: 5\n") == {
        "a": [1, 2],
        "b": [1, 2],
        "c": {"x": 1, "y": 2},
        "d": {"x": 5, "y": 2},  # a merged key may be overridden
    }


def test_an_alias_inside_its_own_anchor_is_refused():
    with pytest.raises(yaml.YAMLError, match="refers to the anchor"):
        load_yaml("shots: &a [0, *a]\n")


def test_yaml_nested_too_deeply_in_a_config_file_or_override(tmp_path):
    cfg = tmp_path / "deep.yaml"
    cfg.write_text("seeds: " + "[" * 100_000)
    with pytest.raises(ConfigError) as e:  # was: RecursionError with a traceback
        load_config(EvalConfig, cfg)
    assert "deep.yaml: not valid YAML: nested too deeply to read" in _problems(e)
    with pytest.raises(ConfigError) as e:
        load_config(EvalConfig, overrides=["seeds=" + "[" * 100_000])
    assert "seeds: not valid YAML: nested too deeply to read" in _problems(e)
    assert len(str(e.value)) < 1000


def test_a_key_given_twice_is_an_error_naming_both_lines(tmp_path):
    cfg = tmp_path / "dup.yaml"
    cfg.write_text("max_queries: 5\nseeds: [0]\nmax_queries: 7\n")
    with pytest.raises(ConfigError) as e:  # was: max_queries 7, silently
        load_config(EvalConfig, cfg)
    assert "line 3: key 'max_queries' is given twice in one mapping (first on line 1)" in _problems(e)
    with pytest.raises(ConfigError) as e:
        load_config(EvalConfig, overrides=["tasks={dirs: [a], dirs: [b]}"])
    assert "tasks: not valid YAML: line 1: key 'dirs' is given twice" in _problems(e)
    d = write_task_dir(toy_task(8), tmp_path / "toy")
    (d / "task.yaml").write_text((d / "task.yaml").read_text() + "category: qa\n")
    with pytest.raises(TaskFormatError) as e:
        load_task_dir(d)
    assert "key 'category' is given twice" in _problems(e)


def test_an_override_list_that_does_not_parse_says_why():
    with pytest.raises(ConfigError) as e:
        load_config(EvalConfig, overrides=["shots=[0,4"])
    assert "shots: not valid YAML: expected ',' or ']'" in _problems(e)


def test_a_long_bad_value_is_not_echoed_whole():
    with pytest.raises(ConfigError) as e:
        load_config(EvalConfig, overrides=["max_queries=" + "x" * 100_000])
    assert "max_queries: expected int, got 'xxx" in _problems(e) and len(str(e.value)) < 1000


# --------------------------------------------------------------------------------------------
# Settings accepted, then failing (or silently misread) mid-run
# --------------------------------------------------------------------------------------------


MIDRUN = [
    (TrainConfig, "train.seed=-1", "train.seed: must be an integer from 0 to 4294967295, got -1"),
    (TrainConfig, "train.seed=4294967296", "train.seed: must be an integer from 0 to 4294967295"),
    (DistillConfig, "seed=-3", "seed: must be an integer from 0 to 4294967295, got -3"),
    (TrainConfig, "train.early_stopping_patience=-1", "train.early_stopping_patience: must be >= 0"),
    (TrainConfig, "train.eval_every=-5", "train.eval_every: must be >= 0"),
    (EvalConfig, "scoring.batch_tokens=-1", "scoring.batch_tokens: must be >= 0 (0 = automatic)"),
    (ExperimentConfig, "task_level_dev_examples=-1", "task_level_dev_examples: must be >= 0"),
    (ExperimentConfig, "heldout_ce_sequences=-2", "heldout_ce_sequences: must be >= 0"),
    (ExperimentConfig, "demos_check_tasks=-1", "demos_check_tasks: must be >= 0"),
    (ExperimentConfig, "val_windows=-1", "val_windows: must be >= 0"),
    (ExperimentConfig, "task_level_eval_every=0", "task_level_eval_every: must be > 0"),
    (ExperimentConfig, "demos_check_queries=0", "demos_check_queries: must be > 0"),
    (ExperimentConfig, "train.train.seed=-1", "train.train.seed: must be an integer from 0"),
]


@pytest.mark.parametrize("cls,override,needle", MIDRUN, ids=[m[1] for m in MIDRUN])
def test_settings_that_failed_or_misread_mid_run_are_refused_at_load(cls, override, needle):
    with pytest.raises(ConfigError) as e:
        load_config(cls, overrides=[override])
    assert needle in _problems(e)


# --------------------------------------------------------------------------------------------
# experiment --status over damaged cells
# --------------------------------------------------------------------------------------------


def test_status_does_not_count_a_cell_that_the_run_would_redo(tmp_path):
    cells = Cells(tmp_path)
    cells.root.mkdir(parents=True)
    (cells.root / "listed.json").write_text("[1, 2]")  # JSON, but not a cell: get() sets it aside
    (cells.root / "fine.json").write_text('{"x": 1}')
    (cells.root / "binary.running").write_bytes(b"\xff\xfe\x00garbage")
    assert cells.state("listed") == "interrupted"  # was: done
    assert cells.state("fine") == "done"
    assert cells.state("binary") == "interrupted"  # was: UnicodeDecodeError with a traceback
    assert cells.get("listed") is None and (cells.root / "listed.json.corrupt").exists()


# --------------------------------------------------------------------------------------------
# manyicl serve
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    requests = pytest.importorskip("requests")  # noqa: F841
    from test_serve import Server, gen_task

    base = tmp_path_factory.mktemp("serve_hunt")
    roots = base / "roots"
    write_task_dir(toy_task(60), roots / "toy")
    write_task_dir(gen_task(), roots / "echo")
    s = Server(base / "state", roots, base / "server.log").start().wait()
    assert s.call("POST", "/v1/tasks", json={"path": str(roots / "toy")}).status_code == 201
    yield s
    s.stop()


def _raw(server, path: str, text: str):
    return server.call("POST", path, data=text.encode(), headers={"Content-Type": "application/json"})


INLINE = {
    "name": "inl",
    "category": "cls",
    "labels": ["pos", "neg"],
    "examples": [{"input": f"in {i}", "output": ["pos", "neg"][i % 2]} for i in range(20)],
}


def test_a_lone_surrogate_in_an_input_or_option_is_422_and_spares_its_batch(server):
    out: dict = {}

    def good():
        out["good"] = server.call("POST", "/v1/tasks/toy/predict", json={"inputs": ["fine", "also fine"]})

    t = threading.Thread(target=good)
    t.start()  # the batch waits 200 ms: the bad request would have joined it
    bad = _raw(server, "/v1/tasks/toy/predict", '{"inputs": ["ok", "a\\ud800b"]}')
    t.join()
    assert bad.status_code == 422, bad.text  # was: 500 internal error, for the whole batch
    err = bad.json()["error"]
    assert err["field"] == "inputs[1]" and "lone surrogate '\\ud800' at character 2" in err["message"]
    assert out["good"].status_code == 200, out["good"].text
    r = _raw(server, "/v1/tasks/toy/predict", '{"input": "ab", "options": ["x\\udc00", "y"]}')
    assert r.status_code == 422 and r.json()["error"]["field"] == "options[0]", r.text


def test_an_inline_example_with_a_lone_surrogate_is_located(server):
    text = json.dumps({**INLINE, "name": "surr"}).replace("in 3", "in \\ud800")
    r = _raw(server, "/v1/tasks", text)
    assert r.status_code == 422, r.text  # was: 500 (the folder write failed before the loader looked)
    (p,) = r.json()["error"]["problems"]
    assert p["where"] == "examples[3]" and p["field"] == "input" and "lone surrogate" in p["message"]


def test_a_registration_path_with_a_lone_surrogate_is_422(server):
    r = _raw(server, "/v1/tasks", '{"path": "/tmp/x\\udc80"}')
    assert r.status_code == 422 and r.json()["error"]["field"] == "path", r.text  # was: 500


@pytest.mark.parametrize("split", ["../x", "a/b"])
def test_an_inline_demo_split_that_cannot_name_a_file_is_422(server, split):
    r = server.call("POST", "/v1/tasks", json={**INLINE, "name": "sp", "settings": {"demo_split": split}})
    assert r.status_code == 422, r.text  # was: 500
    assert r.json()["error"]["field"] == "settings.demo_split"


@pytest.mark.parametrize(
    "path,body,where",
    [
        ("/v1/tasks/toy/predict", {"input": "ab", "top_k": True}, "body.top_k"),
        ("/v1/tasks/toy/predict", {"input": "ab", "top_k": "1"}, "body.top_k"),
        ("/v1/tasks", {**INLINE, "name": "b1", "settings": {"shots": True}}, "body.settings.shots"),
        ("/v1/tasks", {**INLINE, "name": "b2", "settings": {"dedup": 0}}, "body.settings.dedup"),
    ],
    ids=["top_k-true", "top_k-string", "shots-true", "dedup-0"],
)
def test_booleans_and_strings_are_not_taken_for_numbers(server, path, body, where):
    r = server.call("POST", path, json=body)
    assert r.status_code == 422, r.text  # was: 200/201 with 1 (shots: true served a one-shot prompt)
    assert any(p["where"].startswith(where) for p in r.json()["error"]["problems"])


def test_a_generation_limit_that_leaves_no_room_is_refused_at_registration(server):
    r = server.call(
        "POST",
        "/v1/tasks",
        json={
            **INLINE,
            "name": "g1",
            "category": "qa",
            "labels": None,
            "settings": {"max_new_tokens": 10**6},
        },
    )
    assert r.status_code == 422, r.text  # was: 201, then every predict 413 ("the answer options take ...")
    err = r.json()["error"]
    assert err["field"] == "settings.max_new_tokens" and "use at most 508" in err["message"]
    assert server.call("GET", "/v1/tasks/g1").status_code == 404
