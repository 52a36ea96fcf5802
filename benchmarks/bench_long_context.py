"""Long context: prefill tokens/s and per-query cost at 2K / 8K / 32K, and cached scoring vs
lm-evaluation-harness-style recomputation at 1,000 CLINC150 shots, side by side in one run.

For each built-in model and context length (SmolLM2-135M-Instruct, 8K window: 2048 and 8192; Gemma 3
270M, 32K window with sliding-window layers: 2048, 8192 and 32768), one CLINC150 prompt (150-way option
scoring, the shared data) with as many shots as fit (``prepare_task`` + ``shot_plan`` with
``max_length`` = the context, shots ``[max]``, seed 0, as ``manyicl eval`` builds it) is

  prefilled     once into a :class:`~manyicl.caching.PromptCache` (chunks of ``scoring.prefill_chunk``):
                prompt tokens, shots, seconds and tokens/s (a single run: no interval)
  scored        for N test queries (default 8), one query at a time, two ways from the same cache:
                ``score_all`` (every option, one trie pass) and ``best_options`` with k=1 (the pruned
                exact top-1 search); seconds per query for each, in alternating order, with a 95%
                percentile-bootstrap interval of the mean (every per-query time is in the JSON), and
                whether both predict the same label for each query (agreement)
  saved         to a temporary file and loaded back (``PromptCache.save`` / ``load``): MB, seconds

and, where the prompt holds at least 1,000 shots (Gemma 3 at 32K), the cost per query of
lm-evaluation-harness's algorithm, which runs context + option for every option (150 per query): one
uncached forward pass over prompt + query + one option is run and timed once (a prefill-sized pass, no
cache), and lm-eval's cost per query is **extrapolated** as 150 x that time. lm-eval itself is not run.
Its ratio to the cached per-query cost is reported for both arms; its interval reflects only the
cached arm's spread (the uncached pass is a single run).

Each level stops scoring queries once ``--budget-s`` seconds have passed since its start (at least
``--min-queries`` are scored); the number that ran is recorded. Without the shared data a synthetic
150-way task stands in for CLINC150 (said in the output). Gemma 3 is opt-in: a load failure skips it
with a note. Float32 on CPU (the scoring default; bf16 is slow without native bf16 instructions).

    .venv/bin/python benchmarks/bench_long_context.py            # both models, real data
    .venv/bin/python benchmarks/bench_long_context.py --models smollm2-135m-instruct --contexts 2048
    .venv/bin/python benchmarks/bench_long_context.py --tiny     # tiny random models: proves it runs

Results: a Markdown table on stdout and ``benchmarks/results/long_context.json``
(``long_context_tiny.json`` with ``--tiny``), written after every level, so a killed run keeps what it
measured. How long the full run takes: not measured (the 32K prefill and the 32K uncached pass dominate).
``--tiny`` (one torch thread: tiny matrices gain nothing from two) takes 15-20 s on 2 busy cores, most of
it imports.

Memory (full run): an estimate, not measured with the real models: the peak is the uncached 32K pass on
Gemma 3, ~8 GB (its attention masks took 5.2 GB in a 32.7K-token pass of a small Gemma 3 config, plus
the 1.1 GB of float32 weights and the activations); each level records the process's peak RSS
(``max_rss_mb``).
"""

from __future__ import annotations

import argparse
import gc
import platform
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from stand_in_tasks import synthetic_150way  # noqa: E402

OUT = Path(__file__).parent / "results"

SMOLLM2, GEMMA3 = "smollm2-135m-instruct", "gemma3-270m"
TINY_LLAMA, TINY_GEMMA3 = "tiny-random-llama", "tiny-random-gemma3"
DEFAULT_CONTEXTS = {
    SMOLLM2: [2048, 8192],
    GEMMA3: [2048, 8192, 32768],
    TINY_LLAMA: [256, 512],
    TINY_GEMMA3: [256, 512],
}
OPT_IN = {GEMMA3, TINY_GEMMA3}  # a load failure skips these with a note
N_BOOT = 10000


# --------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------


def load_task(tiny: bool) -> tuple[object, str, str | None]:
    """(task, source, note): CLINC150 from the shared data, else the synthetic stand-in."""
    if tiny:
        return synthetic_150way(), "synthetic", "--tiny: a synthetic 150-way task"
    from manyicl.realdata import default_data_dir, load_shared_tasks

    d = default_data_dir()
    if d is None or not (d / "clinc150").is_dir():
        note = "shared data not found: a synthetic 150-way task stands in for CLINC150"
        print(note, file=sys.stderr)
        return synthetic_150way(), "synthetic", note
    return load_shared_tasks(d, ["clinc150"])[0], "shared", None


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------


