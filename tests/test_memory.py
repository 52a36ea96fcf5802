"""Memory guard: a run that cannot fit is refused before any work, naming settings that would fit;
``allow_memory_overrun`` lets it go on; the estimate is reported next to the measured peak."""

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from manyicl import memory
from manyicl.config import EvalConfig, TrainConfig, load_config
from manyicl.data import build_training_data
from manyicl.errors import ManyICLError
from manyicl.evaluate import evaluate
from manyicl.memory import HEADROOM, MemoryGuardError, training_guard
from manyicl.train import prepare_model, train

from conftest import toy_task


def _meta_7b(dtype=torch.float32):
    """A Llama-7B-shaped model on the meta device: real shapes, no memory."""
    cfg = LlamaConfig(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
    )
    with torch.device("meta"):
        return LlamaForCausalLM(cfg).to(dtype)


class _W:
    """A stand-in training window: only its length and supervised tokens matter to the estimate."""

    def __init__(self, n, sup):
        self.n, self.supervised_tokens = n, sup

    def __len__(self):
        return self.n


def _train_cfg(tmp_path, *over):
    return load_config(TrainConfig, "tiny", [f"output_dir={tmp_path}", "progress=false", *over])


def test_full_ft_of_a_7b_model_on_24_gb_is_refused_with_fixes_that_fit(tmp_path):
    cfg = _train_cfg(tmp_path, "lora.enabled=false", "data.max_length=2048", "train.micro_batch_size=2")
    windows = [_W(2048, 400)]
    model = _meta_7b()
    budget = 24 * 1024
    with pytest.raises(MemoryGuardError) as e:
        _guard_with_budget(model, cfg, windows, budget)
    msg = str(e.value)
    assert "training needs about" in msg and "train.allow_memory_overrun=true" in msg
    assert "weights" in msg and "activations" in msg  # the breakdown
    assert "Settings that would fit:" in msg
    # every setting named as fitting does fit
    fixes = msg.split("Settings that would fit: ")[1].split(". To run anyway")[0].split("; ")
    assert fixes
    for f in fixes:
        mb = float(f.rsplit("(~", 1)[1].split(" MB")[0].replace(",", ""))
        assert mb <= HEADROOM * budget, f


def _guard_with_budget(model, cfg, windows, budget, allow=False):
    orig = memory.budget_mb
    memory.budget_mb = lambda device="cpu": budget
    try:
        return training_guard(model, cfg, windows, "cpu", allow=allow)
    finally:
        memory.budget_mb = orig


def test_estimates_move_the_way_the_settings_say():
    cfg = load_config(TrainConfig, "tiny", ["lora.enabled=false"])
    model, windows = _meta_7b(torch.bfloat16), [_W(4096, 800)]
    big = 10**9
    full = _guard_with_budget(model, cfg, windows, big)
    ckpt = _guard_with_budget(
        model,
        load_config(TrainConfig, "tiny", ["lora.enabled=false", "train.gradient_checkpointing=true"]),
        windows,
        big,
    )
    short = _guard_with_budget(model, cfg, [_W(1024, 200)], big)
    assert ckpt["activations_mb"] < full["activations_mb"] / 5
    assert short["activations_mb"] == pytest.approx(full["activations_mb"] / 4, rel=0.01)
    assert full["trainable_state_mb"] == pytest.approx(3 * full["weights_mb"], rel=0.01)  # grads + 2 moments
    # 7B in bf16 is ~12.5 GiB of weights
    assert 12_000 < full["weights_mb"] < 13_500
    assert full["fits"] and full["budget_mb"] == big


def test_training_refused_before_the_first_step_and_allowed_on_request(tmp_path, tok, monkeypatch):
    monkeypatch.setattr(memory, "budget_mb", lambda device="cpu": 50.0)
    cfg = _train_cfg(tmp_path / "a", "train.max_steps=2", "train.save_every=0")
    model, tok = prepare_model(cfg)
    data = build_training_data([toy_task(40)], tok, cfg.data)
    with pytest.raises(ManyICLError, match="train.allow_memory_overrun=true"):
        train(cfg, data=data, model=model, tokenizer=tok)
    assert not (tmp_path / "a" / "metrics.jsonl").exists()  # refused before any step

    cfg = _train_cfg(
        tmp_path / "b", "train.max_steps=2", "train.save_every=0", "train.allow_memory_overrun=true"
    )
    res = train(cfg, data=data, model=model, tokenizer=tok)
    mem = json.loads((tmp_path / "b" / "train_summary.json").read_text())["memory"]
    assert mem == json.loads(json.dumps(res.summary["memory"]))
    assert mem["estimate"]["total_mb"] > 0 and mem["estimate"]["fits"] is False
    assert mem["measured"]["peak_rss_mb"] > 0


def test_evaluation_refused_before_any_prompt_and_allowed_on_request(tmp_path, tok, model, monkeypatch):
    monkeypatch.setattr(memory, "budget_mb", lambda device="cpu": 50.0)
    over = ["max_length=256", "seeds=[0]", "max_queries=4", "shots=[0,1]", "plots=false", "progress=false"]
    cfg = load_config(EvalConfig, None, [f"output_dir={tmp_path / 'a'}", *over])
    with pytest.raises(ManyICLError, match="evaluation needs about .*allow_memory_overrun=true"):
        evaluate(cfg, model=model, tokenizer=tok, tasks=[toy_task(30)])
    assert not (tmp_path / "a" / "results.json").exists()
    cfg = load_config(EvalConfig, None, [f"output_dir={tmp_path / 'b'}", *over, "allow_memory_overrun=true"])
    res = evaluate(cfg, model=model, tokenizer=tok, tasks=[toy_task(30)])
    saved = json.loads((tmp_path / "b" / "results.json").read_text())["memory"]
    assert saved["estimate"]["kv_cache_mb"] >= 0 and saved["measured"]["peak_rss_mb"] > 0
    assert res.memory["estimate"]["fits"] is False
    assert "Memory: estimated" in (tmp_path / "b" / "report.md").read_text()


def test_nothing_fits_says_so(tmp_path):
    cfg = _train_cfg(tmp_path, "lora.enabled=false")
    with pytest.raises(MemoryGuardError, match="No setting tried here fits .*smaller model"):
        _guard_with_budget(_meta_7b(), cfg, [_W(1024, 100)], 1000.0)


def test_cli_refusal_is_a_message_not_a_traceback(tmp_path, capsys, monkeypatch):
    from manyicl.cli import main

    monkeypatch.setattr(memory, "budget_mb", lambda device="cpu": 50.0)
    args = ["-q", "train", "tiny", f"output_dir={tmp_path / 'run'}", "progress=false", "train.max_steps=1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "training needs about" in err and "train.allow_memory_overrun=true" in err
    assert "Traceback" not in err
    assert main([*args, "train.allow_memory_overrun=true"]) == 0
