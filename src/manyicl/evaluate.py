"""Evaluation workflow: shot curves from 0 to the most shots that fit, with a cached prompt.

For each (model, task, seed) the demonstrations are drawn once, in a stratified order, and the
prompt with the *most* shots is processed once. Every smaller shot count uses a prefix of that
prompt, so its KV cache is the big one cropped: no prompt is ever recomputed, neither per query
nor per shot count. Each query is appended to the cache, scored (all options in one pass) or
decoded greedily, and cropped off again.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .caching import PromptCache, model_key
from .config import EvalConfig, dump_yaml
from .data import load_tasks, stable_seed
from .errors import ManyICLError
from .fileio import atomic_write_json, atomic_write_text
from .memory import PeakMemory, eval_guard
from .metrics import score_generation
from .packing import stratified_order
from .tasks import Example, Task
from .templates import Renderer, tokenize_task

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Per-task preparation (tokenize once, reused by every model, seed and shot count)
# --------------------------------------------------------------------------------------------


@dataclass
class Query:
    ids: list[int]
    example: Example
    options: tuple[str, ...] = ()
    option_ids: list[list[int]] = field(default_factory=list)


@dataclass
class PreparedTask:
    task: Task
    mode: str  # "options" or "generate"
    demos: object  # TokenizedTask of the demonstration split
    queries: list[Query]
    reserve: int  # tokens kept free after the prompt for the longest query + answer
    max_new_tokens: int
    skipped_queries: int = 0

    @property
    def header_len(self) -> int:
        return len(self.demos.header)


def answer_mode(task: Task) -> str:
    sample = next(iter(task.splits.values()), [])[:50]
    has_options = bool(task.labels) or any(task.options_for(e) for e in sample)
    return "options" if task.metric == "accuracy" and has_options else "generate"


def prepare_task(task: Task, tokenizer, cfg: EvalConfig) -> PreparedTask:
    if not task.has_split(cfg.demo_split) or not task.has_split(cfg.eval_split):
        raise ManyICLError(
            f"task {task.name} needs splits '{cfg.demo_split}' (demonstrations) and '{cfg.eval_split}' (queries); "
            f"it has {', '.join(task.splits)}"
        )
    mode = answer_mode(task)
    demos = tokenize_task(task, tokenizer, cfg.demo_split, cfg.max_length // 2, cfg.on_overlong, cfg.add_bos)
    r = Renderer(tokenizer, task.template, add_bos=cfg.add_bos)
    pool = task.split(cfg.eval_split)
    rng = np.random.default_rng(stable_seed("queries", task.name))
    picked = sorted(rng.choice(len(pool), size=min(cfg.max_queries, len(pool)), replace=False).tolist())
    if cfg.scoring.max_new_tokens:
        max_new = cfg.scoring.max_new_tokens
    else:
        longest = max((len(t) for t in demos.target), default=16)
        max_new = min(cfg.scoring.max_new_tokens_cap, int(longest * 1.5) + 8)
    option_cache: dict[tuple[str, ...], list[list[int]]] = {}
    queries: list[Query] = []
    skipped = 0
    budget = cfg.max_length // 2  # a query + its answer may take at most half the window
    for i in picked:
        ex = pool[i]
        opts: tuple[str, ...] = ()
        opt_ids: list[list[int]] = []
        if mode == "options":
            opts = task.options_for(ex)
            if opts not in option_cache:
                option_cache[opts] = r.target_ids(list(opts))
            opt_ids = option_cache[opts]
            answer_len = max(len(o) for o in opt_ids)
        else:
            answer_len = max_new
        q_ids, cut = r.fit_query(ex.input, budget - answer_len)
        if cut and cfg.on_overlong != "truncate_input":
            if cfg.on_overlong == "error":
                raise ManyICLError(
                    f"{task.name}/{cfg.eval_split} query {i + 1} does not fit in max_length {cfg.max_length}; "
                    "set on_overlong to skip or truncate_input"
                )
            skipped += 1
            continue
        queries.append(Query(q_ids, ex, opts, opt_ids))
    if not queries:
        raise ManyICLError(f"task {task.name}: no test query fits in max_length {cfg.max_length}")
    if mode == "options":
        reserve = max(len(q.ids) + max(len(o) for o in q.option_ids) for q in queries)
    else:
        reserve = max(len(q.ids) for q in queries) + max_new
    return PreparedTask(task, mode, demos, queries, reserve, max_new, skipped)


def shot_plan(pt: PreparedTask, cfg: EvalConfig, seed: int) -> tuple[np.ndarray, dict[str, int], int]:
    """Demo order for this seed, the shot counts to run ({label: k}) and the most that fit."""
    demos = pt.demos
    rng = np.random.default_rng(stable_seed(seed, "demos", pt.task.name))
    labels = demos.label_ids
    order = stratified_order(labels, rng) if labels is not None else rng.permutation(len(demos.query))
    budget = cfg.max_length - pt.reserve - pt.header_len
    csum = np.cumsum(demos.lengths[order]) if len(order) else np.zeros(0)
    n_fit = int(np.searchsorted(csum, budget, side="right")) if len(order) else 0
    plan: dict[str, int] = {}
    for s in cfg.shots:
        if s == "max":
            plan["max"] = n_fit
        elif int(s) <= n_fit:
            plan[str(int(s))] = int(s)
    return order, plan, n_fit


# --------------------------------------------------------------------------------------------
# Scoring one prompt
# --------------------------------------------------------------------------------------------


def batch_tokens(setting: int, device) -> int:
    if setting:
        return setting
    return 16384 if str(device).startswith("cuda") else 4096


class PromptOnly:
    """Stands in for a PromptCache when another engine (vLLM) generates: it only tracks the prompt ids."""

    def __init__(self, prompt_ids: list[int], device="cpu"):
        self.prompt_ids, self.prefill_s, self.device = list(prompt_ids), 0.0, device

    def shrink_prompt(self, n: int) -> None:
        self.prompt_ids = self.prompt_ids[:n]


def score_queries(
    pc: PromptCache, pt: PreparedTask, tokenizer, normalize: str, budget: int = 4096, vgen=None, adapter=None
) -> tuple[list[dict], list[str]]:
    """Score every query of ``pt`` against the prompt in ``pc`` (batched); per-query scores and predictions."""
    task = pt.task
    scores, preds = [], []
    if pt.mode == "generate" and vgen is not None:
        texts = vgen.generate(
            [pc.prompt_ids + q.ids for q in pt.queries],
            pt.max_new_tokens,
            task.template.stop_strings(),
            adapter,
        )
        for q, text in zip(pt.queries, texts):
            scores.append(
                score_generation(
                    task.metric, text.strip(), q.example.output, task.labels, task.label_separator
                )
            )
            preds.append(text.strip())
        return scores, preds
    if pt.mode == "options":
        all_lls = pc.score_options_many([(q.ids, q.option_ids) for q in pt.queries], token_budget=budget)
        for q, lls in zip(pt.queries, all_lls):
            vals = [lp / n if normalize == "tokens" else lp for lp, n in lls]
            pred = q.options[int(np.argmax(vals))]
            scores.append({"score": float(pred == q.example.output)})
            preds.append(pred)
        return scores, preds
    texts = pc.generate_many(
        [q.ids for q in pt.queries],
        tokenizer,
        pt.max_new_tokens,
        task.template.stop_strings(),
        token_budget=max(
            budget, 4096
        ),  # decoding steps feed one token per query: wider batches amortise overhead
    )
    for q, text in zip(pt.queries, texts):
        pred = text.strip()
        scores.append(
            score_generation(task.metric, pred, q.example.output, task.labels, task.label_separator)
        )
        preds.append(pred)
    return scores, preds


# --------------------------------------------------------------------------------------------
# The workflow
# --------------------------------------------------------------------------------------------


@dataclass
class EvalResult:
    output_dir: Path
    rows: list[dict]
    summary: list[dict]
    cache_timing: list[dict]
    report_path: Path | None = None
    memory: dict | None = None
    """The memory guard's estimate (MB) and the peak measured while evaluating."""


