"""Evaluation workflow: shot curves from 0 to the most shots that fit, with a cached prompt.

For each (model, task, seed) and every shot count k, the k demonstrations are a balanced draw (equal
label counts) in random order, as the paper stratifies each prompt; a k-shot prompt is never the prefix
of a bigger shuffled one (its labels would be unbalanced). Each prompt is processed once and its KV
cache reused for every query: the query is appended, scored (all options in one pass) or decoded
greedily, and cropped off again. ``demos: per_query`` instead draws fresh demonstrations for every
query (no shared cache, one prefill per query) to measure what the shared prompt costs in accuracy.
All scoring goes through the :class:`~manyicl.scoring.Scorer` interface; the backend (manyicl's cached
path, or vLLM for generation) is chosen once per run by :class:`~manyicl.scoring.ScorerFactory`.

Every query outcome is kept (``predictions.jsonl``); scores carry 95% intervals; the best shot count
is chosen on dev queries (disjoint from the test queries) and reported on the test queries.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .caching import PromptCache, model_key
from .config import EvalConfig
from .data import load_tasks
from .eval_summary import query_matrix, summarize  # noqa: F401 - re-exported
from .fileio import atomic_write_json
from .memory import PeakMemory, eval_guard
from .metrics import score_generation
from .option_search import option_score
from .predictions import load_predictions, save_predictions  # noqa: F401 - re-exported
from .runs import PointStore
from .scoring import HFScorer, MakeScorer, Scorer, ScorerFactory, batch_tokens  # noqa: F401 - batch_tokens re-exported
from .shots import (  # noqa: F401 - re-exported: the prompt-building API callers know from here
    PreparedTask,
    Query,
    answer_mode,
    build_prompt,
    per_query_demos,
    prepare_task,
    shot_plan,
)
from .tasks import Task

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Scoring one prompt
# --------------------------------------------------------------------------------------------


def score_queries(
    scorer: Scorer | PromptCache,
    prepared: PreparedTask,
    tokenizer=None,
    normalize: str = "none",
    budget: int = 4096,
    queries: list[Query] | None = None,
    top_k: int | None = None,
) -> tuple[list[dict], list[str]]:
    """Score the queries of ``prepared`` (or ``queries``) after the scorer's prompt; per-query scores and
    predictions. A bare :class:`PromptCache` is scored through an :class:`HFScorer` (``tokenizer`` and
    ``budget`` are for that case only: a Scorer has its own). ``top_k``: only the k best options are
    scored exactly (the same predictions); the pruned ones' ``option_scores`` are None."""
    if isinstance(scorer, PromptCache):
        scorer = HFScorer.from_cache(scorer, tokenizer, token_budget=budget)
    task = prepared.task
    scores, preds = [], []
    queries = prepared.queries if queries is None else queries
    if prepared.mode == "options":
        items = [(q.ids, q.option_ids) for q in queries]
        if top_k is None:
            found = [([lp for lp, _ in r], [n for _, n in r], None) for r in scorer.score_options(items)]
        else:
            found = [(r.logprobs, r.tokens, r.exact) for r in scorer.best_options(items, top_k, normalize)]
        for q, (lps, ns, exact) in zip(queries, found):
            vals = [option_score(lp, n, normalize) for lp, n in zip(lps, ns)]
            if exact is not None:
                vals = [v if e else None for v, e in zip(vals, exact)]
            pred = q.options[int(np.argmax([-np.inf if v is None else v for v in vals]))]
            scores.append(
                {
                    "score": float(pred == q.example.output),
                    "option_scores": [None if v is None else round(v, 4) for v in vals],
                }
            )
            preds.append(pred)
        return scores, preds
    texts = scorer.generate([q.ids for q in queries], prepared.max_new_tokens, task.template.stop_strings())
    for q, text in zip(queries, texts):
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
    """One per model x task x seed x shot count: test score, dev score, cost."""
    summary: list[dict]
    """One per model x task: the curve with 95% intervals, dev-selected best, at-max, majority baseline."""
    cache_timing: list[dict]
    predictions: list[dict] = field(default_factory=list)
    """One per model x task x seed x shots x query (test and dev): gold, prediction, score, correct."""
    tasks: list[dict] = field(default_factory=list)
    """Per task: queries, dev queries, skipped, duplicates removed, majority baseline."""
    report_path: Path | None = None
    memory: dict | None = None
    """The memory guard's estimate (MB) and the peak measured while evaluating."""
    scoring_dtype: str = ""
    models: dict = field(default_factory=dict)
    """Per model label: the base's name, the adapter, dtype and a weights fingerprint (ModelSession.identity)."""


