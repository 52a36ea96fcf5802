"""Building many-shot training data: tokenize each example once and pack ids, vs re-tokenizing every prompt.

manyicl   `build_training_data`: every example is tokenized once (query and target separately, so the
          target mask is known), then sequences are sampled and assembled from the token arrays
baseline  what a text-first pipeline does: render each many-shot sequence as text and tokenize it whole
          (fast tokenizer, batched), with offsets to recover the target mask. It gets our sequences'
          texts for free (rendering is not timed), so only tokenization is measured.

Same sequences, same tokenizer (SmolLM2). Reports tokens/s for both and the ratio.

    python benchmarks/bench_data.py [--max-length 2048] [--sequences-per-task 32]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

OUT = Path(__file__).parent / "results"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-length", type=int, default=2048)
    ap.add_argument("--sequences-per-task", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    from manyicl.config import DataConfig, ModelConfig, TaskSourceConfig
    from manyicl.data import build_training_data, load_tasks
    from manyicl.fileio import atomic_write_json
    from manyicl.modeling import load_tokenizer

    tok = load_tokenizer(ModelConfig())
    src = TaskSourceConfig(synthetic=True, split="held_in", synthetic_instances=4)
    tasks = load_tasks(src)
    cfg = DataConfig(tasks=src, max_length=a.max_length, sequences_per_task=a.sequences_per_task)
    best = float("inf")
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        data = build_training_data(tasks, tok, cfg)
        best = min(best, time.perf_counter() - t0)
    seqs = data.sequences
    n_tokens = sum(len(s) for s in seqs)
    texts = [tok.decode(s.ids.tolist()) for s in seqs]  # the baseline's input, not timed
    base = float("inf")
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        enc = tok(texts, add_special_tokens=False, return_offsets_mapping=True)
        base = min(base, time.perf_counter() - t0)
    base_tokens = sum(len(x) for x in enc["input_ids"])
    res = {
        "max_length": a.max_length,
        "sequences": len(seqs),
        "tokens": n_tokens,
        "manyicl_s": best,
        "manyicl_tokens_per_s": n_tokens / best,
        "retokenize_s": base,
        "retokenize_tokens_per_s": base_tokens / base,
        "speedup": (base_tokens / base) and (n_tokens / best) / (base_tokens / base),
        "baseline_token_count_matches": base_tokens == n_tokens,
    }
    OUT.mkdir(exist_ok=True)
    atomic_write_json(OUT / "data_build.json", res)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
