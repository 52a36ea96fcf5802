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


def test_cells_run_computes_a_cell_once_under_its_lock_and_logs_it(tmp_path, caplog):
    import logging

    cells = Cells(tmp_path)
    calls = []

    def fn():
        calls.append(cells.state("a/b"))  # the lock is held while the cell is computed
        return {"n": len(calls)}

    with caplog.at_level(logging.INFO, logger="manyicl.cells"):
        got = cells.run("a/b", fn)
    assert got == {"n": 1, "cell_wall_s": got["cell_wall_s"]} and 0 <= got["cell_wall_s"] < 5
    assert calls == ["running"] and cells.state("a/b") == "done"
    assert not (tmp_path / "cells" / "a" / "b.running").exists()
    assert [r.getMessage() for r in caplog.records] == ["finished a/b in 0 s"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="manyicl.cells"):
        assert cells.run("a/b", fn) == got  # finished: returned from disk, never redone
    assert calls == ["running"] and not caplog.records
    cells.put("empty", {})
    assert cells.run("empty", fn) == {} and len(calls) == 1  # an empty finished cell is still finished


def test_cells_run_saves_nothing_when_the_work_fails_and_redoes_it_next_time(tmp_path, caplog):
    import logging

    cells = Cells(tmp_path)

    def boom():
        raise RuntimeError("killed")

    with caplog.at_level(logging.INFO, logger="manyicl.cells"), pytest.raises(RuntimeError, match="killed"):
        cells.run("x", boom)
    assert cells.state("x") == "todo" and not caplog.records  # no cell, no lock left, no 'finished'
    assert not list((tmp_path / "cells").iterdir())
    assert cells.run("x", lambda: {"ok": True})["ok"] is True
    assert cells.get("x")["ok"] is True


def test_cells_run_redoes_a_finished_cell_that_valid_rejects(tmp_path):
    cells = Cells(tmp_path)
    cells.put("ce", {"count": 2})
    assert cells.run("ce", lambda: {"count": 3}, valid=lambda c: c["count"] == 2) == {"count": 2}
    assert cells.run("ce", lambda: {"count": 3}, valid=lambda c: c["count"] == 3)["count"] == 3
    assert cells.get("ce")["count"] == 3  # replaced on disk


def test_cells_record_their_wall_time_and_sum_it(tmp_path, monkeypatch):
    import manyicl.cells as cells_mod

    clock = iter([100.0, 160.0, 200.0, 290.0])
    monkeypatch.setattr(cells_mod.time, "perf_counter", lambda: next(clock))
    cells = Cells(tmp_path)
    assert cells.recorded_wall_s() == (0.0, 0, 0)
    cells.run("eval/a", lambda: {"rows": []})
    cells.run("train/b", lambda: {"rows": []})
    cells.put("old", {"rows": []})  # a cell made before wall times were kept
    assert cells.get("eval/a")["cell_wall_s"] == 60.0
    assert cells.recorded_wall_s() == (150.0, 2, 3)
    # a training resumed from a checkpoint: the cell timed only its last run, the training all of them
    cells.put("train/c", {"summary": {"wall_s": 1000.0}, "cell_wall_s": 40.0})
    assert cells.recorded_wall_s() == (1150.0, 3, 4)


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


def test_experiment_refuses_cells_whose_config_yaml_is_torn(tmp_path):
    """Cells with a config.yaml that no longer parses cannot be shown to match these settings: refused
    (as distill and icl-preserve do), not taken as a match."""
    Cells(tmp_path).put("eval/no_ft/t", {"rows": []})
    (tmp_path / "config.yaml").write_text("train: {model: [unclosed\n")
    with pytest.raises(ConfigError, match="config.yaml unreadable"):
        check_settings(tmp_path, _exp(tmp_path))
    check_settings(tmp_path, _exp(tmp_path, "overwrite=true"))
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


# --------------------------------------------------------------------------------------------
# Training folders: reuse, concurrency, corrupt checkpoints, torn metrics, changed data, costs
# --------------------------------------------------------------------------------------------


def _train_cfg(out, **over):
    args = [f"output_dir={out}", "progress=false", "train.save_every=2", "train.keep_checkpoints=5"]
    return load_config(TrainConfig, "tiny", args + [f"{k}={v}" for k, v in over.items()])


def _run(cfg, n=60):
    from manyicl.data import build_training_data
    from manyicl.train import prepare_model, train

    from conftest import toy_task

    model, tok = prepare_model(cfg)
    return train(cfg, data=build_training_data([toy_task(n)], tok, cfg.data), model=model, tokenizer=tok)