def _model_specs(cfg: EvalConfig) -> list[tuple[str, str | None]]:
    if cfg.adapters:
        return [(str(k), v) for k, v in cfg.adapters.items()]
    return [("base", cfg.model.adapter)]


def scoring_dtype(cfg: EvalConfig, device) -> str:
    """float32 on CPU unless set: bf16 cached and recomputed log-probs differ by up to 0.34 nats and flip
    near-tied predictions; on a GPU the model's own dtype."""
    if cfg.scoring.dtype != "auto":
        return cfg.scoring.dtype
    from .modeling import resolve_dtype

    return "float32" if str(device) == "cpu" else resolve_dtype(cfg.model.dtype, str(device))


def load_dtype(cfg: EvalConfig) -> str:
    """The dtype to load the base model in: float32 where scoring is float32. Upcasting bf16-loaded weights
    would score bf16-rounded weights, and the numbers would depend on whether the CPU has native bf16
    (where ``model.dtype: auto`` is bfloat16) instead of being the same on every machine."""
    from .modeling import resolve_device

    if scoring_dtype(cfg, resolve_device(cfg.model.device)) == "float32":
        return "float32"
    return cfg.model.dtype


def check_adapters(cfg: EvalConfig) -> None:
    """Refuse a missing or damaged adapter before anything is written: a refused run must leave no
    ``points/settings.json`` that makes the corrected rerun look like a resume. The error names the
    adapter's key (``adapters.LABEL``, or ``model.adapter`` without ``adapters``)."""
    from .modeling import check_adapter

    for label, adapter in _model_specs(cfg):
        if adapter:
            check_adapter(adapter, f"adapters.{label}" if cfg.adapters else "model.adapter")


def evaluate(
    cfg: EvalConfig,
    model=None,
    tokenizer=None,
    tasks: list[Task] | None = None,
    scorers: MakeScorer | None = None,
) -> EvalResult:
    """Run the shot-curve evaluation per ``cfg``; ``model``/``tokenizer``/``tasks`` may be passed in, and
    ``scorers`` (``scorers(model, tokenizer, adapter, mode)`` -> :class:`Scorer`) replaces the backend
    that ``cfg.scoring`` chooses."""
    from dataclasses import replace

    from .fileio import check_output_dir, exclusive_lock
    from .modeling import load_model

    out = check_output_dir(cfg.output_dir)
    with exclusive_lock(out, "evaluation"):
        store = PointStore(out, cfg)
        tasks = (
            tasks if tasks is not None else load_tasks(cfg.tasks)
        )  # bad task data fails before the model loads
        check_adapters(cfg)
        if model is None:
            model, tokenizer = load_model(replace(cfg.model, adapter=None, dtype=load_dtype(cfg)))
        return _evaluate(cfg, out, store, model, tokenizer, tasks, scorers)