def _model_specs(cfg: EvalConfig) -> list[tuple[str, str | None]]:
    if cfg.adapters:
        return [(str(k), v) for k, v in cfg.adapters.items()]
    return [("base", cfg.model.adapter)]


def evaluate(cfg: EvalConfig, model=None, tokenizer=None, tasks: list[Task] | None = None) -> EvalResult:
    """Run the shot-curve evaluation per ``cfg``; ``model``/``tokenizer``/``tasks`` may be passed in."""
    from dataclasses import replace

    from tqdm.auto import tqdm

    from .modeling import load_adapter, load_model

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", dump_yaml(cfg))
    if model is None:
        model, tokenizer = load_model(replace(cfg.model, adapter=None))
    tasks = tasks if tasks is not None else load_tasks(cfg.tasks)
    t_prep = time.perf_counter()
    prepared = [prepare_task(t, tokenizer, cfg) for t in tasks]
    log.info("prepared %d tasks in %.1f s", len(prepared), time.perf_counter() - t_prep)
    specs = _model_specs(cfg)
    plans = {(pt.task.name, seed): shot_plan(pt, cfg, seed) for pt in prepared for seed in cfg.seeds}
    total = sum(len(plans[(pt.task.name, s)][1]) for pt in prepared for s in cfg.seeds) * len(specs)
    bar = tqdm(total=total, disable=not cfg.progress, desc="eval", unit="curve-pt")
    device = next(model.parameters()).device
    mem_est = eval_guard(model, cfg, batch_tokens(cfg.scoring.batch_tokens, device), device)
    vgen = None  # vLLM, when used, holds its own memory (gpu_memory_utilization) and is not estimated
    if cfg.scoring.generation_backend == "vllm" and any(pt.mode == "generate" for pt in prepared):
        from .vllm_backend import VLLMGenerator

        vgen = VLLMGenerator(replace(cfg.model, adapter=None), max_model_len=cfg.max_length)
    mem = PeakMemory(interval=0.05).start()
    rows: list[dict] = []
    cache_timing: list[dict] = []
    for label, adapter in specs:
        m = load_adapter(model, adapter) if adapter else model
        m.eval()
        key = model_key(m, cfg.model.name_or_path, adapter, tokenizer)
        for pt in prepared:
            for seed in cfg.seeds:
                order, plan, n_fit = plans[(pt.task.name, seed)]
                if not plan:
                    continue
                k_max = max(plan.values())
                prompt = pt.demos.header.tolist()
                prefix_len = {0: len(prompt)}
                for j, idx in enumerate(order[:k_max]):
                    ids, _ = pt.demos.example_ids(int(idx))
                    prompt += ids.tolist()
                    prefix_len[j + 1] = len(prompt)
                if vgen is not None and pt.mode == "generate":
                    pc = PromptOnly(prompt)
                else:
                    pc = PromptCache(m, prompt, prefill_chunk=cfg.scoring.prefill_chunk)
                if cfg.save_prompt_caches and seed == cfg.seeds[0] and isinstance(pc, PromptCache):
                    cache_timing.append(_time_cache_io(pc, out, label, pt.task.name, key, m, cfg))
                for shot_label, k in sorted(plan.items(), key=lambda kv: -kv[1]):
                    pc.shrink_prompt(prefix_len[k])
                    t0 = time.perf_counter()
                    scores, preds = score_queries(
                        pc,
                        pt,
                        tokenizer,
                        cfg.scoring.normalize,
                        batch_tokens(cfg.scoring.batch_tokens, pc.device),
                        vgen=vgen,
                        adapter=adapter,
                    )
                    dt = time.perf_counter() - t0
                    row = {
                        "model": label,
                        "task": pt.task.name,
                        "family": pt.task.family,
                        "category": pt.task.category,
                        "metric": pt.task.metric,
                        "mode": pt.mode,
                        "shots_requested": shot_label,
                        "shots": k,
                        "max_shots_fit": n_fit,
                        "seed": seed,
                        "score": float(np.mean([s["score"] for s in scores])),
                        "n_queries": len(scores),
                        "prompt_tokens": prefix_len[k],
                        "prefill_s": pc.prefill_s if k == k_max else 0.0,
                        "query_s": dt,
                        "examples": [
                            {"input": q.example.input[:200], "gold": q.example.output, "pred": p}
                            for q, p in list(zip(pt.queries, preds))[:3]
                        ],
                    }
                    extra = [s for s in scores if "exact_match" in s]
                    if extra:
                        row["exact_match"] = float(np.mean([s["exact_match"] for s in extra]))
                    rows.append(row)
                    bar.set_postfix(model=label, task=pt.task.name[:20], k=k)
                    bar.update(1)
                del pc
        if adapter:
            model = m.unload()  # remove the LoRA layers again; the base weights are untouched
    bar.close()
    mem.stop()
    summary = summarize(rows)
    res = EvalResult(
        out, rows, summary, cache_timing, memory={"estimate": mem_est, "measured": mem.as_dict()}
    )
    from .report import write_eval_report

    res.report_path = write_eval_report(res, cfg)
    return res