def test_a_folder_holding_a_run_is_refused_without_resume_or_overwrite(tmp_path):
    cfg = _train_cfg(tmp_path, **{"train.max_steps": 2})
    _run(cfg)
    with pytest.raises(ConfigError, match="already holds a training run") as e:
        _run(cfg)
    assert "--resume" in str(e.value) and "overwrite=true" in str(e.value)
    cfg.overwrite = True
    res = _run(cfg)
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2] and res.summary["steps"] == 2  # not mixed with the first run's lines


def test_a_second_process_on_the_same_folder_is_refused(tmp_path):
    from manyicl.errors import ManyICLError
    from manyicl.fileio import exclusive_lock

    with exclusive_lock(tmp_path, "training"):
        with pytest.raises(ManyICLError, match="in use by pid"):
            with exclusive_lock(tmp_path, "training"):
                pass
    with exclusive_lock(tmp_path, "training"):  # released: free again
        pass


@pytest.mark.parametrize(
    "damage",
    [
        "truncate_weights",
        "empty_weights",
        "delete_weights",
        "flip_byte",
        "truncate_optimizer",
        "truncate_state",
    ],
)
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, damage, caplog):
    cfg = _train_cfg(tmp_path, **{"train.max_steps": 6, "train.stop_after_steps": 4})
    _run(cfg)
    newest = tmp_path / "checkpoints" / "step-000004"
    w, o, s = newest / "trainable.safetensors", newest / "optimizer.pt", newest / "state.json"
    if damage == "truncate_weights":
        w.write_bytes(w.read_bytes()[:100])
    elif damage == "empty_weights":
        w.write_bytes(b"")
    elif damage == "delete_weights":
        w.unlink()
    elif damage == "flip_byte":
        b = bytearray(w.read_bytes())
        b[-5] ^= 0xFF
        w.write_bytes(bytes(b))
    elif damage == "truncate_optimizer":
        o.write_bytes(o.read_bytes()[:50])
    else:
        s.write_text(s.read_text()[:40])
    cfg = _train_cfg(tmp_path, **{"train.max_steps": 6})
    cfg.resume = True
    with caplog.at_level("WARNING"):
        res = _run(cfg)
    assert "step-000004 is damaged" in caplog.text
    assert res.summary["resumed_from_step"] == 2


def test_a_torn_metrics_line_does_not_block_resume(tmp_path):
    cfg = _train_cfg(tmp_path, **{"train.max_steps": 4, "train.stop_after_steps": 2})
    _run(cfg)
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "lo')  # killed mid-write
    cfg = _train_cfg(tmp_path, **{"train.max_steps": 4})
    cfg.resume = True
    _run(cfg)
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_resume_refuses_changed_task_data(tmp_path):
    cfg = _train_cfg(tmp_path, **{"train.max_steps": 4, "train.stop_after_steps": 2})
    _run(cfg, n=60)
    cfg = _train_cfg(tmp_path, **{"train.max_steps": 4})
    cfg.resume = True
    with pytest.raises(ConfigError, match="training data changed"):
        _run(cfg, n=40)  # 20 examples deleted between kill and resume


def test_costs_add_up_over_a_resume(tmp_path):
    full = _run(_train_cfg(tmp_path / "a", **{"train.max_steps": 4}))
    cfg = _train_cfg(tmp_path / "b", **{"train.max_steps": 4, "train.stop_after_steps": 2})
    _run(cfg)
    cfg = _train_cfg(tmp_path / "b", **{"train.max_steps": 4})
    cfg.resume = True
    res = _run(cfg)
    assert res.summary["tokens_processed"] == full.summary["tokens_processed"]
    assert res.summary["supervised_tokens"] == full.summary["supervised_tokens"]
    # killed after the final checkpoint, before train_summary.json: the counters and loss survive
    (tmp_path / "b" / "train_summary.json").unlink()
    again = _run(cfg)
    assert again.summary["tokens_processed"] == full.summary["tokens_processed"]
    assert again.summary["final_loss"] == again.summary["final_loss"]  # not NaN


def test_a_resume_that_changes_the_precision_records_both_parts(tmp_path, monkeypatch, caplog):
    """`dtype: auto` is float32 on an AVX2 CPU and bfloat16 on one with native bf16: a run resumed on the
    other kind of machine says which steps ran in which precision, instead of naming only the last one."""
    import manyicl.modeling

    cfg = _train_cfg(tmp_path, **{"train.max_steps": 4, "train.stop_after_steps": 2, "model.dtype": "auto"})
    monkeypatch.setattr(manyicl.modeling, "cpu_has_native_bf16", lambda: False)
    _run(cfg)
    monkeypatch.setattr(manyicl.modeling, "cpu_has_native_bf16", lambda: True)
    cfg = _train_cfg(tmp_path, **{"train.max_steps": 4, "model.dtype": "auto"})
    cfg.resume = True
    with caplog.at_level("WARNING", logger="manyicl.train"):
        res = _run(cfg)
    assert res.summary["dtype"] == "float32 (steps 1-2) + bfloat16 (steps 3-4)"
    assert res.summary["dtype_segments"] == [[1, "float32"], [3, "bfloat16"]]
    assert "steps 1-2 ran in float32" in caplog.text and "model.dtype explicitly" in caplog.text
    same = _run_same_dtype(tmp_path / "same", monkeypatch)
    assert same.summary["dtype"] == "float32" and same.summary["dtype_segments"] == [[1, "float32"]]


