"""Evaluation workflow: shot curves from 0 to the most shots that fit, with a cached prompt.

For each (model, task, seed) and every shot count k, the k demonstrations are a balanced draw (equal
label counts) in random order, as the paper stratifies each prompt; a k-shot prompt is never the prefix
of a bigger shuffled one (its labels would be unbalanced). Each prompt is processed once and its KV
cache reused for every query: the query is appended, scored (all options in one pass) or decoded
greedily, and cropped off again. ``demos: per_query`` instead draws fresh demonstrations for every
query (no shared cache, one prefill per query) to measure what the shared prompt costs in accuracy.

Every query outcome is kept (``predictions.jsonl``); scores carry 95% intervals; the best shot count
is chosen on dev queries (disjoint from the test queries) and reported on the test queries.
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
from .overlap import drop_train_test_duplicates
from .packing import balanced_order
from .predictions import load_predictions, save_predictions  # noqa: F401 - re-exported
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
    """Test queries followed by the dev queries (``n_test`` of them are test queries)."""
    reserve: int  # tokens kept free after the prompt for the longest query + answer
    max_new_tokens: int
    skipped_queries: int = 0
    n_test: int = 0
    query_index: list[int] = field(default_factory=list)
    """Each query's index in its split (test queries: the eval split; dev: the split it came from)."""
    dev_split: str = ""
    duplicates: dict = field(default_factory=dict)
    """Within-task train/test duplicates removed (normalised input text): queries and demos dropped."""
    majority: dict | None = None
    """The most frequent gold answer among the test queries and its share (the majority-class baseline)."""

    @property
    def header_len(self) -> int:
        return len(self.demos.header)


def answer_mode(task: Task) -> str:
    sample = next(iter(task.splits.values()), [])[:50]
    has_options = bool(task.labels) or any(task.options_for(e) for e in sample)
    return "options" if task.metric == "accuracy" and has_options else "generate"


def prepare_task(task: Task, tokenizer, cfg: EvalConfig) -> PreparedTask:
    """Tokenize the demonstration pool and pick the test and dev queries (the same for every model,
    seed and shot count). With ``dedup``, eval-split inputs that also occur in the demo split are
    dropped from both before anything is drawn."""
    if not task.has_split(cfg.demo_split) or not task.has_split(cfg.eval_split):
        raise ManyICLError(
            f"task {task.name} needs splits '{cfg.demo_split}' (demonstrations) and '{cfg.eval_split}' (queries); "
            f"it has {', '.join(task.splits)}"
        )
    dups: dict = {}
    if cfg.dedup:
        task, dups = drop_train_test_duplicates(task, cfg.demo_split, cfg.eval_split)
    mode = answer_mode(task)
    pool = task.split(cfg.eval_split)
    if not pool:
        raise ManyICLError(
            f"task {task.name}: every '{cfg.eval_split}' input also occurs in '{cfg.demo_split}' "
            f"({dups.get('queries_dropped', 0)} dropped as train/test duplicates); give the task a separate "
            "test split, or set dedup=false to score them anyway"
        )
    rng = np.random.default_rng(stable_seed("queries", task.name))
    n_test = min(cfg.max_queries, len(pool))
    perm = rng.permutation(len(pool))
    test_idx = sorted(perm[:n_test].tolist())
    dev_pool_split, dev_idx = cfg.eval_split, sorted(perm[n_test : n_test + cfg.dev_queries].tolist())
    demo_task = task
    demo_pool = task.split(cfg.demo_split)
    n_dev = min(cfg.dev_queries, len(demo_pool) // 5)
    if n_dev and not dev_idx:  # no eval examples left: take dev queries out of the demo pool
        drng = np.random.default_rng(stable_seed("dev", task.name))
        dev_idx = sorted(drng.choice(len(demo_pool), n_dev, replace=False).tolist())
        dev_pool_split = cfg.demo_split
        keep = sorted(set(range(len(demo_pool))) - set(dev_idx))
        from dataclasses import replace as _replace

        splits = dict(task.splits)
        splits[cfg.demo_split] = [demo_pool[i] for i in keep]
        dev_examples = [demo_pool[i] for i in dev_idx]
        demo_task = _replace(task, splits=splits)
    else:
        dev_examples = [pool[i] for i in dev_idx]
    demos = tokenize_task(
        demo_task, tokenizer, cfg.demo_split, cfg.max_length // 2, cfg.on_overlong, cfg.add_bos
    )
    r = Renderer(tokenizer, task.template, add_bos=cfg.add_bos)
    if cfg.scoring.max_new_tokens:
        max_new = cfg.scoring.max_new_tokens
    else:
        longest = max((len(t) for t in demos.target), default=16)
        max_new = min(cfg.scoring.max_new_tokens_cap, int(longest * 1.5) + 8)
    option_cache: dict[tuple[str, ...], list[list[int]]] = {}
    queries: list[Query] = []
    index: list[int] = []
    skipped = 0
    budget = cfg.max_length // 2  # a query + its answer may take at most half the window
    kept_test = 0
    candidates = [(i, pool[i], True) for i in test_idx] + [
        (i, e, False) for i, e in zip(dev_idx, dev_examples)
    ]
    for i, ex, is_test in candidates:
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
                    f"{task.name}/{cfg.eval_split} query {i + 1} does not fit in half of max_length "
                    f"{cfg.max_length} ({budget} tokens for query + answer); set on_overlong to skip or "
                    "truncate_input, or raise max_length"
                )
            skipped += 1
            continue
        queries.append(Query(q_ids, ex, opts, opt_ids))
        index.append(i)
        kept_test += is_test
    if not kept_test:
        raise ManyICLError(f"task {task.name}: no test query fits in max_length {cfg.max_length}")
    if mode == "options":
        reserve = max(len(q.ids) + max(len(o) for o in q.option_ids) for q in queries)
    else:
        reserve = max(len(q.ids) for q in queries) + max_new
    majority = None
    if mode == "options":
        golds = [q.example.output for q in queries[:kept_test]]
        top, count = max(((g, golds.count(g)) for g in set(golds)), key=lambda gc: (gc[1], gc[0]))
        majority = {"label": top, "share": count / len(golds), "n": len(golds)}
    return PreparedTask(
        task,
        mode,
        demos,
        queries,
        reserve,
        max_new,
        skipped,
        kept_test,
        index,
        dev_pool_split,
        dups,
        majority,
    )