def _time_cache_io(
    pc: PromptCache, out: Path, label: str, task: str, key: dict, model, cfg: EvalConfig
) -> dict:
    """Save the prompt cache, load it back, and compare with recomputing the prompt."""
    path = out / "prompt_caches" / label / f"{task}.safetensors"
    t0 = time.perf_counter()
    pc.save(path, key)
    save_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    PromptCache.load(path, model, key, prompt_ids=pc.prompt_ids)
    load_s = time.perf_counter() - t0
    return {
        "model": label,
        "task": task,
        "prompt_tokens": len(pc.prompt_ids),
        "recompute_s": pc.prefill_s,
        "save_s": save_s,
        "load_s": load_s,
        "speedup": pc.prefill_s / load_s if load_s else None,
        "file_mb": path.stat().st_size / 2**20,
        "path": str(path),
    }


def summarize(rows: list[dict]) -> list[dict]:
    """Per (model, task): the curve (mean +- std over seeds per shot count), best and at-max scores."""
    groups: dict[tuple[str, str], dict[str, list[dict]]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["task"]), {}).setdefault(r["shots_requested"], []).append(r)
    out = []
    for (model, task), by_shot in groups.items():
        curve = []
        for shot_label, rs in by_shot.items():
            vals = [r["score"] for r in rs]
            curve.append(
                {
                    "shots_requested": shot_label,
                    "shots": float(np.mean([r["shots"] for r in rs])),
                    "mean": float(np.mean(vals)),
                    "std": float(statistics.pstdev(vals)) if len(vals) > 1 else 0.0,
                    "seeds": len(vals),
                }
            )
        curve.sort(key=lambda c: (c["shots"], c["shots_requested"] == "max"))
        best = max(curve, key=lambda c: c["mean"])
        at_max = next((c for c in curve if c["shots_requested"] == "max"), curve[-1])
        first = next(iter(by_shot.values()))[0]
        out.append(
            {
                "model": model,
                "task": task,
                "family": first["family"],
                "category": first["category"],
                "metric": first["metric"],
                "curve": curve,
                "best": best["mean"],
                "best_shots": best["shots"],
                "at_max": at_max["mean"],
                "max_shots": at_max["shots"],
            }
        )
    return out


def save_results_json(res: EvalResult, cfg: EvalConfig) -> Path:
    from .config import to_dict

    return atomic_write_json(
        res.output_dir / "results.json",
        {
            "config": to_dict(cfg),
            "summary": res.summary,
            "rows": res.rows,
            "prompt_cache_timing": res.cache_timing,
            "memory": res.memory,
        },
    )