def max_rss_mb() -> float:
    """The process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def mean_ci(xs: list[float]) -> list[float] | None:
    """95% percentile-bootstrap interval of the mean (None for fewer than two measurements)."""
    from manyicl.stats import bootstrap_ci

    if len(xs) < 2:
        return None
    return list(bootstrap_ci(np.asarray(xs, dtype=float), n_boot=N_BOOT, seed=0))


def paired_ratio_ci(a: list[float], b: list[float], seed: int = 0) -> list[float] | None:
    """95% bootstrap interval of mean(a) / mean(b), resampling queries jointly (both arms scored the
    same queries from the same cache)."""
    if len(a) < 2 or len(a) != len(b):
        return None
    va, vb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(va), size=(N_BOOT, len(va)))
    lo, hi = np.quantile(va[idx].mean(axis=1) / vb[idx].mean(axis=1), [0.025, 0.975])
    return [float(lo), float(hi)]


def arm(times: list[float]) -> dict:
    return {
        "per_query_s": [round(t, 6) for t in times],
        "n": len(times),
        "mean_s": float(np.mean(times)) if times else None,
        "ci95_s": mean_ci(times),
    }


class Timer:
    """Wall seconds of a block, waiting for the GPU where there is one."""

    def __init__(self, device):
        self.cuda = getattr(device, "type", "cpu") == "cuda"

    def __enter__(self):
        self._sync()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self._sync()
        self.s = time.perf_counter() - self.t0

    def _sync(self):
        if self.cuda:
            import torch

            torch.cuda.synchronize()


def uncached_option_logprob(model, ids: list[int], start: int, device) -> tuple[float, float]:
    """lm-eval's unit of work: one forward pass over prompt + query + option with no cache; the option's
    summed log-prob (tokens ``start:``) and the pass's seconds."""
    import torch

    with Timer(device) as t, torch.inference_mode():
        logits = model(
            input_ids=torch.tensor([ids], device=device), use_cache=False, logits_to_keep=len(ids) - start + 1
        ).logits[0]
        logp = torch.log_softmax(logits.float(), -1)
        # the kept rows are positions start-1 .. end-1: row r predicts token start + r
        lp = float(sum(logp[r, ids[start + r]] for r in range(len(ids) - start)))
    return lp, t.s


def _timed(device, fn):
    with Timer(device) as t:
        r = fn()
    return t.s, r


def _argmax(vals: list[float | None]) -> int:
    return int(np.argmax([-np.inf if v is None else v for v in vals]))


