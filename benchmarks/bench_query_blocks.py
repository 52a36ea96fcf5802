"""A point's queries searched in blocks vs all at once, side by side in one run (the pruned top-1 search).

``best_options`` keeps every token a search feeds in the prompt cache until its call ends. Evaluation
scores a whole curve point in one call (long_context_gemma3: 300 test + 32 dev queries), so before blocks
one call grew an 8K prompt by ~26K tokens that every later forward pass attended to. Now the searches run
in blocks (``token_budget // round_tokens`` queries, 16 on CPU) and the cache is cropped back to the
prompt after each block. This benchmark measures both on the same prompt and queries:

  whole    ``block`` = the number of queries (what a point did before)
  blocks   the default block size

For each model and context, one CLINC150 prompt with as many shots as fit (``prepare_task`` +
``shot_plan`` with ``max_length`` = the context, shots ``[max]``, seed 0, as ``manyicl eval`` builds it),
prefilled once; then ``--repeats`` runs of each arm over the same ``--queries`` queries, in alternating
order (whole, blocks, blocks, whole, ...). Recorded per arm: seconds of every run, ms per query, the most
tokens cached after the prompt when a forward pass starts (the attention and memory the block size
bounds), and the predictions, which must be the same. The speed-up is given per run pair (whole / blocks
of the same repeat) with its range over repeats: with 2-3 repeats there is no interval to give.

    .venv/bin/python benchmarks/bench_query_blocks.py                    # SmolLM2 2K and 8K, 332 queries
    .venv/bin/python benchmarks/bench_query_blocks.py --models gemma3-270m --contexts 32768
    .venv/bin/python benchmarks/bench_query_blocks.py --tiny             # tiny random models: proves it runs

Results: Markdown on stdout and ``benchmarks/results/query_blocks.json`` (``query_blocks_tiny.json`` with
``--tiny``), written after every level. Float32 (the CPU scoring default). Needs an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_long_context import load_task  # noqa: E402

OUT = Path(__file__).parent / "results"


def _argmax(scores) -> int:
    vals = [lp if e else float("-inf") for lp, e in zip(scores.logprobs, scores.exact)]
    return max(range(len(vals)), key=vals.__getitem__)


def run_level(model, tok, name: str, task, context: int, a) -> dict:
    import torch

    from manyicl.caching import PromptCache
    from manyicl.config import EvalConfig, load_config
    from manyicl.evaluate import batch_tokens, build_prompt, prepare_task, shot_plan
    from manyicl.option_search import best_options, default_block

    cfg = load_config(
        EvalConfig, None, [f"max_length={context}", f"max_queries={a.queries}", "dev_queries=0", "seeds=[0]"]
    )
    cfg = replace(cfg, shots=["max"])
    pt = prepare_task(task, tok, cfg)
    plan, n_fit = shot_plan(pt, cfg, 0)
    if not n_fit or "max" not in plan:
        return {"model": name, "context": context, "error": f"no demonstration fits in {context} tokens"}
    prompt = build_prompt(pt, plan["max"])
    items = [(q.ids, q.option_ids) for q in pt.queries[: a.queries]]
    budget = batch_tokens(cfg.scoring.batch_tokens, torch.device("cpu"))
    pc = PromptCache(model, prompt, prefill_chunk=cfg.scoring.prefill_chunk)
    seen: list[int] = []
    forward = pc.masked_forward

    def spy(*args, **kwargs):
        seen.append(pc.length - pc.base_len)
        return forward(*args, **kwargs)

    pc.masked_forward = spy
    arms = {"whole": len(items), "blocks": default_block(budget)}
    runs: dict[str, dict] = {
        k: {"block": b, "run_s": [], "max_cached_after_prompt": 0} for k, b in arms.items()
    }
    preds: dict[str, list[int]] = {}
    fed = None
    for rep in range(a.repeats):
        for arm in ["whole", "blocks"] if rep % 2 == 0 else ["blocks", "whole"]:
            seen.clear()
            t0 = time.perf_counter()
            got = best_options(pc, items, k=1, token_budget=budget, block=arms[arm])
            runs[arm]["run_s"].append(time.perf_counter() - t0)
            runs[arm]["max_cached_after_prompt"] = max(seen)
            p = [_argmax(r) for r in got]
            if arm in preds and preds[arm] != p:
                raise RuntimeError(f"{arm}: predictions changed between repeats")
            preds[arm] = p
            fed = sum(len(q) for q, _ in items) + sum(r.fed for r in got)
    for r in runs.values():
        r["ms_per_query"] = [1000 * s / len(items) for s in r["run_s"]]
    ratios = [w / b for w, b in zip(runs["whole"]["run_s"], runs["blocks"]["run_s"])]
    return {
        "model": name,
        "context": context,
        "shots": n_fit,
        "prompt_tokens": len(prompt),
        "prefill_s": pc.prefill_s,
        "queries": len(items),
        "token_budget": budget,
        "tokens_fed": fed,
        "arms": runs,
        "speedup_per_repeat": ratios,
        "same_predictions": preds["whole"] == preds["blocks"],
    }


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="", help="comma list (default: SmolLM2; --tiny: both tiny models)")
    ap.add_argument("--contexts", default="2048,8192")
    ap.add_argument("--queries", type=int, default=332, help="a long_context_gemma3 point: 300 test + 32 dev")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--tiny", action="store_true", help="tiny random models (SmolLM2-like and Gemma 3)")
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--append",
        action="store_true",
        help="add this run's rows to the JSON's (same machine), e.g. a second model",
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    import torch

    from manyicl.config import ModelConfig
    from manyicl.fileio import atomic_write_json
    from manyicl.modeling import load_model

    torch.manual_seed(0)
    if a.threads or a.tiny:
        torch.set_num_threads(a.threads or 1)
    out = Path(a.out) if a.out else OUT / ("query_blocks_tiny.json" if a.tiny else "query_blocks.json")
    task, source, note = load_task(a.tiny)
    res: dict = {
        "benchmark": "query_blocks",
        "tiny": a.tiny,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}",
        "task": {"name": task.name, "source": source, "note": note, "labels": len(task.labels)},
        "settings": {"queries": a.queries, "repeats": a.repeats, "dtype": "float32"},
        "rows": [],
    }
    if a.append and out.exists():
        old = json.loads(out.read_text())
        if old["machine"] != res["machine"] or old["tiny"] != a.tiny:
            raise SystemExit(f"--append: {out} was measured on {old['machine']!r}, not {res['machine']!r}")
        res["rows"] = old["rows"]
        res["settings"]["repeats"] = min(a.repeats, old["settings"]["repeats"])
    names = a.models or ("tiny-random-llama,tiny-random-gemma3" if a.tiny else "smollm2-135m-instruct")
    contexts = [512] if a.tiny else [int(c) for c in a.contexts.split(",")]
    models = [
        (n, lambda n=n: load_model(ModelConfig(name_or_path=n, dtype="float32")), contexts)
        for n in names.split(",")
    ]
    for name, load, contexts in models:
        model, tok_ = load()
        for context in contexts:
            row = run_level(model, tok_, name, task, context, a)
            res["rows"].append(row)
            atomic_write_json(out, res)
            print(report(res), flush=True)
        del model
    return 0 if all(r.get("same_predictions", False) for r in res["rows"]) else 1


def _range(xs: list[float]) -> str:
    """A speed-up over run pairs: its range, or the single value said to be one pair (no spread to show)."""
    return f"{xs[0]:.2f}x (1 pair)" if len(xs) == 1 else f"{min(xs):.2f}x-{max(xs):.2f}x ({len(xs)} pairs)"


def report(res: dict) -> str:
    lines = [
        f"{res['machine']}; {res['settings']['dtype']}; task {res['task']['name']} ({res['task']['labels']}-way"
        f"{', ' + res['task']['note'] if res['task']['note'] else ''}); {res['settings']['repeats']} runs per arm, "
        "alternating.",
        "",
        "| model | context | prompt tokens | queries | tokens fed | whole: ms/query (runs) | most cached after prompt | "
        "blocks of k: ms/query (runs) | most cached after prompt | speed-up per run pair | same predictions |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['context']:,} | - | - | - | {r['error']} | | | | | |")
            continue
        w, b = r["arms"]["whole"], r["arms"]["blocks"]
        ms = lambda arm: ", ".join(f"{x:.0f}" for x in arm["ms_per_query"])  # noqa: E731
        sp = r["speedup_per_repeat"]
        lines.append(
            f"| {r['model']} | {r['context']:,} | {r['prompt_tokens']:,} | {r['queries']} | {r['tokens_fed']:,} | "
            f"{ms(w)} | {w['max_cached_after_prompt']:,} | k={b['block']}: {ms(b)} | {b['max_cached_after_prompt']:,} | "
            f"{_range(sp)} | {'yes' if r['same_predictions'] else '**no**'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