def shot_plan(pt: PreparedTask, cfg: EvalConfig, seed: int) -> tuple[dict[str, np.ndarray], int]:
    """The demonstrations of every shot count for this seed ({label: demo indices in prompt order}) and
    the most that fit.

    A balanced selection (round-robin over label pools) decides *which* demos a k-shot prompt holds and
    how many fit; each k's order is then an independent shuffle, so no prompt deals labels in rounds and
    no small prompt is the (unbalanced) prefix of a shuffled big one."""
    demos = pt.demos
    rng = np.random.default_rng(stable_seed(seed, "demos", pt.task.name))
    labels = demos.label_ids
    order = balanced_order(labels, rng) if labels is not None else rng.permutation(len(demos.query))
    budget = cfg.max_length - pt.reserve - pt.header_len
    csum = np.cumsum(demos.lengths[order]) if len(order) else np.zeros(0)
    n_fit = int(np.searchsorted(csum, budget, side="right")) if len(order) else 0
    plan: dict[str, np.ndarray] = {}
    for s in cfg.shots:
        k = n_fit if s == "max" else int(s)
        if k > n_fit:
            continue
        label = "max" if s == "max" else str(k)
        plan[label] = np.random.default_rng(stable_seed(seed, "order", pt.task.name, label)).permutation(
            order[:k]
        )
    return plan, n_fit


def per_query_demos(pt: PreparedTask, cfg: EvalConfig, seed: int, k: int, query: int) -> np.ndarray:
    """Fresh demonstrations for one query (``demos: per_query``): a balanced draw of k in random order."""
    rng = np.random.default_rng(stable_seed(seed, "per_query", pt.task.name, k, query))
    labels = pt.demos.label_ids
    order = balanced_order(labels, rng) if labels is not None else rng.permutation(len(pt.demos.query))
    return rng.permutation(order[:k])


# --------------------------------------------------------------------------------------------
# Scoring one prompt
# --------------------------------------------------------------------------------------------


