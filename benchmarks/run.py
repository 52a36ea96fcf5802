"""Run every benchmark side by side in one run and write benchmarks/RESULTS.md (+ results/*.json).

    .venv/bin/python benchmarks/run.py            # everything (about 1 hour on 2 CPU cores)
    .venv/bin/python benchmarks/run.py --only data,train
    .venv/bin/python benchmarks/run.py --report   # only rewrite RESULTS.md from results/*.json

Benchmarks run one after another, each in its own process, on an otherwise idle machine: ratios are
only meaningful when both sides of a comparison see the same machine.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
RES = HERE / "results"

STEPS = {
    "data": [
        ["bench_data.py", "--sequences-per-task", "32"],
        ["bench_data.py", "--sequences-per-task", "256"],
    ],
    "train": [["bench_train_vs_trl.py", "--lengths", "2048,8192", "--steps", "2"]],
    "mfu": [["bench_mfu.py"]],
    "cache": [["bench_eval_cache.py", "--shots", "256", "--queries", "40", "--slow-queries", "3"]],
    "lmeval": [["bench_eval_vs_lmeval.py", "--queries", "40", "--lmeval-budget-s", "900"]],
    "serve": [["bench_serve.py", "--concurrency", "1,8,32"]],
    "long_context": [["bench_long_context.py", "--queries", "8", "--budget-s", "900"]],
    "blocks": [["bench_query_blocks.py", "--queries", "332", "--repeats", "2"]],
}


def machine() -> str:
    import psutil
    import torch

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, {gpu}; "
        f"{platform.system()} {platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}"
    )


def _load(name: str):
    p = RES / name
    return json.loads(p.read_text()) if p.exists() else None


def _ok(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _section(title: str, intro: str, module: str, res: dict) -> list[str]:
    """A RESULTS.md section: a title, what was measured, and the benchmark's own table from its JSON."""
    sys.path.insert(0, str(HERE))
    table = importlib.import_module(module).report(res)
    return [title, "", intro, "", table, ""]


def long_context_section(lc: dict) -> list[str]:
    """Section f., rendered from a loaded ``results/long_context.json``."""
    return _section(
        "## f. Long context: prefill and per-query cost at 2K/8K/32K",
        (
            "One CLINC150 prompt per model and context with as many shots as fit (SmolLM2-135M: 2K and 8K; Gemma 3 "
            "270M, sliding-window layers: 2K, 8K and 32K), prefilled once into the prompt cache (a single run each), "
            "then the same test queries scored one at a time from it with every option (`score_all`) and with the "
            "pruned exact top-1 search (`best_options`, k=1). Every per-query time is saved in "
            "`results/long_context.json`; means carry a 95% bootstrap interval over queries, the speed-up one from "
            "resampling queries in both arms together. Where a prompt holds ≥1,000 shots, lm-evaluation-harness's "
            "cost (context + option for every option) is **extrapolated** from one timed uncached pass, not run."
        ),
        "bench_long_context",
        lc,
    )


def query_blocks_section(qb: dict) -> list[str]:
    """Section g., rendered from a loaded ``results/query_blocks.json``."""
    return _section(
        "## g. Option search: a point's queries in blocks vs all at once",
        (
            "The pruned top-1 search (`best_options`) keeps every token it feeds in the prompt cache until the call "
            "ends. One CLINC150 prompt per context with as many shots as fit, then one evaluation point's queries "
            "(300 test + 32 dev in `long_context_gemma3`) searched in one call (*whole*, what evaluation did before) "
            "and in blocks of `token_budget // round_tokens` queries with the cache cropped back to the prompt "
            "between blocks (*blocks*, now the default), on the same prefilled prompt, alternating. *Most cached "
            "after prompt*: the tokens every pass of the call may attend to beyond the prompt, at their peak. With one "
            "run pair per row the speed-up is a single ratio, not an interval; rows added with `--append` (a second "
            "model) come from a separate invocation on the same machine."
        ),
        "bench_query_blocks",
        qb,
    )


