"""Training speed and memory vs TRL's SFTTrainer on the same many-shot sequences, side by side in one run.

Both train SmolLM2-135M (bf16 weights) with the same LoRA (r=16, alpha=32, q/v, no dropout), AdamW,
constant LR, one many-shot window per step, loss only on the supervised (target) tokens:

  manyicl   our loop: logits only at supervised positions, no padding, cross-entropy in chunks of
            train.loss_chunk_tokens (1,024, the default) supervised positions
  manyicl_unchunked  the same loop with loss_chunk_tokens=0: what the chunks cost where a window has more
            supervised positions than one chunk (8K); below that both run the same code
  trl       SFTTrainer with a pre-tokenized dataset (input_ids + completion_mask, completion_only_loss)
            and padding_free=True, gradient checkpointing off (SFTConfig turns it on by default)

Each engine runs in its own process so peak RSS is its own. Tokens/s excludes the first (warm-up) step.

    python benchmarks/bench_train_vs_trl.py [--lengths 2048,8192] [--steps 3] [--engines ours,ours_unchunked,trl]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).parent / "results"
ENGINES = ("ours", "ours_unchunked", "trl")
LORA = {"r": 16, "alpha": 32.0, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


def build_windows(length: int, n: int):
    from manyicl.config import DataConfig, ModelConfig, TaskSourceConfig
    from manyicl.data import build_training_data, load_tasks
    from manyicl.modeling import load_tokenizer

    tok = load_tokenizer(ModelConfig())
    src = TaskSourceConfig(synthetic=True, split="held_in", synthetic_instances=1, synthetic_train_size=800)
    cfg = DataConfig(
        tasks=src,
        max_length=length,
        shots="max",
        objective="mask_all_targets",
        sequences_per_task=1,
        pack_short=False,
    )
    data = build_training_data(load_tasks(src), tok, cfg)
    return data.windows[:n], tok


def run_ours(length: int, steps: int, chunk: int | None = None) -> dict:
    """Our loop; ``chunk`` None takes train.loss_chunk_tokens' default, 0 turns chunking off."""
    import torch

    from manyicl.config import LoraConfig, ModelConfig
    from manyicl.config_parts import TrainLoopConfig
    from manyicl.memory import PeakMemory
    from manyicl.modeling import apply_lora, load_model
    from manyicl.packing import collate
    from manyicl.train import supervised_loss_sum

    chunk = TrainLoopConfig().loss_chunk_tokens if chunk is None else chunk
    windows, _ = build_windows(length, steps + 1)
    model, _ = load_model(ModelConfig())
    torch.manual_seed(0)
    model = apply_lora(model, LoraConfig(**LORA))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times, tokens = [], []
    with PeakMemory() as mem:
        for w in windows:
            t0 = time.perf_counter()
            b = collate([w])
            loss, n = supervised_loss_sum(model, b, "cpu", chunk=chunk)
            (loss / max(n, 1)).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t0)
            tokens.append(len(w))
    out = _summary("manyicl" if chunk else "manyicl_unchunked", length, times, tokens, mem)
    out["loss_chunk_tokens"] = chunk
    out["supervised_tokens_per_window"] = [int(w.sequences[0].loss_mask.sum()) for w in windows]
    return out


def run_trl(length: int, steps: int) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from manyicl.config import LoraConfig, ModelConfig
    from manyicl.memory import PeakMemory
    from manyicl.modeling import apply_lora, load_model

    windows, tok = build_windows(length, steps + 1)
    seqs = [w.sequences[0] for w in windows]
    ds = Dataset.from_dict(
        {
            "input_ids": [s.ids.tolist() for s in seqs],
            "completion_mask": [s.loss_mask.astype(int).tolist() for s in seqs],
        }
    )
    model, _ = load_model(ModelConfig())
    torch.manual_seed(0)
    model = apply_lora(model, LoraConfig(**LORA))
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t0)

    args = SFTConfig(
        output_dir=os.environ.get("TMPDIR", "/tmp") + "/trl_bench",
        max_steps=len(seqs),
        per_device_train_batch_size=1,
        gradient_accumulation_steps=1,
        learning_rate=1e-4,
        lr_scheduler_type="constant",
        optim="adamw_torch",
        bf16=False,  # the weights are already bf16, as in our run; no autocast on top
        gradient_checkpointing=False,
        completion_only_loss=True,
        padding_free=True,
        max_length=None,  # our windows already fit; TRL refuses max_length with padding_free and no packing
        logging_steps=1000,
        save_strategy="no",
        report_to=[],
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        shuffle_dataset=False,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[Timer()])
    with PeakMemory() as mem:
        trainer.train()
    return _summary("trl", length, times, [len(s) for s in seqs], mem)


def _summary(engine: str, length: int, times: list[float], tokens: list[int], mem) -> dict:
    measured = times[1:] or times
    toks = tokens[1 : 1 + len(measured)] if len(times) > 1 else tokens
    return {
        "engine": engine,
        "length": length,
        "steps_measured": len(measured),
        "tokens_per_s": sum(toks) / sum(measured),
        "train_peak_rss_mb": mem.peak_rss_mb,
        "train_delta_rss_mb": mem.delta_rss_mb,
        "process_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="2048,8192")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--engines", default="ours,ours_unchunked,trl", help="which to run, side by side")
    ap.add_argument("--engine", choices=ENGINES, help="(internal) run one engine in this process")
    ap.add_argument("--length", type=int)
    a = ap.parse_args()
    if a.engine:
        if a.engine == "trl":
            res = run_trl(a.length, a.steps)
        else:
            res = run_ours(a.length, a.steps, chunk=0 if a.engine == "ours_unchunked" else None)
        print("RESULT " + json.dumps(res), flush=True)
        return 0
    from manyicl.fileio import atomic_write_json

    engines = [e for e in a.engines.split(",") if e]
    bad = [e for e in engines if e not in ENGINES]
    if bad:
        print(f"--engines: unknown {bad}; choose from {list(ENGINES)}", file=sys.stderr)
        return 2
    rows = []
    for length in [int(x) for x in a.lengths.split(",")]:
        got = {}
        for engine in engines:
            p = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--engine",
                    engine,
                    "--length",
                    str(length),
                    "--steps",
                    str(a.steps),
                ],
                capture_output=True,
                text=True,
            )
            line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                print(p.stdout[-2000:], p.stderr[-4000:], file=sys.stderr)
                return 1
            rows.append(json.loads(line[7:]))
            got[engine] = rows[-1]
            print(json.dumps(rows[-1]), flush=True)
        for a_name, b_name, kind in (("ours", "trl", "ratio"), ("ours", "ours_unchunked", "chunk_ratio")):
            if a_name in got and b_name in got:
                x, y = got[a_name], got[b_name]
                rows.append(
                    {
                        "engine": kind,
                        "of": f"{a_name}/{b_name}",
                        "length": length,
                        "speedup": x["tokens_per_s"] / y["tokens_per_s"],
                        "peak_rss_ratio": x["process_max_rss_mb"] / y["process_max_rss_mb"],
                        "train_delta_rss_ratio": x["train_delta_rss_mb"] / max(y["train_delta_rss_mb"], 1e-9),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
        OUT.mkdir(exist_ok=True)
        atomic_write_json(OUT / "train_vs_trl.json", {"rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
