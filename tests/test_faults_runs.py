"""Runs that must not silently mix, reuse or corrupt: config drift in experiments, torn cell files, stale
locks, non-finite settings, output permissions (issue: reliability, found by trying to break it)."""

import json
import os
import stat

import pytest

from manyicl.config import ExperimentConfig, TrainConfig, load_config
from manyicl.errors import ConfigError
from manyicl.experiment import Cells, _lock_holder_alive, check_settings, settings_drift


@pytest.mark.parametrize(
    "override, key",
    [
        ("optim.lr=.inf", "optim.lr"),
        ("optim.lr=.nan", "optim.lr"),
        ("lora.alpha=.nan", "lora.alpha"),
        ("train.epochs=.inf", "train.epochs"),
        ("optim.betas=[0.9, .nan]", "optim.betas"),
    ],
)
def test_non_finite_numbers_are_refused_with_the_field(override, key):
    with pytest.raises(ConfigError) as e:
        load_config(TrainConfig, "tiny", [override])
    assert key in str(e.value) and "finite" in str(e.value)


def test_negative_eps_is_refused():
    with pytest.raises(ConfigError, match="optim.eps"):
        load_config(TrainConfig, "tiny", ["optim.eps=-1"])


def test_outputs_follow_the_umask(tmp_path):
    from manyicl.fileio import atomic_dir, atomic_save, atomic_write_text

    old = os.umask(0o022)
    try:
        f = atomic_write_text(tmp_path / "a.txt", "x")
        g = atomic_save(tmp_path / "b.bin", lambda p: p.write_bytes(b"x"))
        with atomic_dir(tmp_path / "d") as d:
            (d / "x").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(f.stat().st_mode) == 0o644
    assert stat.S_IMODE(g.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755


def test_a_torn_cell_file_is_set_aside_and_redone(tmp_path):
    cells = Cells(tmp_path)
    cells.put("eval/a/b", {"rows": []})
    p = tmp_path / "cells" / "eval" / "a" / "b.json"
    p.write_text('{"rows": [1, 2')  # torn by a crash
    assert cells.get("eval/a/b") is None
    assert (p.parent / "b.json.corrupt").exists() and not p.exists()
    assert cells.state("eval/a/b") == "todo"


def test_a_stale_lock_with_a_reused_pid_is_not_running(tmp_path):
    cells = Cells(tmp_path)
    with cells.working("x"):
        assert cells.state("x") == "running"
        lock = tmp_path / "cells" / "x.running"
        assert _lock_holder_alive(lock.read_text())
    # a lock naming a live PID (our own) but another start time: the PID was reused
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(f"{os.getpid()} 12345.00\n")
    assert cells.state("x") == "interrupted"
    lock.write_text("garbage\n")
    assert cells.state("x") == "interrupted"


def _exp(tmp_path, *extra):
    return load_config(ExperimentConfig, "experiment_quick", [f"output_dir={tmp_path}", *extra])


def test_experiment_refuses_cells_made_with_other_settings(tmp_path):
    from manyicl.config import dump_yaml

    cfg = _exp(tmp_path)
    Cells(tmp_path).put("eval/no_ft/t", {"rows": []})
    (tmp_path / "config.yaml").write_text(dump_yaml(cfg))
    check_settings(tmp_path, cfg)  # same settings: fine
    check_settings(tmp_path, _exp(tmp_path, "methods=[no_ft]", "run_perplexity=false"))  # selection only
    with pytest.raises(ConfigError) as e:
        check_settings(tmp_path, _exp(tmp_path, "train.optim.lr=2e-4", "eval.max_queries=5"))
    msg = str(e.value)
    assert "train.optim.lr" in msg and "eval.max_queries" in msg and "overwrite=true" in msg
    check_settings(tmp_path, _exp(tmp_path, "train.optim.lr=2e-4", "overwrite=true"))
    assert not (tmp_path / "cells").exists()


def test_settings_drift_ignores_keys_an_older_run_did_not_have():
    assert settings_drift({"a": 1}, {"a": 1, "b": 2}) == []
    assert settings_drift({"a": {"x": 1}}, {"a": {"x": 2}}) == ["a.x: 1 -> 2"]


def test_settings_drift_from_a_saved_config(tmp_path):
    from manyicl.config import dump_yaml
    from manyicl.fileio import load_yaml

    cfg = _exp(tmp_path)
    old = load_yaml(dump_yaml(cfg))
    assert json.dumps(old)  # plain data
    assert settings_drift(old, __import__("dataclasses").asdict(cfg)) == []