def write_report() -> Path:
    lines = ["# Benchmarks", "", f"Machine: {_load('machine.json') or machine()}", ""]
    lines += [
        "Reproduce: `.venv/bin/python benchmarks/run.py` (all benchmarks, one after another, one process each). "
        "Every number below is a ratio of two runs on the same machine in the same invocation, unless marked.",
        "",
    ]
    lm = _load("eval_vs_lmeval.json")
    if lm:
        lines += [
            "## a. Evaluation vs lm-evaluation-harness",
            "",
            "Same prompts (our k-shot prompt as text), same queries, same SmolLM2-135M object. lm-eval 0.4.x HFLM, "
            "batch size 1, runs prompt + option for every option; manyicl processes the prompt once, scores all options "
            "of a query in one pass (token trie) and several queries per pass. Seconds per query; lm-eval is timed on fewer "
            "queries where it would take hours, and not run where one query is predicted to take over 15 minutes: "
            "its time is then extrapolated linearly in prompt tokens from the previous shot count (a lower bound, since its "
            "attention cost grows faster than linearly) and marked *est.*",
            "",
            "| task | shots | prompt tokens | manyicl s/query (n) | lm-eval s/query (n) | speed-up | agreement | target |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in lm["rows"]:
            target = (
                100 if (r["kind"] == "options" and (r["options"] or 0) >= 100 and r["shots"] >= 64) else 20
            )
            applies = r["shots"] >= 64
            est = r.get("lmeval_estimated")
            tgt = f"≥{target}x: {_ok(r['speedup'] >= target)}" if applies else "-"
            if est:
                tgt += " (lm-eval extrapolated)"
            what = f"{r['options']}-way" if r["kind"] == "options" else "generation"
            lm_s = (
                f"≥{r['lmeval_s_per_query']:.0f} (est., not run)"
                if est
                else f"{r['lmeval_s_per_query']:.2f} ({r['queries_lmeval']})"
            )
            agree = "-" if r["agreement"] is None else f"{r['agreement']:.0%}"
            lines.append(
                f"| {r['task']} ({what}) | {r['shots']} | {r['prompt_tokens']} | {r['manyicl_s_per_query']:.3f} "
                f"({r['queries_manyicl']}) | {lm_s} | {'≥' if est else ''}{r['speedup']:.0f}x | {agree} | {tgt} |"
            )
        lines += [
            "",
            "Agreement: option-scoring disagreements (SST-2) are near-ties flipped by bf16 rounding — manyicl scores several "
            "queries per forward pass and the batch composition changes the rounding; in float32 the cached, batched path "
            "and full recomputation pick the same options (`tests/test_evaluate.py`). Generation agreement compares the "
            "stripped greedy continuations with the same stop strings.",
        ]
        if lm.get("note"):
            lines += ["", f"Note: {lm['note']}."]
        gen_gap = [
            r
            for r in lm["rows"]
            if r["kind"] == "generate"
            and r["shots"] >= 64
            and r["speedup"] < 20
            and not r.get("lmeval_estimated")
        ]
        for r in gen_gap:
            lines += [
                "",
                f"Generation at {r['shots']} shots is {r['speedup']:.0f}x, short of 20x: lm-eval's cost per query there is "
                f"mostly the {r['prompt_tokens']}-token prefill, manyicl's is greedy decoding — all queries decode together "
                "against the shared cached prompt, but every step still attends over the whole prompt and the batch runs "
                "until its longest answer stops. The ratio grows with the prompt (see 256 shots); on GPUs the vLLM backend "
                "is the decode-optimised path.",
            ]
        lines.append("")
    cache = _load("eval_cache.json")
    if cache:
        lines += [
            "## Prompt caching vs recomputation",
            "",
            f"{cache['task']}, {cache['shots']} shots ({cache['prompt_tokens']} prompt tokens): cached "
            f"{cache['cached_s_per_query_incl_prefill']:.3f} s/query (prefill amortised over {cache['queries_cached']}), "
            f"recompute per query {cache['uncached_per_query_s']:.2f} s ({cache['speedup_vs_per_query']:.0f}x), per option "
            f"{cache['uncached_per_option_s']:.2f} s ({cache['speedup_vs_per_option']:.0f}x); agreement "
            f"{cache['agreement_per_option']:.0%}. Saved cache {cache['cache_file_mb']:.0f} MB loads in {cache['cache_load_s']:.3f} s "
            f"vs {cache['prefill_s']:.1f} s to recompute ({cache['load_vs_recompute_speedup']:.0f}x).",
            "",
        ]
    tr = _load("train_vs_trl.json")
    if tr:
        lines += [
            "## b. Training vs TRL SFTTrainer",
            "",
            "Same many-shot windows (synthetic suite, max shots, mask_all_targets), SmolLM2-135M bf16, LoRA r=16 on q/v, "
            "AdamW, one window per step, completion-only loss; TRL with a pre-tokenized dataset (`completion_mask`), "
            "`padding_free=True`, gradient checkpointing off. Each engine in its own process; tokens/s excludes the first step.",
            "",
            "| context | manyicl tokens/s | TRL tokens/s | speed-up (target ≥1.3x) | manyicl peak RSS MB | TRL peak RSS MB | ratio (target ≤0.7) |",
            "|---|---|---|---|---|---|---|",
        ]
        rows = tr["rows"]
        for L in sorted({r["length"] for r in rows}):
            ours = next(r for r in rows if r["length"] == L and r["engine"] == "manyicl")
            trl = next(r for r in rows if r["length"] == L and r["engine"] == "trl")
            sp = ours["tokens_per_s"] / trl["tokens_per_s"]
            mem = ours["process_max_rss_mb"] / trl["process_max_rss_mb"]
            lines.append(
                f"| {L} | {ours['tokens_per_s']:.0f} | {trl['tokens_per_s']:.0f} | {sp:.2f}x ({_ok(sp >= 1.3)}) | "
                f"{ours['process_max_rss_mb']:.0f} | {trl['process_max_rss_mb']:.0f} | {mem:.2f} ({_ok(mem <= 0.7)}) |"
            )
        lines.append("")
        for L in sorted({r["length"] for r in rows}):
            ch = next((r for r in rows if r["length"] == L and r["engine"] == "manyicl"), None)
            un = next((r for r in rows if r["length"] == L and r["engine"] == "manyicl_unchunked"), None)
            if ch and un:
                most = max(ch.get("supervised_tokens_per_window") or [0])
                lines.append(
                    f"Chunked cross-entropy at {L} (`train.loss_chunk_tokens` {ch.get('loss_chunk_tokens')}, "
                    f"windows with up to {most} supervised tokens): {ch['tokens_per_s']:.0f} vs "
                    f"{un['tokens_per_s']:.0f} tokens/s unchunked ({ch['tokens_per_s'] / un['tokens_per_s']:.2f}x), "
                    f"peak RSS {ch['process_max_rss_mb']:.0f} vs {un['process_max_rss_mb']:.0f} MB."
                )
        lines.append("")
        gaps = []
        for L in sorted({r["length"] for r in rows}):
            ours = next(r for r in rows if r["length"] == L and r["engine"] == "manyicl")
            trl = next(r for r in rows if r["length"] == L and r["engine"] == "trl")
            if ours["process_max_rss_mb"] / trl["process_max_rss_mb"] > 0.7:
                saved = trl["process_max_rss_mb"] - ours["process_max_rss_mb"]
                gaps.append(
                    f"At {L} tokens the memory target is not met: manyicl saves {saved:,.0f} MB "
                    f"({saved / trl['process_max_rss_mb']:.0%} of TRL's peak) — the loss path, where TRL keeps float32 "
                    f"logits over the full {L} x 49,152 vocabulary and their gradient — but both peaks are dominated by "
                    "the activations that the 30 layers store for backward, which are the same in both engines (same model, "
                    "same SDPA kernel, no checkpointing). Closing the gap needs less activation memory per layer "
                    "(fused RMSNorm/SwiGLU kernels or selective recomputation of the cheap elementwise parts), not a "
                    "different loss; `train.gradient_checkpointing=true` cuts it ~5x at ~30% speed (then slower than TRL "
                    "without checkpointing)."
                )
        if gaps:
            lines += [*gaps, ""]
    data = [d for d in (_load("data_build_32.json"), _load("data_build_256.json")) if d]
    if data:
        lines += [
            "## c. Data building vs re-tokenizing every many-shot prompt",
            "",
            "Synthetic suite (52 tasks, 400 training examples each), 2K context, max shots. manyicl tokenizes each example "
            "once and gathers sequences from token arrays; the baseline tokenizes each sequence's full text (batched fast "
            "tokenizer, with offsets for the target mask). The gain grows with how often an example is reused across "
            "sequences; 256 sequences per task is the paper's regime (4K sequences per task).",
            "",
            "| sequences per task | tokens built | manyicl tokens/s | re-tokenize tokens/s | speed-up (target ≥10x) | ≥1M tokens/s |",
            "|---|---|---|---|---|---|",
        ]
        for d in data:
            lines.append(
                f"| {d['sequences'] // 52} | {d['tokens']:,} | {d['manyicl_tokens_per_s']:,.0f} | {d['retokenize_tokens_per_s']:,.0f} | "
                f"{d['speedup']:.1f}x ({_ok(d['speedup'] >= 10)}) | {_ok(d['manyicl_tokens_per_s'] >= 1e6)} |"
            )
        lines += [
            "",
            "The ratio is bounded by how many sequences an example appears in: at 32 sequences per task (~73 shots "
            "each from 400 examples) every example is used ~6 times, so re-tokenizing does ~6x the tokenizer work of "
            "tokenizing once, and 2-3x is what is left after sampling and gathering; at 256 sequences per task "
            "(~47 uses per example, still below the paper's 4K sequences per task) the 10x target is met.",
        ]
        lines.append("")
    mfu = _load("mfu.json")
    if mfu:
        lines += [
            "## d. MFU",
            "",
            f"Measured matmul peak: {mfu['peak_gflops']['bfloat16']:.0f} GFLOP/s bf16, {mfu['peak_gflops']['float32']:.0f} GFLOP/s fp32 "
            f"(2048^3 matmuls). SmolLM2-135M: {mfu['params'] / 1e6:.0f}M parameters.",
            "",
            "| engine | context | tokens/s | model TFLOP/s (6N+attn) | MFU vs bf16 peak | executed TFLOP/s (4N+attn, LoRA) | utilisation |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in mfu["rows"]:
            lines.append(
                f"| {r['engine']} | {r['length']} | {r['tokens_per_s']:.0f} | {r['model_tflops']:.3f} | {r['mfu_vs_bf16_peak']:.1%} | "
                f"{r['executed_tflops']:.3f} | {r['executed_util_vs_bf16_peak']:.1%} |"
            )
        lines.append("")
    serve = _load("serve.json")
    if serve:
        sys.path.insert(0, str(HERE))
        from bench_serve import report as serve_report

        lines += [
            "## e. Serving (`manyicl serve`) under load",
            "",
            "Single-input predict requests over loopback from 1, 8 and 32 concurrent clients, to a server that batches "
            "concurrent requests of a task over its cached prompt and to the same server with batching off; the prompt "
            "re-run per request (a server without a prompt cache) on a few requests in process; `top_k` = the pruned "
            "best-first option search. Every latency is saved in `results/serve.json`; p50s carry a 95% bootstrap "
            "interval over requests, ratios one from resampling both arms (paired where both sent the same inputs).",
            "",
            serve_report(serve),
            "",
        ]
    lc = _load("long_context.json")
    if lc:
        lines += long_context_section(lc)
    qb = _load("query_blocks.json")
    if qb:
        lines += query_blocks_section(qb)
    gpu = HERE / "GPU.md"
    if gpu.exists():
        lines += ["## GPU runs", "", gpu.read_text().strip(), ""]
    path = HERE / "RESULTS.md"
    from manyicl.fileio import atomic_write_text

    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default=",".join(STEPS), help=f"comma list of {', '.join(STEPS)}")
    ap.add_argument("--report", action="store_true", help="only rewrite RESULTS.md")
    a = ap.parse_args()
    RES.mkdir(exist_ok=True)
    if not a.report:
        from manyicl.fileio import atomic_write_json

        atomic_write_json(RES / "machine.json", machine())
        failed = []
        for name in a.only.split(","):
            for args in STEPS[name]:
                t0 = time.perf_counter()
                print(f"== {' '.join(args)}", flush=True)
                r = subprocess.run([sys.executable, str(HERE / args[0]), *args[1:]], cwd=HERE.parent)
                print(f"   {time.perf_counter() - t0:.0f} s, exit {r.returncode}", flush=True)
                if r.returncode != 0:  # go on with the others; fail at the end
                    failed.append(" ".join(args))
                    continue
                if args[0] == "bench_data.py":  # keep both reuse levels
                    (RES / "data_build.json").rename(RES / f"data_build_{args[2]}.json")
    print(write_report())
    if not a.report and failed:
        print("failed: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
