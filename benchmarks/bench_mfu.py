"""Model FLOP utilisation of training: achieved FLOP/s vs this machine's measured matmul peak.

Peak: the best of several large square matmuls in bf16 and fp32 (what the hardware can do at all).
Achieved: from the training benchmark's tokens/s (benchmarks/results/train_vs_trl.json, manyicl rows):

  model FLOPs/token    6 N + attention (the usual MFU convention, as if every weight were trained)
  executed FLOPs/token 4 N + attention (LoRA: frozen weights need input gradients, not weight gradients)

with attention = 12 * layers * hidden * T / 2 per token for causal attention over T tokens (fwd + bwd).

    python benchmarks/bench_mfu.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

OUT = Path(__file__).parent / "results"


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 8) -> float:
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def main() -> int:
    from manyicl.config import ModelConfig
    from manyicl.fileio import atomic_write_json
    from manyicl.memory import _model_dims
    from manyicl.modeling import load_model

    peak = {"bfloat16": matmul_peak(torch.bfloat16), "float32": matmul_peak(torch.float32)}
    model, _ = load_model(ModelConfig())
    d = _model_dims(model.config)
    train = json.loads((OUT / "train_vs_trl.json").read_text())["rows"]
    rows = []
    for r in train:
        if r.get("engine") not in ("manyicl", "trl"):
            continue
        T = r["length"]
        attn = 12 * d["layers"] * d["hidden"] * T / 2
        model_flops = (6 * d["params"] + attn) * r["tokens_per_s"]
        exec_flops = (4 * d["params"] + attn) * r["tokens_per_s"]
        rows.append(
            {
                "engine": r["engine"],
                "length": T,
                "tokens_per_s": r["tokens_per_s"],
                "model_tflops": model_flops / 1e12,
                "executed_tflops": exec_flops / 1e12,
                "mfu_vs_bf16_peak": model_flops / peak["bfloat16"],
                "executed_util_vs_bf16_peak": exec_flops / peak["bfloat16"],
            }
        )
    res = {"params": d["params"], "peak_gflops": {k: v / 1e9 for k, v in peak.items()}, "rows": rows}
    atomic_write_json(OUT / "mfu.json", res)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
