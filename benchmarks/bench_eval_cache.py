"""Prompt caching vs recomputation, side by side in one run, at 256+ shots.

For one task and one many-shot prompt, score the same queries three ways:
  cached      - prompt processed once; each query (with all its options, as a trie) appended and cropped off
  per_query   - no cache: prompt + query + option trie recomputed for every query
  per_option  - no cache: prompt + query + option recomputed for every option (what lm-evaluation-harness does)
and time saving/loading the prompt cache against recomputing it. Predictions must agree.

    python benchmarks/bench_eval_cache.py [--shots 256] [--queries 40] [--slow-queries 4]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from manyicl.caching import PromptCache, model_key
from manyicl.config import EvalConfig, ModelConfig, load_config
from manyicl.evaluate import prepare_task, shot_plan
from manyicl.fileio import atomic_write_json, atomic_write_text
from manyicl.modeling import load_model
from manyicl.synthetic import make_task

OUT = Path(__file__).parent / "results"


def full_logprob(model, ids: list[int], start: int) -> float:
    with torch.inference_mode():
        logits = model(
            input_ids=torch.tensor([ids]), use_cache=False, logits_to_keep=len(ids) - start + 1
        ).logits[0]
    logp = torch.log_softmax(logits.float(), -1)
    # logits_to_keep keeps the last (len-start+1) positions: row r predicts token start + r
    return float(sum(logp[r, ids[start + r]] for r in range(len(ids) - start)))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", default="numeric_compare")
    ap.add_argument("--shots", type=int, default=256)
    ap.add_argument("--max-length", type=int, default=8192)
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--slow-queries", type=int, default=4, help="queries for the two uncached arms")
    ap.add_argument("--dtype", default="bfloat16")
    a = ap.parse_args()
    torch.manual_seed(0)
    model, tok = load_model(ModelConfig(dtype=a.dtype))
    task = make_task(a.family, 0, train_size=2000, test_size=200)
    cfg = load_config(
        EvalConfig,
        None,
        [f"max_length={a.max_length}", f"max_queries={a.queries}", f"shots=[{a.shots}]", "seeds=[0]"],
    )
    pt = prepare_task(task, tok, cfg)
    order, plan, n_fit = shot_plan(pt, cfg, 0)
    if a.shots > n_fit:
        print(f"only {n_fit} shots fit in {a.max_length} tokens", file=sys.stderr)
        return 1
    prompt = pt.demos.header.tolist()
    for i in order[: a.shots]:
        prompt += pt.demos.example_ids(int(i))[0].tolist()
    queries = pt.queries

    # cached
    t0 = time.perf_counter()
    pc = PromptCache(model, prompt)
    prefill_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    cached_lls = pc.score_options_many([(q.ids, q.option_ids) for q in queries])
    cached_query_s = time.perf_counter() - t1
    cached_total = time.perf_counter() - t0
    cached_pred = [int(np.argmax([lp for lp, _ in lls])) for lls in cached_lls]

    # save / load vs recompute
    key = model_key(model, "smollm2-135m-instruct", None, tok)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "prompt.safetensors"
        t0 = time.perf_counter()
        pc.save(path, key)
        save_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        loaded = PromptCache.load(path, model, key, prompt_ids=prompt)
        load_s = time.perf_counter() - t0
        file_mb = path.stat().st_size / 2**20
        two = [(q.ids, q.option_ids) for q in queries[:2]]
        a_, b_ = loaded.score_options_many(two), pc.score_options_many(two)
        assert np.allclose([x for r in a_ for x, _ in r], [x for r in b_ for x, _ in r], atol=1e-4)

    # uncached: per query (prompt + query + trie, recomputed for each query)
    slow = queries[: a.slow_queries]
    t0 = time.perf_counter()
    pq_pred = []
    for q in slow:
        fresh = PromptCache(model, prompt)
        lls = fresh.score_options(q.ids, q.option_ids)
        pq_pred.append(int(np.argmax([lp for lp, _ in lls])))
    per_query_s = (time.perf_counter() - t0) / len(slow)

    # uncached: per option (lm-evaluation-harness style)
    t0 = time.perf_counter()
    po_pred = []
    for q in slow:
        lls = [full_logprob(model, prompt + q.ids + o, len(prompt) + len(q.ids)) for o in q.option_ids]
        po_pred.append(int(np.argmax(lls)))
    per_option_s = (time.perf_counter() - t0) / len(slow)

    cached_per_query = cached_total / len(queries)
    res = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "model": "SmolLM2-135M-Instruct",
        "dtype": a.dtype,
        "task": task.name,
        "options_per_query": len(queries[0].option_ids),
        "shots": a.shots,
        "prompt_tokens": len(prompt),
        "queries_cached": len(queries),
        "queries_uncached": len(slow),
        "prefill_s": prefill_s,
        "cached_query_s_total": cached_query_s,
        "cached_s_per_query_incl_prefill": cached_per_query,
        "uncached_per_query_s": per_query_s,
        "uncached_per_option_s": per_option_s,
        "speedup_vs_per_query": per_query_s / cached_per_query,
        "speedup_vs_per_option": per_option_s / cached_per_query,
        "cache_save_s": save_s,
        "cache_load_s": load_s,
        "cache_file_mb": file_mb,
        "load_vs_recompute_speedup": prefill_s / load_s,
        "agreement_per_query": float(np.mean([x == y for x, y in zip(cached_pred, pq_pred)])),
        "agreement_per_option": float(np.mean([x == y for x, y in zip(cached_pred, po_pred)])),
    }
    OUT.mkdir(exist_ok=True)
    atomic_write_json(OUT / "eval_cache.json", res)
    md = [
        f"# Prompt caching vs recomputation ({res['shots']} shots, {res['prompt_tokens']} prompt tokens)",
        "",
        f"{res['machine']}; {res['model']} {res['dtype']}; task {res['task']} ({res['options_per_query']} options).",
        "",
        "| path | seconds per query | speed-up of cached |",
        "|---|---|---|",
        f"| cached prompt (prefill amortised over {res['queries_cached']} queries) | {cached_per_query:.3f} | 1x |",
        f"| recompute prompt per query (options as trie) | {per_query_s:.3f} | {res['speedup_vs_per_query']:.1f}x |",
        f"| recompute prompt per option (lm-eval style) | {per_option_s:.3f} | {res['speedup_vs_per_option']:.1f}x |",
        "",
        f"Prompt cache on disk: {file_mb:.1f} MB, save {save_s:.3f} s, load {load_s:.3f} s vs recompute {prefill_s:.2f} s "
        f"({res['load_vs_recompute_speedup']:.1f}x). Prediction agreement: {res['agreement_per_query']:.0%} (per query), "
        f"{res['agreement_per_option']:.0%} (per option).",
    ]
    atomic_write_text(OUT / "eval_cache.md", "\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