def batch_tokens(setting: int, device) -> int:
    if setting:
        return setting
    return 16384 if str(device).startswith("cuda") else 1024


class PromptOnly:
    """Stands in for a PromptCache when another engine (vLLM) generates: it only tracks the prompt ids."""

    def __init__(self, prompt_ids: list[int], device="cpu"):
        self.prompt_ids, self.prefill_s, self.device = list(prompt_ids), 0.0, device

    def shrink_prompt(self, n: int) -> None:
        self.prompt_ids = self.prompt_ids[:n]


def score_queries(
    pc: PromptCache,
    pt: PreparedTask,
    tokenizer,
    normalize: str,
    budget: int = 4096,
    vgen=None,
    adapter=None,
    queries: list[Query] | None = None,
) -> tuple[list[dict], list[str]]:
    """Score the queries of ``pt`` (or ``queries``) against the prompt in ``pc`` (batched); per-query
    scores and predictions."""
    task = pt.task
    scores, preds = [], []
    queries = pt.queries if queries is None else queries
    if pt.mode == "generate" and vgen is not None:
        texts = vgen.generate(
            [pc.prompt_ids + q.ids for q in queries],
            pt.max_new_tokens,
            task.template.stop_strings(),
            adapter,
        )
        for q, text in zip(queries, texts):
            scores.append(
                score_generation(
                    task.metric, text.strip(), q.example.output, task.labels, task.label_separator
                )
            )
            preds.append(text.strip())
        return scores, preds
    if pt.mode == "options":
        all_lls = pc.score_options_many([(q.ids, q.option_ids) for q in queries], token_budget=budget)
        for q, lls in zip(queries, all_lls):
            vals = [lp / n if normalize == "tokens" else lp for lp, n in lls]
            pred = q.options[int(np.argmax(vals))]
            scores.append(
                {"score": float(pred == q.example.output), "option_scores": [round(v, 4) for v in vals]}
            )
            preds.append(pred)
        return scores, preds
    texts = pc.generate_many(
        [q.ids for q in queries],
        tokenizer,
        pt.max_new_tokens,
        task.template.stop_strings(),
        token_budget=max(
            budget, 4096
        ),  # decoding steps feed one token per query: wider batches amortise overhead
    )
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


def _prompt(pt: PreparedTask, demo_idx) -> list[int]:
    prompt = pt.demos.header.tolist()
    for idx in demo_idx:
        ids, _ = pt.demos.example_ids(int(idx))
        prompt += ids.tolist()
    return prompt


def evaluate(cfg: EvalConfig, model=None, tokenizer=None, tasks: list[Task] | None = None) -> EvalResult:
    """Run the shot-curve evaluation per ``cfg``; ``model``/``tokenizer``/``tasks`` may be passed in."""
    from dataclasses import replace

    from .fileio import check_output_dir, exclusive_lock
    from .modeling import load_model

    out = check_output_dir(cfg.output_dir)
    with exclusive_lock(out, "evaluation"):
        store = PointStore(out, cfg)
        tasks = (
            tasks if tasks is not None else load_tasks(cfg.tasks)
        )  # bad task data fails before the model loads
        if model is None:
            model, tokenizer = load_model(replace(cfg.model, adapter=None))
        return _evaluate(cfg, out, store, model, tokenizer, tasks)