def _evaluate(
    cfg: EvalConfig,
    out: Path,
    store: PointStore,
    model,
    tokenizer,
    tasks: list[Task],
    scorers: MakeScorer | None = None,
) -> EvalResult:
    from tqdm.auto import tqdm

    from .modeling import _DTYPES
    from .session import ModelSession

    t_prep = time.perf_counter()
    prepared = [prepare_task(t, tokenizer, cfg) for t in tasks]
    log.info("prepared %d tasks in %.1f s", len(prepared), time.perf_counter() - t_prep)
    specs = _model_specs(cfg)
    plans = {
        (task_prep.task.name, seed): shot_plan(task_prep, cfg, seed)
        for task_prep in prepared
        for seed in cfg.seeds
    }
    device = next(model.parameters()).device
    dtype_name = scoring_dtype(cfg, device)
    orig_dtype = next(model.parameters()).dtype
    if _DTYPES[dtype_name] != orig_dtype:
        model.to(_DTYPES[dtype_name])
    mem_est = eval_guard(model, cfg, batch_tokens(cfg.scoring.batch_tokens, device), device)
    store.begin()
    if scorers is None:  # the backend, chosen once for the whole run
        scorers = ScorerFactory(cfg, {task_prep.mode for task_prep in prepared}, device)

    def points(task_prep, seed):
        plan = plans[(task_prep.task.name, seed)][0]
        # 0 shots has no demonstrations: the same for every seed, scored once (with the first seed)
        return {k: v for k, v in plan.items() if not (len(v) == 0 and seed != cfg.seeds[0])}

    total = sum(len(points(task_prep, s)) for task_prep in prepared for s in cfg.seeds) * len(specs)
    bar = tqdm(total=total, disable=not cfg.progress, desc="eval", unit="curve-pt")
    mem = PeakMemory(interval=0.05).start()
    rows: list[dict] = []
    preds_out: list[dict] = []
    cache_timing: list[dict] = []
    session = ModelSession(model, tokenizer, cfg.model.name_or_path)
    identities: dict[str, dict] = {}
    try:
        for label, adapter in specs:
            with session.adapter(adapter) as m:  # removed again on exit, also on an error
                key = model_key(m, cfg.model.name_or_path, adapter, tokenizer)
                identities[label] = session.identity()
                for task_prep in prepared:
                    for seed in cfg.seeds:
                        plan = points(task_prep, seed)
                        n_fit = plans[(task_prep.task.name, seed)][1]
                        for shot_label, demo_idx in sorted(plan.items(), key=lambda kv: -len(kv[1])):
                            k = len(demo_idx)
                            done = store.get(label, task_prep.task.name, seed, shot_label)
                            if done is not None:  # finished before a kill: kept, not redone
                                rows.append(done["row"])
                                preds_out.extend(done["predictions"])
                                bar.update(1)
                                continue
                            t0 = time.perf_counter()
                            scorer = scorers(m, tokenizer, adapter, task_prep.mode)
                            if cfg.demos == "per_query" and k > 0:
                                scores, preds, prefill_s, prompt_tokens = [], [], 0.0, 0
                                for qi, q in enumerate(task_prep.queries):
                                    d = per_query_demos(task_prep, cfg, seed, k, qi)
                                    scorer.set_prompt(build_prompt(task_prep, d))
                                    sc, pr = score_queries(
                                        scorer,
                                        task_prep,
                                        normalize=cfg.scoring.normalize,
                                        queries=[q],
                                        top_k=cfg.scoring.top_k,
                                    )
                                    scores += sc
                                    preds += pr
                                    prefill_s += scorer.prefill_s
                                    prompt_tokens += len(scorer.prompt_ids)
                                prompt_tokens //= max(len(task_prep.queries), 1)
                            else:
                                prompt = build_prompt(task_prep, demo_idx)
                                scorer.set_prompt(prompt)
                                if (
                                    cfg.save_prompt_caches
                                    and shot_label == "max"
                                    and seed == cfg.seeds[0]
                                    and isinstance(scorer, HFScorer)  # only manyicl's own caches save
                                ):
                                    cache_timing.append(
                                        _time_cache_io(
                                            scorer.cache, out, label, task_prep.task.name, key, m, cfg
                                        )
                                    )
                                prefill_s, prompt_tokens = scorer.prefill_s, len(prompt)
                                scores, preds = score_queries(
                                    scorer,
                                    task_prep,
                                    normalize=cfg.scoring.normalize,
                                    top_k=cfg.scoring.top_k,
                                )
                            del scorer  # the prompt's cache goes before the next point's prefill
                            dt = (
                                time.perf_counter()
                                - t0
                                - (prefill_s if cfg.demos != "per_query" or k == 0 else 0)
                            )
                            test_scores = [x["score"] for x in scores[: task_prep.n_test]]
                            dev_scores = [x["score"] for x in scores[task_prep.n_test :]]
                            row = {
                                "model": label,
                                "task": task_prep.task.name,
                                "family": task_prep.task.family,
                                "category": task_prep.task.category,
                                "metric": task_prep.task.metric,
                                "mode": task_prep.mode,
                                "shots_requested": shot_label,
                                "shots": k,
                                "max_shots_fit": n_fit,
                                "seed": seed,
                                "score": float(np.mean(test_scores)),
                                "n_queries": len(test_scores),
                                "dev_score": float(np.mean(dev_scores)) if dev_scores else None,
                                "n_dev": len(dev_scores),
                                "prompt_tokens": prompt_tokens,
                                "prefill_s": prefill_s,
                                "query_s": dt,
                                "demos": cfg.demos,
                            }
                            extra = [x for x in scores[: task_prep.n_test] if "exact_match" in x]
                            if extra:
                                row["exact_match"] = float(np.mean([x["exact_match"] for x in extra]))
                            rows.append(row)
                            point_preds = []
                            for qi, (q, x, pred) in enumerate(zip(task_prep.queries, scores, preds)):
                                point_preds.append(
                                    {
                                        "model": label,
                                        "task": task_prep.task.name,
                                        "seed": seed,
                                        "shots": k,
                                        "shots_requested": shot_label,
                                        "split": "test" if qi < task_prep.n_test else "dev",
                                        "query": task_prep.query_index[qi],
                                        "gold": q.example.output,
                                        "prediction": pred,
                                        "score": x["score"],
                                        "correct": bool(x["score"] >= 1.0),
                                    }
                                    | ({"option_scores": x["option_scores"]} if "option_scores" in x else {})
                                )
                            preds_out.extend(point_preds)
                            store.put(label, task_prep.task.name, seed, shot_label, row, point_preds)
                            bar.set_postfix(model=label, task=task_prep.task.name[:20], k=k)
                            bar.update(1)
    finally:
        model = session.model  # the bare base again: the adapter blocks have removed their layers
        if next(model.parameters()).dtype != orig_dtype:
            model.to(orig_dtype)  # bf16 -> fp32 -> bf16 is exact: the caller's model is unchanged
    bar.close()
    mem.stop()
    task_info = [
        {
            "task": task_prep.task.name,
            "mode": task_prep.mode,
            "queries": task_prep.n_test,
            "dev_queries": len(task_prep.queries) - task_prep.n_test,
            "dev_split": task_prep.dev_split,
            "skipped_queries": task_prep.skipped_queries,
            "truncated_queries": task_prep.truncated_queries,
            "duplicates": task_prep.duplicates,
            "majority": task_prep.majority,
            "demo_pool": len(task_prep.demos.query),
        }
        for task_prep in prepared
    ]
    summary = summarize(rows, preds_out, task_info)
    res = EvalResult(
        out,
        rows,
        summary,
        cache_timing,
        preds_out,
        task_info,
        memory={"estimate": mem_est, "measured": mem.as_dict()},
        scoring_dtype=dtype_name,
        models=identities,
    )
    save_results_json(res, cfg)
    save_predictions(out / "predictions.jsonl", preds_out)
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


def save_results_json(res: EvalResult, cfg: EvalConfig) -> Path:
    from .config import to_dict

    return atomic_write_json(
        res.output_dir / "results.json",
        {
            "config": to_dict(cfg),
            "summary": res.summary,
            "rows": res.rows,
            "tasks": res.tasks,
            "scoring_dtype": res.scoring_dtype,
            "prompt_cache_timing": res.cache_timing,
            "memory": res.memory,
            "models": res.models,
        },
    )
