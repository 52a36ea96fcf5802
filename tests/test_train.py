import numpy as np
import pytest
import torch
import torch.nn.functional as F

from manyicl.config import LoraConfig, TrainConfig, load_config
from manyicl.data import build_training_data
from manyicl.modeling import apply_lora
from manyicl.packing import build_task_sequences, collate, pack_windows
from manyicl.templates import tokenize_task
from manyicl.train import StepSchedule, prepare_model, supervised_loss_sum, train

from conftest import toy_task


def _windows(tok, n_seq=8, shots=2, max_length=256, seed=0):
    tt = tokenize_task(toy_task(), tok, "train", max_length)
    seqs, _ = build_task_sequences(
        tt, shots, "mask_all_targets", max_length, n_seq, np.random.default_rng(seed)
    )
    return seqs


def test_loss_equals_hand_computed_cross_entropy(tok, model):
    seqs = _windows(tok, n_seq=3)
    batch = collate(pack_windows(seqs, 256, pack_short=True)[:1])
    loss_sum, n = supervised_loss_sum(model, batch, "cpu")
    # by hand: each sequence on its own, full logits, CE at every supervised token
    want, count = 0.0, 0
    for s in pack_windows(seqs, 256, pack_short=True)[0].sequences:
        ids = torch.tensor(s.ids)[None]
        logits = model(input_ids=ids).logits[0].float()
        for t in np.flatnonzero(s.loss_mask):
            want += F.cross_entropy(logits[t - 1], ids[0, t]).item()
            count += 1
    assert n == count
    assert loss_sum.item() == pytest.approx(want, rel=1e-5)


def test_packed_equals_separate_logits(tok, model):
    seqs = _windows(tok, n_seq=3)
    b = collate(pack_windows(seqs, 1024, pack_short=True)[:1])
    assert b.n_sequences == 3
    with torch.no_grad():
        packed = model(
            input_ids=torch.tensor(b.input_ids),
            position_ids=torch.tensor(b.position_ids),
            use_cache=False,
        ).logits[0]
        sep = torch.cat([model(input_ids=torch.tensor(s.ids)[None]).logits[0] for s in seqs])
    assert torch.allclose(packed, sep, atol=1e-5)
    # ...and with the default use_cache=True transformers would NOT isolate the documents:
    with torch.no_grad():
        leaky = model(
            input_ids=torch.tensor(b.input_ids),
            position_ids=torch.tensor(b.position_ids),
            use_cache=True,
        ).logits[0]
    assert not torch.allclose(leaky, sep, atol=1e-3)