def _run_same_dtype(out, monkeypatch):
    import manyicl.modeling

    monkeypatch.setattr(manyicl.modeling, "cpu_has_native_bf16", lambda: False)
    _run(_train_cfg(out, **{"train.max_steps": 4, "train.stop_after_steps": 2, "model.dtype": "auto"}))
    cfg = _train_cfg(out, **{"train.max_steps": 4, "model.dtype": "auto"})
    cfg.resume = True
    return _run(cfg)


@pytest.mark.parametrize("kind", ["file", "dangling", "empty", "readonly"])
def test_bad_output_folders_fail_first_with_the_field(tmp_path, kind):
    from manyicl.fileio import check_output_dir

    target = tmp_path / "out"
    if kind == "file":
        target.write_text("x")
    elif kind == "dangling":
        target.symlink_to(tmp_path / "missing")
    elif kind == "empty":
        target = ""
    else:
        if os.geteuid() == 0:
            pytest.skip("root can write anywhere")
        target.mkdir()
        target.chmod(0o500)
    with pytest.raises(ConfigError, match="output_dir"):
        check_output_dir(str(target))


def test_tilde_in_output_dir_is_the_home_folder(tmp_path, monkeypatch):
    from manyicl.fileio import check_output_dir

    monkeypatch.setenv("HOME", str(tmp_path))
    assert check_output_dir("~/runs/x") == tmp_path / "runs" / "x"
    assert not (tmp_path / "~").exists()


# --------------------------------------------------------------------------------------------
# Prompt caches on disk
# --------------------------------------------------------------------------------------------


def _saved_cache(tmp_path, tok, model):
    from manyicl.caching import PromptCache, model_key

    ids = tok("Text: a\nLabel: b\nText: c\nLabel:", add_special_tokens=False)["input_ids"]
    key = model_key(model, "tiny", None, tok)
    return PromptCache(model, ids).save(tmp_path / "c.safetensors", key), ids, key


def test_a_cache_from_another_model_with_the_same_config_is_refused(tmp_path, tok, model):
    from manyicl.caching import PromptCache, model_key
    from manyicl.errors import ManyICLError
    from manyicl.modeling import tiny_model

    path, ids, _ = _saved_cache(tmp_path, tok, model)
    other = tiny_model(len(tok), seed=123).eval()  # same config, other weights
    with pytest.raises(ManyICLError, match="weights_sha256"):
        PromptCache.load(path, other, model_key(other, "tiny", None, tok), prompt_ids=ids)


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "random", "no_prompt_ids", "missing_layer"])
def test_a_damaged_cache_file_is_refused_with_a_message(tmp_path, tok, model, damage):
    from safetensors.torch import load_file, save_file

    from manyicl.caching import PromptCache
    from manyicl.errors import ManyICLError

    path, ids, key = _saved_cache(tmp_path, tok, model)
    raw = path.read_bytes()
    if damage == "flip":
        b = bytearray(raw)
        b[-3] ^= 0x01
        path.write_bytes(bytes(b))
    elif damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "random":
        path.write_bytes(os.urandom(4096))
    else:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            md = dict(f.metadata())
        tensors = load_file(str(path))
        if damage == "no_prompt_ids":
            md.pop("prompt_ids")
        else:
            tensors = {k: v for k, v in tensors.items() if not k.startswith("layer.0.")}
        save_file(tensors, str(path), metadata=md)
    with pytest.raises(ManyICLError) as e:
        PromptCache.load(path, model, key, prompt_ids=ids)
    assert str(path) in str(e.value) and (
        "delete it" in str(e.value) or "layers" in str(e.value) or "shapes" in str(e.value)
    )


# --------------------------------------------------------------------------------------------
# Tasks, adapters, huge inputs, memory
# --------------------------------------------------------------------------------------------


def test_a_folder_task_named_like_a_synthetic_task_is_refused(tmp_path):
    from manyicl.config import TaskSourceConfig
    from manyicl.data import load_tasks
    from manyicl.errors import TaskFormatError
    from manyicl.synthetic import synthetic_suite
    from manyicl.tasks import write_task_dir

    clash = synthetic_suite(seed=0, instances=1, train_size=20, test_size=5, split="held_in")[0]
    write_task_dir(clash, tmp_path / "mine")
    src = TaskSourceConfig(synthetic=True, synthetic_instances=1, dirs=[str(tmp_path)], include=[clash.name])
    with pytest.raises(TaskFormatError, match="two tasks have this name") as e:
        load_tasks(src)
    assert str(tmp_path / "mine") in str(e.value)


