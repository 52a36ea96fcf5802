"""Shared pieces of the command line: logging and offline set-up, config loading with overrides, the summary table."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ..config import (
    load_config,
)

log = logging.getLogger("manyicl")


TABLE_WIDTH = 100
"""Column budget of tables the CLI prints."""
MAX_ERRORS_PER_FILE = 10
"""``tasks validate`` prints this many errors per file, then a count of the rest."""


def overrides_help(workflow: str) -> str:
    return f"config overrides as KEY.SUB=VALUE (examples below; `manyicl config show {workflow}` lists every key)"


EXAMPLES: dict[str, list[str]] = {
    "train": [
        "manyicl train synthetic data.max_length=1024 optim.lr=1e-4 output_dir=runs/s1k",
        "manyicl train synthetic output_dir=runs/s1k --resume      # continue a stopped run",
        "manyicl train tiny train.max_steps=2 output_dir=runs/tiny  # seconds-long smoke run",
        'manyicl train synthetic data.tasks.synthetic=false "data.tasks.dirs=[my_tasks]" output_dir=runs/mine',
    ],
    "eval": [
        "manyicl eval eval_synthetic adapters.base=null adapters.ft=runs/synthetic/adapter",
        "manyicl eval eval_synthetic max_length=1024 max_queries=20 seeds=[0] shots=[0,4,16,max]",
        'manyicl eval eval_folder "tasks.dirs=[my_tasks]" adapters.base=null adapters.mine=runs/mine/adapter',
        "manyicl eval eval_synthetic scoring.normalize=tokens output_dir=runs/eval_tokens",
    ],
    "serve": [
        "manyicl serve --model tiny-random-llama --tasks my_tasks --port 8000",
        "manyicl serve --adapter runs/synthetic/adapter --allow-root /data/tasks --api-key $KEY",
        "manyicl serve --host 0.0.0.0 --state-dir /var/lib/manyicl --cache-ram-mb 8192 --preload",
    ],
    "quickstart": [
        "manyicl quickstart",
        "manyicl quickstart --output runs/qs2 train.train.max_steps=10 eval.max_queries=10",
        "manyicl quickstart train.data.max_length=1024 eval.max_length=1024 eval.seeds=[0]",
    ],
    "experiment": [
        "manyicl experiment experiment_quick",
        "manyicl experiment experiment_quick --status",
        "manyicl experiment experiment_quick output_dir=results/q1k train.data.max_length=1024 "
        "eval.max_length=1024",
        "manyicl experiment experiment_quick train.optim.lr=1e-4 eval.max_queries=20 methods=[no_ft,many_shot_all]",
    ],
    "distill": [
        "manyicl distill distill_quick",
        "manyicl distill distill_quick updates=[lora,bitfit] shots=[1,4] eval_queries=50",
        "manyicl distill distill_quick student_layers=16 kl=full alpha=0.7",
    ],
    "icl-preserve": [
        "manyicl icl-preserve icl_preserve_quick",
        "manyicl icl-preserve icl_preserve_quick mix_ratios=[0.0,0.1] finetune=[lora] kl_to_base=[0.0]",
        "manyicl icl-preserve icl_preserve_quick train.optim.lr=1e-4 train.train.max_steps=50",
    ],
    "perplexity": [
        "manyicl perplexity perplexity_books",
        "manyicl perplexity perplexity_books n_books=2 context_lengths=[128,512,2048]",
        "manyicl perplexity perplexity_books adapters.base=null adapters.ft=runs/synthetic/adapter",
    ],
    "data stats": [
        "manyicl data stats                                   # synthetic suite, 2K context, max shots",
        "manyicl data stats tiny data.max_length=256 --brief",
        "manyicl data stats synthetic data.max_length=1024 data.objective=mask_last_target --json",
    ],
    "data show": [
        "manyicl data show tiny --task topic_labels --chars 600",
        "manyicl data show tiny --task numeric_compare_0 data.tasks.split=held_out",
        "manyicl data show synthetic --task kv_lookup data.shots=4",
    ],
}
"""Example command lines per subcommand, printed under its ``--help`` (tests load every one)."""


def _offline(allow_download: bool) -> None:
    """Run offline unless the config allows downloads (must happen before transformers is imported)."""
    value = "0" if allow_download else "1"
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(var, value)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(message)s", stream=sys.stderr
    )
    logging.getLogger("manyicl").setLevel(logging.INFO if verbose else logging.WARNING)  # -q: no info lines
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _split_config_args(args: list[str]) -> tuple[str | None, list[str]]:
    """``[CONFIG] [k=v ...]``: the first argument without '=' is the config file or shipped name."""
    if args and "=" not in args[0]:
        return args[0], args[1:]
    return None, args


def _config(a: argparse.Namespace, cls):
    """Load ``cls`` from ``[CONFIG] [k=v ...]`` and set offline mode from its model settings."""
    path, overrides = _split_config_args(a.args)
    cfg = load_config(cls, path, overrides)
    model = getattr(cfg, "model", None) or cfg.train.model
    _offline(model.allow_download)
    return cfg


def _checked_output_dir(cfg):
    """``cfg`` with its ``output_dir`` checked and resolved (``fileio.check_output_dir``: not empty, ``~``
    expanded, not a file, not a dangling link, writable), before a workflow module is imported: train,
    eval and the studies import torch and transformers (seconds), and would refuse a bad folder only
    after that. The one early check every workflow subcommand that writes a run folder goes through
    (not ``--report`` / ``--status``, which must leave a folder as it is)."""
    import dataclasses

    from ..fileio import check_output_dir

    return dataclasses.replace(cfg, output_dir=str(check_output_dir(cfg.output_dir)))


SUMMARY_HEADER = (
    "n: test queries, k: shots chosen on dev, best: test score at k, at max: score at max k shots"
)
SUMMARY_HEADER_NO_DEV = "n: test queries, at 0: score without demonstrations, at max: score at max k shots"


def summary_table_text(summary: list[dict], width: int = TABLE_WIDTH) -> str:
    """The end-of-run summary, one line per (task, model), in ``width`` columns.

    Columns: task, model (full names, never cut), n test queries, k chosen on dev, the test score at k
    [95% CI], max k, the score at max k [95% CI]. Without dev queries (``dev_queries: 0``) no k is
    chosen, and the score at 0 shots takes those two columns: the many-shot gain still reads off one line.
    A name too long for its column is printed in full on a line of its own, with the numbers on the next.
    """
    from ..eval_summary import zero_shot_point
    from ..report import fmt_ci

    def num(x) -> str:
        return "-" if x is None else f"{x:.0f}"

    has_best = any(s.get("best") is not None for s in summary)
    rows = []
    for s in summary:
        if has_best:
            k, mid = num(s.get("best_shots")), fmt_ci(s.get("best"), s.get("best_lo"), s.get("best_hi"))
        else:
            zero = zero_shot_point(s)
            k, mid = "0", fmt_ci(*(zero.get(x) for x in ("mean", "lo", "hi"))) if zero else "-"
        rows.append(
            (
                str(s.get("task", "-")),
                str(s.get("model", "-")),
                num(s.get("n")),
                k,
                mid,
                num(s.get("max_shots")),
                fmt_ci(s.get("at_max"), s.get("at_max_lo"), s.get("at_max_hi")),
            )
        )
    mid_head = "best [95% CI]" if has_best else "at 0 [95% CI]"
    head = ("task", "model", "n", "k", mid_head, "max k", "at max [95% CI]")
    nums = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    numeric = sum(nums[2:]) + 2 * 5  # five numeric columns, two spaces before each
    room = max(width - numeric - 2, 20)  # task + two spaces + model
    tw = max(len(head[0]), *(len(r[0]) for r in rows)) if rows else 4
    mw = max(len(head[1]), *(len(r[1]) for r in rows)) if rows else 5
    if tw + mw > room:  # cap the wider column first, keeping at least 12 characters for the model
        mw = min(mw, max(12, room - min(tw, room // 2)))
        tw = room - mw
    right = "".join(f"  {v:>{nums[i]}}" for i, v in enumerate(head) if i >= 2)

    def line(r: tuple) -> list[str]:
        tail = "".join(f"  {r[i]:>{nums[i]}}" for i in range(2, 7))
        if len(r[0]) > tw or len(r[1]) > mw:
            return [f"{r[0]}  {r[1]}", " " * (tw + 2 + mw) + tail]
        return [f"{r[0]:<{tw}}  {r[1]:<{mw}}{tail}"]

    out = [SUMMARY_HEADER if has_best else SUMMARY_HEADER_NO_DEV, f"{head[0]:<{tw}}  {head[1]:<{mw}}{right}"]
    for r in rows:
        out += line(r)
    return "\n".join(out)