def _lora_grads(model, batches, total_sup):
    model.zero_grad()
    for b in batches:
        loss, _ = supervised_loss_sum(model, b, "cpu")
        (loss / total_sup).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_one_batch_of_8_equals_8_batches_of_1(tok, model):
    torch.manual_seed(0)
    m = apply_lora(model, LoraConfig(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"]))
    # make lora_B non-zero so every LoRA matrix gets a gradient
    for n, p in m.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.02)
    windows = pack_windows(_windows(tok, n_seq=8), 256, pack_short=False)
    total = sum(w.supervised_tokens for w in windows)
    g_big = _lora_grads(m, [collate(windows)], total)
    g_small = _lora_grads(m, [collate([w]) for w in windows], total)
    g_rows = _lora_grads(m, [collate(windows, "rows")], total)  # the GPU layout: one padded row per window
    for k in g_big:
        assert torch.allclose(g_big[k], g_small[k], atol=1e-6, rtol=1e-4), k
        assert torch.allclose(g_big[k], g_rows[k], atol=1e-6, rtol=1e-4), k


def test_schedule_is_identical_across_world_and_accumulation():
    one = StepSchedule(37, world=1, accum=4, micro=2, seed=0)
    two = StepSchedule(37, world=2, accum=2, micro=2, seed=0)
    for step in range(12):
        a = sorted(i for r in one.step_indices(step) for m in r for i in m)
        b = sorted(i for r in two.step_indices(step) for m in r for i in m)
        assert a == b


def _tiny_cfg(tmp_path, **over):
    args = [f"output_dir={tmp_path}", "progress=false"] + [f"{k}={v}" for k, v in over.items()]
    return load_config(TrainConfig, "tiny", args)


def _toy_data(cfg, tok):
    return build_training_data([toy_task(60)], tok, cfg.data)


def test_train_end_to_end_writes_a_peft_adapter(tmp_path, tok):
    from peft import PeftModel

    from manyicl.modeling import tiny_model

    cfg = _tiny_cfg(tmp_path / "run", **{"train.max_steps": 4, "train.save_every": 0})
    model, tok = prepare_model(cfg)
    res = train(cfg, data=_toy_data(cfg, tok), model=model, tokenizer=tok)
    assert (res.final_dir / "adapter_model.safetensors").exists()
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") == 4
    loaded = PeftModel.from_pretrained(tiny_model(len(tok)), str(res.final_dir))
    trained = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    for n, p in loaded.named_parameters():
        if "lora_B" in n:
            assert torch.equal(p, trained[n].detach())
    assert res.summary["supervised_tokens"] > 0 and res.summary["final_loss"] > 0


def _final_weights(run_dir):
    from safetensors.torch import load_file

    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def test_resume_after_a_stop_gives_the_same_weights(tmp_path, tok):
    over = {"train.max_steps": 6, "train.save_every": 0, "lora.dropout": 0.1}
    a = _tiny_cfg(tmp_path / "a", **over)
    model, tok = prepare_model(a)
    train(a, data=_toy_data(a, tok), model=model, tokenizer=tok)

    b = _tiny_cfg(tmp_path / "b", **over, **{"train.stop_after_steps": 2})
    for _ in range(3):  # three invocations of 2 steps, each a fresh process-like start
        model, tok = prepare_model(b)
        train(b, data=_toy_data(b, tok), model=model, tokenizer=tok)
        b.resume = True
    wa, wb = _final_weights(tmp_path / "a"), _final_weights(tmp_path / "b")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_resume_refuses_a_changed_config(tmp_path, tok):
    from manyicl.errors import ConfigError

    a = _tiny_cfg(tmp_path, **{"train.max_steps": 4, "train.stop_after_steps": 2})
    model, tok = prepare_model(a)
    train(a, data=_toy_data(a, tok), model=model, tokenizer=tok)
    b = _tiny_cfg(tmp_path, **{"train.max_steps": 4, "optim.lr": 0.5})
    b.resume = True
    model, tok = prepare_model(b)
    with pytest.raises(ConfigError, match="optim"):
        train(b, data=_toy_data(b, tok), model=model, tokenizer=tok)


def _run(cmd, cwd, timeout=300):
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


@pytest.mark.slow
def test_two_process_ddp_equals_one_process_with_accumulation(tmp_path, task):
    """torchrun (gloo on CPU) with 2 processes x accum 1 == 1 process x accum 2, step for step."""
    import shutil
    import sys

    from manyicl.tasks import write_task_dir

    torchrun = shutil.which("torchrun", path=str(__import__("pathlib").Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not found next to the interpreter")
    write_task_dir(toy_task(60), tmp_path / "tasks" / "toy")
    common = [
        "data.tasks.synthetic=false",
        f"data.tasks.dirs=[{tmp_path / 'tasks'}]",
        "train.max_steps=3",
        "train.save_every=0",
        "progress=false",
    ]
    _run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "manyicl",
            "-q",
            "train",
            "tiny",
            f"output_dir={tmp_path / 'ddp'}",
            "train.grad_accum=1",
            *common,
        ],
        cwd=tmp_path,
    )
    _run(
        [
            sys.executable,
            "-m",
            "manyicl",
            "-q",
            "train",
            "tiny",
            f"output_dir={tmp_path / 'single'}",
            "train.grad_accum=2",
            *common,
        ],
        cwd=tmp_path,
    )
    import json

    s_ddp = json.loads((tmp_path / "ddp" / "train_summary.json").read_text())
    s_one = json.loads((tmp_path / "single" / "train_summary.json").read_text())
    assert s_ddp["processes"] == 2 and s_one["processes"] == 1
    assert s_ddp["supervised_tokens"] == s_one["supervised_tokens"]
    wd, ws = _final_weights(tmp_path / "ddp"), _final_weights(tmp_path / "single")
    for k in wd:
        assert torch.allclose(wd[k], ws[k], atol=1e-5, rtol=1e-4), k