def test_a_training_task_whose_examples_are_all_too_long_is_reported(tok):
    from manyicl.config import DataConfig
    from manyicl.data import build_training_data
    from manyicl.errors import TaskFormatError
    from manyicl.tasks import Example

    from conftest import toy_task

    t = toy_task(10)
    t.splits["train"] = [Example("word " * 300, "red") for _ in range(5)]
    with pytest.raises(TaskFormatError, match="would vanish from training"):
        build_training_data([t], tok, DataConfig(max_length=64, on_overlong="skip"))


@pytest.mark.parametrize("damage", ["truncated_weights", "bad_json", "not_peft"])
def test_damaged_adapters_get_a_message_not_a_traceback(tmp_path, tok, damage):
    from manyicl.errors import ManyICLError
    from manyicl.modeling import load_adapter, tiny_model

    res = _run(_train_cfg(tmp_path / "t", **{"train.max_steps": 1, "train.save_every": 0}))
    ad = res.final_dir
    if damage == "truncated_weights":
        w = ad / "adapter_model.safetensors"
        w.write_bytes(w.read_bytes()[:64])
        want = "unreadable"
    elif damage == "bad_json":
        (ad / "adapter_config.json").write_text('{"peft_type": "LORA", ')
        want = "not a valid PEFT adapter config"
    else:
        (ad / "adapter_config.json").write_text('{"hello": 1}')
        want = "not a valid PEFT adapter config"
    with pytest.raises(ManyICLError, match=want):
        load_adapter(tiny_model(len(tok)), ad)


def test_a_huge_example_is_cut_before_it_is_tokenized(tok):
    import time

    from manyicl.tasks import Example
    from manyicl.templates import tokenize_task

    from conftest import toy_task

    t = toy_task(10)
    t.splits["train"] = t.splits["train"] + [Example("word " * 1_000_000, "red")]  # 5 MB of text
    t0 = time.perf_counter()
    tt = tokenize_task(t, tok, "train", 256, "truncate_input")
    assert time.perf_counter() - t0 < 5
    assert tt.truncated == 1 and len(tt.header) + len(tt.query[-1]) + len(tt.target[-1]) <= 256
    text = tok.decode(tt.query[-1].tolist())
    assert "word word" in text and text.rstrip().endswith("Label:")  # the input's end, then the template


def test_the_memory_estimate_counts_the_packed_attention_mask():
    from manyicl.memory import estimate_training_mb
    from manyicl.modeling import tiny_model

    cfgm = tiny_model(300).config
    small = estimate_training_mb(cfgm, "float32", 1024, 10, ["q_proj"], 1000, False, 1024**2)
    huge = estimate_training_mb(cfgm, "float32", 183_000, 10, ["q_proj"], 1000, False, 183_000**2)
    assert small["attention_mask_mb"] == 1.0
    assert huge["attention_mask_mb"] > 30_000  # the 33 GB allocation that crashed before


def test_an_absurd_lora_rank_is_refused_before_peft(tok):
    from manyicl.config import LoraConfig
    from manyicl.modeling import apply_lora, tiny_model

    with pytest.raises(ConfigError, match="lora.r"):
        apply_lora(tiny_model(len(tok)), LoraConfig(r=100_000_000, target_modules=["q_proj", "v_proj"]))


def test_the_memory_budget_respects_a_cgroup_limit(monkeypatch):
    import manyicl.memory as mem

    monkeypatch.setattr(mem, "cgroup_free_bytes", lambda: 512 * 2**20)
    assert mem.available_mb("cpu") <= 512


def test_adapter_labels_cannot_name_paths_outside_the_output_folder():
    from manyicl.config import EvalConfig

    with pytest.raises(ConfigError, match="not a safe name"):
        load_config(EvalConfig, "eval_synthetic", ["adapters={../../victim: null}"])
    load_config(EvalConfig, "eval_synthetic", ["adapters={base: null, many_shot_all.v2: null}"])


def test_stale_temp_files_of_a_killed_run_are_cleaned(tmp_path):
    cfg = _train_cfg(tmp_path, **{"train.max_steps": 2})
    (tmp_path / "checkpoints" / ".step-000002.abc").mkdir(parents=True)
    (tmp_path / ".adapter.xyz").mkdir()
    (tmp_path / ".metrics.jsonl.123.tmp").write_text("x")
    _run(cfg)
    assert not list(tmp_path.glob(".adapter.*")) and not list(tmp_path.glob(".*.tmp"))
    assert not list((tmp_path / "checkpoints").glob(".step-*"))
