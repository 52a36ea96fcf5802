"""Which demonstrations and which queries: per-task preparation and shot plans.

A task is tokenized once and its test and dev queries chosen once (the same for every model, seed and
shot count). For each seed and shot count k, the k demonstrations are a balanced draw (equal label
counts) in random order; a k-shot prompt is never the prefix of a bigger shuffled one. Evaluation,
the experiment and the server all build their prompts here, so they agree on what "k shots" means.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .config import EvalConfig
from .data import stable_seed
from .errors import ManyICLError
from .overlap import drop_train_test_duplicates
from .packing import balanced_order
from .tasks import Example, Task
from .templates import Renderer, tokenize_task

log = logging.getLogger(__name__)


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
    truncated_queries: int = 0
    """Queries kept with their input cut from the left to fit (``on_overlong: truncate_input``)."""

    @property
    def header_len(self) -> int:
        return len(self.demos.header)


def answer_mode(task: Task) -> str:
    sample = next(iter(task.splits.values()), [])[:50]
    has_options = bool(task.labels) or any(task.options_for(e) for e in sample)
    return "options" if task.metric == "accuracy" and has_options else "generate"


def _source_of(task: Task, split: str, ex, index: int) -> str:
    """Where a query came from, for messages: ``FILE:LINE`` when the task was read from files, else
    ``TASK/SPLIT example N`` (generated examples: N counts from 1 in the split as evaluated)."""
    file = task.split_files.get(split)
    if file and ex.line:
        return f"{file}:{ex.line}"
    return f"{task.name}/{split} example {index + 1}"


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
        demo_task,
        tokenizer,
        cfg.demo_split,
        cfg.max_length // 2,
        cfg.on_overlong,
        cfg.add_bos,
        overlong_key="on_overlong",
        window=f"{cfg.max_length // 2} (half of max_length {cfg.max_length}, for a demonstration)",
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
    skipped = truncated = 0
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
                split = cfg.eval_split if is_test else dev_pool_split
                raise ManyICLError(
                    f"{_source_of(task, split, ex, i)}: a {split} query of task {task.name} does not fit in "
                    f"half of max_length {cfg.max_length} ({budget} tokens for query + answer); set on_overlong "
                    "to skip or truncate_input, or raise max_length"
                )
            skipped += 1
            continue
        truncated += cut
        queries.append(Query(q_ids, ex, opts, opt_ids))
        index.append(i)
        kept_test += is_test
    if not kept_test:
        raise ManyICLError(f"task {task.name}: no test query fits in max_length {cfg.max_length}")
    if truncated:
        log.warning(
            "%s: %d of %d queries cut from the left to fit half of max_length %d (on_overlong=truncate_input); "
            "their scores are of shortened inputs",
            task.name,
            truncated,
            len(queries),
            cfg.max_length,
        )
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
        truncated,
    )


def shot_plan(prepared: PreparedTask, cfg: EvalConfig, seed: int) -> tuple[dict[str, np.ndarray], int]:
    """The demonstrations of every shot count for this seed ({label: demo indices in prompt order}) and
    the most that fit.

    A balanced selection (round-robin over label pools) decides *which* demos a k-shot prompt holds and
    how many fit; each k's order is then an independent shuffle, so no prompt deals labels in rounds and
    no small prompt is the (unbalanced) prefix of a shuffled big one."""
    demos = prepared.demos
    rng = np.random.default_rng(stable_seed(seed, "demos", prepared.task.name))
    labels = demos.label_ids
    order = balanced_order(labels, rng) if labels is not None else rng.permutation(len(demos.query))
    budget = cfg.max_length - prepared.reserve - prepared.header_len
    csum = np.cumsum(demos.lengths[order]) if len(order) else np.zeros(0)
    n_fit = int(np.searchsorted(csum, budget, side="right")) if len(order) else 0
    plan: dict[str, np.ndarray] = {}
    for s in cfg.shots:
        k = n_fit if s == "max" else int(s)
        if k > n_fit:
            continue
        label = "max" if s == "max" else str(k)
        plan[label] = np.random.default_rng(
            stable_seed(seed, "order", prepared.task.name, label)
        ).permutation(order[:k])
    return plan, n_fit


def per_query_demos(prepared: PreparedTask, cfg: EvalConfig, seed: int, k: int, query: int) -> np.ndarray:
    """Fresh demonstrations for one query (``demos: per_query``): a balanced draw of k in random order."""
    rng = np.random.default_rng(stable_seed(seed, "per_query", prepared.task.name, k, query))
    labels = prepared.demos.label_ids
    order = balanced_order(labels, rng) if labels is not None else rng.permutation(len(prepared.demos.query))
    return rng.permutation(order[:k])


def build_prompt(prepared: PreparedTask, demo_idx) -> list[int]:
    """The prompt's token ids: the task header, then the demonstrations in the given order."""
    prompt = prepared.demos.header.tolist()
    for idx in demo_idx:
        ids, _ = prepared.demos.example_ids(int(idx))
        prompt += ids.tolist()
    return prompt