def run_level(model, tok, name: str, task, context: int, a, device) -> dict:
    """One (model, context): prefill, per-query scoring both ways, save/load, lm-eval-style estimate."""
    from manyicl.caching import PromptCache, model_key
    from manyicl.config import EvalConfig, load_config
    from manyicl.evaluate import batch_tokens, build_prompt, prepare_task, shot_plan
    from manyicl.option_search import OptionTrie, best_options, option_score, score_all

    cfg = load_config(
        EvalConfig,
        None,
        [f"max_length={context}", f"max_queries={a.queries}", "dev_queries=0", "seeds=[0]"],
    )
    cfg = replace(cfg, shots=["max"])
    row: dict = {"model": name, "context": context}
    pt = prepare_task(task, tok, cfg)
    plan, n_fit = shot_plan(pt, cfg, 0)
    if not n_fit or "max" not in plan:
        return row | {"error": f"no demonstration fits in {context} tokens"}
    prompt = build_prompt(pt, plan["max"])
    queries = pt.queries[: pt.n_test][: a.queries]
    budget_tokens = batch_tokens(cfg.scoring.batch_tokens, device)
    t_level = time.perf_counter()
    pc = PromptCache(model, prompt, prefill_chunk=cfg.scoring.prefill_chunk)
    row |= {
        "shots": n_fit,
        "prompt_tokens": len(prompt),
        "options": len(queries[0].option_ids),
        "prefill_chunk": cfg.scoring.prefill_chunk,
        "token_budget": budget_tokens,
        "prefill_s": pc.prefill_s,
        "prefill_runs": 1,  # a single run: no interval
        "prefill_tokens_per_s": len(prompt) / pc.prefill_s if pc.prefill_s else None,
        "sliding_window": pc.window,
    }

    # ---- per-query scoring, both arms from the same cache, one query at a time
    t_all: list[float] = []
    t_best: list[float] = []
    per_query: list[dict] = []
    first_lps = None
    exhausted = False
    for i, q in enumerate(queries):
        if i >= a.min_queries and time.perf_counter() - t_level > a.budget_s:
            exhausted = True
            break
        item = [(q.ids, q.option_ids)]
        arms = {
            "all": lambda it=item: score_all(pc, it, budget_tokens)[0],
            "best": lambda it=item: best_options(pc, it, k=1, token_budget=budget_tokens)[0],
        }
        order = ["all", "best"] if i % 2 == 0 else ["best", "all"]  # alternate which arm goes first
        got = {k: _timed(device, arms[k]) for k in order}
        (s_all, r_all), (s_best, r_best) = got["all"], got["best"]
        lps = [lp for lp, _ in r_all]
        p_all = _argmax([option_score(lp, n, "none") for lp, n in r_all])
        p_best = _argmax([lp if e else None for lp, e in zip(r_best.logprobs, r_best.exact)])
        if first_lps is None:
            first_lps = lps
        t_all.append(s_all)
        t_best.append(s_best)
        gold = q.options.index(q.example.output) if q.example.output in q.options else None
        per_query.append(
            {
                "gold": gold,
                "pred_all": p_all,
                "pred_best": p_best,
                "top_lp_diff": abs(lps[p_best] - r_best.logprobs[p_best]),
                "query_tokens": len(q.ids),
                "fed_all": len(OptionTrie.build(q.option_ids).fed_nodes()),
                "fed_best": r_best.fed,
                "rounds_best": r_best.rounds,
            }
        )
    agree = [x["pred_all"] == x["pred_best"] for x in per_query]
    row |= {
        "queries_requested": len(queries),
        "queries_run": len(per_query),
        "budget_s": a.budget_s,
        "budget_exhausted": exhausted,
        "score_all": arm(t_all),
        "best_options": arm(t_best) | {"k": 1},
        "best_speedup": float(np.mean(t_all) / np.mean(t_best)) if t_best else None,
        "best_speedup_ci95": paired_ratio_ci(t_all, t_best),
        "agreement": float(np.mean(agree)) if agree else None,
        "accuracy_all": float(np.mean([x["pred_all"] == x["gold"] for x in per_query]))
        if per_query
        else None,
        "queries": per_query,
    }
    print(
        f"   {name} @ {context}: {n_fit} shots, {len(prompt)} tokens, prefill {pc.prefill_s:.2f} s; "
        f"{len(per_query)} queries, all {row['score_all']['mean_s']:.3f} s, best {row['best_options']['mean_s']:.3f} s",
        flush=True,
    )

    # ---- save the cache and load it back
    key = model_key(model, name, None, tok)
    with tempfile.TemporaryDirectory(prefix="bench_long_context.") as d:
        path = Path(d) / "prompt.safetensors"
        with Timer(device) as ts:
            pc.save(path, key)
        with Timer(device) as tl:
            loaded = PromptCache.load(path, model, key, prompt_ids=prompt)
        diff = None
        if first_lps is not None:
            again = score_all(loaded, [(queries[0].ids, queries[0].option_ids)], budget_tokens)[0]
            diff = max(abs(x - y) for x, (y, _) in zip(first_lps, again))
        row["cache"] = {
            "file_mb": path.stat().st_size / 2**20,
            "save_s": ts.s,
            "load_s": tl.s,
            "runs": 1,  # single runs
            "loaded_max_abs_diff": diff,
        }
        del loaded

    # ---- lm-evaluation-harness's algorithm: context + option for every option (extrapolated)
    if n_fit >= a.lmeval_shots and per_query:
        q = queries[0]
        j = per_query[0]["gold"] if per_query[0]["gold"] is not None else 0
        ids = prompt + list(q.ids) + list(q.option_ids[j])
        del pc  # its memory is not needed by the uncached pass
        gc.collect()
        lp, fwd_s = uncached_option_logprob(model, ids, len(prompt) + len(q.ids), device)
        n_opt = len(q.option_ids)
        est = n_opt * fwd_s
        lm = {
            "extrapolated": True,
            "method": (
                "n_options x the seconds of one uncached forward pass over prompt + query + one option "
                "(run once); lm-eval itself not run"
            ),
            "forward_tokens": len(ids),
            "forward_s": fwd_s,
            "forward_runs": 1,  # a single run: no interval
            "n_options": n_opt,
            "s_per_query": est,
            "forward_vs_cached_abs_diff": abs(lp - first_lps[j]),
        }
        for arm_name in ("score_all", "best_options"):
            m, ci = row[arm_name]["mean_s"], row[arm_name]["ci95_s"]
            n = row["queries_run"]
            lm[f"ratio_vs_{arm_name}"] = est / m
            # only the cached arm's spread: the uncached pass is one run
            lm[f"ratio_vs_{arm_name}_ci95"] = [est / ci[1], est / ci[0]] if ci else None
            # a conservative figure: the prefill amortised over only the queries this run scored
            lm[f"ratio_vs_{arm_name}_incl_prefill"] = est / (m + row["prefill_s"] / n)
        row["lmeval_style"] = lm
        print(f"   lm-eval style (extrapolated): {est:.1f} s/query from one {fwd_s:.2f} s pass", flush=True)
    row["max_rss_mb"] = max_rss_mb()
    row["level_s"] = time.perf_counter() - t_level
    return row


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--tiny", action="store_true", help="tiny random models, synthetic 150-way task, small contexts"
    )
    ap.add_argument("--models", default="", help=f"comma list (default {SMOLLM2},{GEMMA3})")
    ap.add_argument(
        "--contexts",
        default="",
        help="comma list for every model (default per model: 2048,8192 / 2048,8192,32768)",
    )
    ap.add_argument("--queries", type=int, default=8, help="test queries scored per context")
    ap.add_argument("--min-queries", type=int, default=2, help="queries scored even past the budget")
    ap.add_argument("--budget-s", type=float, default=0, help="seconds per context level (0: 900, --tiny 60)")
    ap.add_argument(
        "--lmeval-shots",
        type=int,
        default=0,
        help="shots from which the lm-eval-style cost is estimated (0: 1000, --tiny 5)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=-1,
        help="torch threads (0: torch's default; default 1 with --tiny, else 0)",
    )
    ap.add_argument("--dtype", default="float32", help="model.dtype (float32: the CPU scoring default)")
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    a.models = [
        m
        for m in (a.models or (f"{TINY_LLAMA},{TINY_GEMMA3}" if a.tiny else f"{SMOLLM2},{GEMMA3}")).split(",")
        if m
    ]
    a.contexts = [int(c) for c in a.contexts.split(",") if c] if a.contexts else None
    a.budget_s = a.budget_s or (60.0 if a.tiny else 900.0)
    a.lmeval_shots = a.lmeval_shots or (5 if a.tiny else 1000)
    if a.threads < 0:  # tiny matrices gain nothing from a second thread, and lose much on a busy machine
        a.threads = 1 if a.tiny else 0
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    import torch

    from manyicl.config import ModelConfig
    from manyicl.fileio import atomic_write_json
    from manyicl.modeling import load_model

    torch.manual_seed(0)
    if a.threads:
        torch.set_num_threads(a.threads)
    out = Path(a.out) if a.out else OUT / ("long_context_tiny.json" if a.tiny else "long_context.json")
    task, source, note = load_task(a.tiny)
    t0 = time.perf_counter()
    res: dict = {
        "benchmark": "long_context",
        "tiny": a.tiny,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}",
        "task": {"name": task.name, "source": source, "note": note, "labels": len(task.labels)},
        "settings": {
            "queries": a.queries,
            "min_queries": a.min_queries,
            "budget_s": a.budget_s,
            "dtype": a.dtype,
            "lmeval_shots": a.lmeval_shots,
            "n_boot": N_BOOT,
            "threads": torch.get_num_threads(),
        },
        "models": [],
        "rows": [],
    }

    def save() -> None:  # after every level: a killed run keeps what it measured
        res["wall_s"] = time.perf_counter() - t0
        res["lmeval_reached"] = any("lmeval_style" in r for r in res["rows"])
        atomic_write_json(out, res)

    for name in a.models:
        entry: dict = {"model": name}
        res["models"].append(entry)
        try:
            t = time.perf_counter()
            model, tok = load_model(ModelConfig(name_or_path=name, dtype=a.dtype))
            entry["load_s"] = time.perf_counter() - t
        except Exception as e:  # noqa: BLE001 - an opt-in model that is not installed is skipped
            if name not in OPT_IN:
                raise
            entry |= {"status": "skipped", "note": f"could not load {name}: {str(e).splitlines()[0]}"}
            print(f"== {entry['note']} -- skipped", flush=True)
            save()
            continue
        device = next(model.parameters()).device
        positions = getattr(model.config, "max_position_embeddings", None)
        entry |= {
            "status": "ok",
            "dtype": str(model.dtype).removeprefix("torch."),
            "max_positions": positions,
        }
        with torch.inference_mode():  # warm-up, untimed: the first pass of a process pays one-off costs
            model(input_ids=torch.ones(1, 16, dtype=torch.long, device=device), use_cache=False)
        for ctx in a.contexts or DEFAULT_CONTEXTS.get(name, [2048]):
            if positions and ctx > positions:
                entry.setdefault("skipped_contexts", []).append(ctx)
                print(f"== {name}: context {ctx} exceeds its {positions} positions -- skipped", flush=True)
                continue
            print(f"== {name} @ {ctx}", flush=True)
            res["rows"].append(run_level(model, tok, name, task, ctx, a, device))
            gc.collect()
            save()
        del model, tok
        gc.collect()
    save()
    print(report(res))
    print(f"\nwritten: {out}")
    return 0