class PointStore:
    """Finished curve points of an evaluation (``points/<model>/<task>/<seed>_<shots>.json``: the row
    and its predictions), so a killed or interrupted evaluation continues with ``resume=true`` instead
    of starting over. A folder holding another evaluation is refused unless resumed with the same
    settings or ``overwrite=true``."""

    _IGNORED = {"output_dir", "progress", "plots", "resume", "overwrite", "allow_memory_overrun"}

    def __init__(self, out: Path, cfg: EvalConfig):
        import json
        import shutil

        from .config import to_dict
        from .errors import ConfigError

        self.root = out / "points"
        settings = {k: v for k, v in to_dict(cfg).items() if k not in self._IGNORED}
        self.fingerprint = stable_seed(json.dumps(settings, sort_keys=True, default=str))
        previous = [p for p in ("results.json", "points") if (out / p).exists()]
        if previous and cfg.overwrite:
            shutil.rmtree(self.root, ignore_errors=True)
            for f in ("results.json", "results.csv", "report.md", "predictions.jsonl"):
                (out / f).unlink(missing_ok=True)
        elif previous and not cfg.resume:
            raise ConfigError.single(
                "output_dir",
                f"{out} already holds an evaluation ({', '.join(previous)}); continue it with resume=true, "
                "replace it with overwrite=true, or choose another output_dir",
            )
        meta = self.root / "settings.json"
        if cfg.resume and meta.exists():
            old = json.loads(meta.read_text()).get("fingerprint")
            if old != self.fingerprint:
                raise ConfigError.single(
                    "resume",
                    f"{out} was evaluated with other settings; resume with the same config, or set overwrite=true",
                )
        self.out, self.cfg, self.meta = out, cfg, meta

    def begin(self) -> None:
        """Record the settings (after the memory guard passed: a refused run leaves nothing behind)."""
        atomic_write_json(self.meta, {"fingerprint": self.fingerprint})
        atomic_write_text(self.out / "config.yaml", dump_yaml(self.cfg))

    def _path(self, model: str, task: str, seed: int, shots: str) -> Path:
        from .tasks import safe_path_component

        return self.root / safe_path_component(model) / safe_path_component(task) / f"{seed}_{shots}.json"

    def get(self, model: str, task: str, seed: int, shots: str) -> dict | None:
        import json

        p = self._path(model, task, seed, shots)
        try:
            return json.loads(p.read_text()) if p.exists() else None
        except ValueError:  # torn by a kill: redo the point
            return None

    def put(self, model: str, task: str, seed: int, shots: str, row: dict, preds: list[dict]) -> None:
        atomic_write_json(self._path(model, task, seed, shots), {"row": row, "predictions": preds})