# --------------------------------------------------------------------------------------------
# The report: from the results alone
# --------------------------------------------------------------------------------------------


def _f(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _ci(x, digits: int = 3) -> str:
    return "" if not x else f" [{x[0]:,.{digits}f}, {x[1]:,.{digits}f}]"


def report(res: dict) -> str:
    """Markdown tables read from the results alone (``benchmarks/run.py`` renders its section with it)."""
    task = res["task"]
    s = res["settings"]
    lines = [
        f"{res['machine']}; {s['dtype']}; task {task['name']} ({task['labels']}-way"
        f"{', synthetic stand-in' if task['source'] == 'synthetic' else ''}); "
        f"up to {s['queries']} queries per context, {s['budget_s']:.0f} s budget per context.",
        "",
        "| model | context | shots | prompt tokens | prefill s (1 run) | prefill tok/s | all options s/query "
        "[95% CI] (n) | best_options k=1 s/query [95% CI] (n) | speed-up [95% CI] | agreement | cache MB "
        "| save s | load s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for r in res["rows"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['context']} | {r['error']} |" + " |" * 10)
            continue
        al, be, c = r["score_all"], r["best_options"], r["cache"]
        agree = "-" if r["agreement"] is None else f"{r['agreement']:.0%} ({r['queries_run']})"
        lines.append(
            f"| {r['model']} | {r['context']:,} | {r['shots']:,} | {r['prompt_tokens']:,} | {_f(r['prefill_s'], 2)} | "
            f"{_f(r['prefill_tokens_per_s'], 0)} | {_f(al['mean_s'])}{_ci(al['ci95_s'])} ({al['n']}) | "
            f"{_f(be['mean_s'])}{_ci(be['ci95_s'])} ({be['n']}) | {_f(r['best_speedup'], 2)}x"
            f"{_ci(r['best_speedup_ci95'], 2)} | {agree} | {_f(c['file_mb'], 2)} | {_f(c['save_s'])} | "
            f"{_f(c['load_s'])} |"
        )
        if r.get("budget_exhausted"):
            notes.append(
                f"{r['model']} @ {r['context']}: the {r['budget_s']:.0f} s budget ran out after "
                f"{r['queries_run']} of {r['queries_requested']} queries."
            )
    for m in res["models"]:
        if m.get("status") == "skipped":
            notes.append(f"{m['model']} skipped: {m['note']}.")
        if m.get("skipped_contexts"):
            notes.append(
                f"{m['model']}: contexts {', '.join(map(str, m['skipped_contexts']))} exceed its "
                f"{m['max_positions']} positions, not run."
            )
    if task.get("note"):
        notes.append(task["note"] + ".")
    lm_rows = [r for r in res["rows"] if r.get("lmeval_style")]
    lines += [
        "",
        f"lm-evaluation-harness-style recomputation at ≥{s['lmeval_shots']:,} shots (context + option for every "
        "option; **extrapolated**: options x one uncached forward pass over prompt + query + one option, run once; "
        "lm-eval itself not run). Ratio intervals carry only the cached arm's spread.",
        "",
    ]
    if lm_rows:
        lines += [
            "| model | context | shots | uncached pass s (1 run, tokens) | options | lm-eval-style s/query "
            "(extrapolated) | vs all options [95% CI] | vs best_options [95% CI] | vs all options, prefill "
            "amortised over n |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in lm_rows:
            lm = r["lmeval_style"]
            lines.append(
                f"| {r['model']} | {r['context']:,} | {r['shots']:,} | {_f(lm['forward_s'], 2)} "
                f"({lm['forward_tokens']:,}) | {lm['n_options']} | {_f(lm['s_per_query'], 1)} (extrapolated) | "
                f"{_f(lm['ratio_vs_score_all'], 0)}x{_ci(lm['ratio_vs_score_all_ci95'], 0)} | "
                f"{_f(lm['ratio_vs_best_options'], 0)}x{_ci(lm['ratio_vs_best_options_ci95'], 0)} | "
                f"{_f(lm['ratio_vs_score_all_incl_prefill'], 1)}x (n={r['queries_run']}) |"
            )
    else:
        lines.append(
            f"No configuration's prompt reached {s['lmeval_shots']:,} shots: no lm-eval-style estimate."
        )
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