def _evaluate(
    cfg: EvalConfig, out: Path, store: PointStore, model, tokenizer, tasks: list[Task]
) -> EvalResult:
    from dataclasses import replace

    from tqdm.auto import tqdm

    from .modeling import _DTYPES, load_adapter

    t_prep = time.perf_counter()
    prepared = [prepare_task(t, tokenizer, cfg) for t in tasks]
    log.info("prepared %d tasks in %.1f s", len(prepared), time.perf_counter() - t_prep)
    specs = _model_specs(cfg)
    plans = {(pt.task.name, seed): shot_plan(pt, cfg, seed) for pt in prepared for seed in cfg.seeds}
    device = next(model.parameters()).device
    dtype_name = scoring_dtype(cfg, device)
    orig_dtype = next(model.parameters()).dtype
    if _DTYPES[dtype_name] != orig_dtype:
        model.to(_DTYPES[dtype_name])
    mem_est = eval_guard(model, cfg, batch_tokens(cfg.scoring.batch_tokens, device), device)
    store.begin()
    vgen = None  # vLLM, when used, holds its own memory (gpu_memory_utilization) and is not estimated
    if cfg.scoring.generation_backend == "vllm" and any(pt.mode == "generate" for pt in prepared):
        from .vllm_backend import VLLMGenerator

        vgen = VLLMGenerator(replace(cfg.model, adapter=None), max_model_len=cfg.max_length)

    def points(pt, seed):
        plan = plans[(pt.task.name, seed)][0]
        # 0 shots has no demonstrations: the same for every seed, scored once (with the first seed)
        return {k: v for k, v in plan.items() if not (len(v) == 0 and seed != cfg.seeds[0])}

    total = sum(len(points(pt, s)) for pt in prepared for s in cfg.seeds) * len(specs)
    bar = tqdm(total=total, disable=not cfg.progress, desc="eval", unit="curve-pt")
    mem = PeakMemory(interval=0.05).start()
    rows: list[dict] = []
    preds_out: list[dict] = []
    cache_timing: list[dict] = []
    bt = batch_tokens(cfg.scoring.batch_tokens, device)
    try:
        for label, adapter in specs:
            m = load_adapter(model, adapter) if adapter else model
            m.eval()
            key = model_key(m, cfg.model.name_or_path, adapter, tokenizer)
            for pt in prepared:
                for seed in cfg.seeds:
                    plan = points(pt, seed)
                    n_fit = plans[(pt.task.name, seed)][1]
                    for shot_label, demo_idx in sorted(plan.items(), key=lambda kv: -len(kv[1])):
                        k = len(demo_idx)
                        done = store.get(label, pt.task.name, seed, shot_label)
                        if done is not None:  # finished before a kill: kept, not redone
                            rows.append(done["row"])
                            preds_out.extend(done["predictions"])
                            bar.update(1)
                            continue
                        t0 = time.perf_counter()
                        if cfg.demos == "per_query" and k > 0:
                            scores, preds, prefill_s, prompt_tokens = [], [], 0.0, 0
                            for qi, q in enumerate(pt.queries):
                                d = per_query_demos(pt, cfg, seed, k, qi)
                                pc = PromptCache(m, _prompt(pt, d), prefill_chunk=cfg.scoring.prefill_chunk)
                                sc, pr = score_queries(
                                    pc, pt, tokenizer, cfg.scoring.normalize, bt, queries=[q]
                                )
                                scores += sc
                                preds += pr
                                prefill_s += pc.prefill_s
                                prompt_tokens += len(pc.prompt_ids)
                            prompt_tokens //= max(len(pt.queries), 1)
                        else:
                            prompt = _prompt(pt, demo_idx)
                            if vgen is not None and pt.mode == "generate":
                                pc = PromptOnly(prompt)
                            else:
                                pc = PromptCache(m, prompt, prefill_chunk=cfg.scoring.prefill_chunk)
                            if (
                                cfg.save_prompt_caches
                                and shot_label == "max"
                                and seed == cfg.seeds[0]
                                and isinstance(pc, PromptCache)
                            ):
                                cache_timing.append(_time_cache_io(pc, out, label, pt.task.name, key, m, cfg))
                            prefill_s, prompt_tokens = pc.prefill_s, len(prompt)
                            scores, preds = score_queries(
                                pc, pt, tokenizer, cfg.scoring.normalize, bt, vgen=vgen, adapter=adapter
                            )
                            del pc
                        dt = (
                            time.perf_counter()
                            - t0
                            - (prefill_s if cfg.demos != "per_query" or k == 0 else 0)
                        )
                        test_scores = [x["score"] for x in scores[: pt.n_test]]
                        dev_scores = [x["score"] for x in scores[pt.n_test :]]
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
                            "score": float(np.mean(test_scores)),
                            "n_queries": len(test_scores),
                            "dev_score": float(np.mean(dev_scores)) if dev_scores else None,
                            "n_dev": len(dev_scores),
                            "prompt_tokens": prompt_tokens,
                            "prefill_s": prefill_s,
                            "query_s": dt,
                            "demos": cfg.demos,
                        }
                        extra = [x for x in scores[: pt.n_test] if "exact_match" in x]
                        if extra:
                            row["exact_match"] = float(np.mean([x["exact_match"] for x in extra]))
                        rows.append(row)
                        point_preds = []
                        for qi, (q, x, pred) in enumerate(zip(pt.queries, scores, preds)):
                            point_preds.append(
                                {
                                    "model": label,
                                    "task": pt.task.name,
                                    "seed": seed,
                                    "shots": k,
                                    "shots_requested": shot_label,
                                    "split": "test" if qi < pt.n_test else "dev",
                                    "query": pt.query_index[qi],
                                    "gold": q.example.output,
                                    "prediction": pred,
                                    "score": x["score"],
                                    "correct": bool(x["score"] >= 1.0),
                                }
                                | ({"option_scores": x["option_scores"]} if "option_scores" in x else {})
                            )
                        preds_out.extend(point_preds)
                        store.put(label, pt.task.name, seed, shot_label, row, point_preds)
                        bar.set_postfix(model=label, task=pt.task.name[:20], k=k)
                        bar.update(1)
            if adapter:
                model = m.unload()  # remove the LoRA layers again; the base weights are untouched
    finally:
        if next(model.parameters()).dtype != orig_dtype:
            model.to(orig_dtype)  # bf16 -> fp32 -> bf16 is exact: the caller's model is unchanged
    bar.close()
    mem.stop()
    task_info = [
        {
            "task": pt.task.name,
            "mode": pt.mode,
            "queries": pt.n_test,
            "dev_queries": len(pt.queries) - pt.n_test,
            "dev_split": pt.dev_split,
            "skipped_queries": pt.skipped_queries,
            "duplicates": pt.duplicates,
            "majority": pt.majority,
            "demo_pool": len(pt.demos.query),
        }
        for pt in prepared
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


def query_matrix(preds: list[dict], model: str, task: str, shots_label: str, split: str = "test"):
    """Per-query scores of one curve point as [queries, seeds] (queries sorted by index), and the seeds."""
    cells: dict[tuple[int, int], float] = {}
    for p in preds:
        if (
            p["model"] == model
            and p["task"] == task
            and p["shots_requested"] == shots_label
            and p["split"] == split
        ):
            cells[(p["query"], p["seed"])] = p["score"]
    queries = sorted({q for q, _ in cells})
    seeds = sorted({s for _, s in cells})
    mat = np.full((len(queries), len(seeds)), np.nan)
    qi, si = {q: i for i, q in enumerate(queries)}, {s: i for i, s in enumerate(seeds)}
    for (q, s), v in cells.items():
        mat[qi[q], si[s]] = v
    return mat, queries, seeds


def summarize(
    rows: list[dict], preds: list[dict] | None = None, task_info: list[dict] | None = None
) -> list[dict]:
    """Per (model, task): the curve (mean, 95% interval over queries, std over seeds when >= 2 seeds),
    the shot count chosen on dev queries with its test score ("best"), and the score at max shots."""
    from .stats import score_ci

    preds = preds or []
    info = {t["task"]: t for t in task_info or []}
    groups: dict[tuple[str, str], dict[str, list[dict]]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["task"]), {}).setdefault(r["shots_requested"], []).append(r)
    out = []
    for (model, task), by_shot in groups.items():
        curve = []
        for shot_label, rs in by_shot.items():
            vals = [r["score"] for r in rs]
            mat, _, _ = query_matrix(preds, model, task, shot_label)
            point = {
                "shots_requested": shot_label,
                "shots": float(np.mean([r["shots"] for r in rs])),
                "mean": float(np.mean(vals)),
                "std": float(statistics.pstdev(vals)) if len(vals) > 1 else None,
                "seeds": len(vals),
                "n": int(rs[0]["n_queries"]),
                "lo": None,
                "hi": None,
                "dev_mean": (
                    float(np.mean([r["dev_score"] for r in rs]))
                    if rs[0].get("dev_score") is not None
                    else None
                ),
            }
            if mat.size and not np.isnan(mat).any():
                ci = score_ci(mat if mat.shape[1] > 1 else mat[:, 0])
                point["lo"], point["hi"], point["ci"] = ci.lo, ci.hi, ci.method
            curve.append(point)
        curve.sort(key=lambda c: (c["shots"], c["shots_requested"] == "max"))
        at_max = next((c for c in curve if c["shots_requested"] == "max"), curve[-1])
        with_dev = [c for c in curve if c["dev_mean"] is not None]
        # "best over shots": the shot count with the best dev score (ties: fewer shots), scored on test
        best = max(with_dev, key=lambda c: (c["dev_mean"], -c["shots"])) if with_dev else None
        first = next(iter(by_shot.values()))[0]
        t = info.get(task, {})
        out.append(
            {
                "model": model,
                "task": task,
                "family": first["family"],
                "category": first["category"],
                "metric": first["metric"],
                "curve": curve,
                "best": best["mean"] if best else None,
                "best_lo": best["lo"] if best else None,
                "best_hi": best["hi"] if best else None,
                "best_shots": best["shots"] if best else None,
                "best_label": best["shots_requested"] if best else None,
                "at_max": at_max["mean"],
                "at_max_lo": at_max["lo"],
                "at_max_hi": at_max["hi"],
                "max_shots": at_max["shots"],
                "n": at_max["n"],
                "majority": (t.get("majority") or {}).get("share"),
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
            "tasks": res.tasks,
            "scoring_dtype": res.scoring_dtype,
            "prompt_cache_timing": res.cache_timing,
            "memory": res.memory,
        },
    )
