"""The ``manyicl`` command line. Each subcommand loads a typed config and calls one workflow function."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .config import (
    DataConfig,
    DistillConfig,
    EvalConfig,
    ExperimentConfig,
    ICLPreserveConfig,
    PerplexityConfig,
    QuickstartConfig,
    TrainConfig,
    builtin_config_dir,
    describe,
    load_config,
)
from .errors import ManyICLError

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
    logging.getLogger("manyicl").setLevel(logging.INFO)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _split_config_args(args: list[str]) -> tuple[str | None, list[str]]:
    """``[CONFIG] [k=v ...]``: the first argument without '=' is the config file or shipped name."""
    if args and "=" not in args[0]:
        return args[0], args[1:]
    return None, args


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def _config(a: argparse.Namespace, cls):
    """Load ``cls`` from ``[CONFIG] [k=v ...]`` and set offline mode from its model settings."""
    path, overrides = _split_config_args(a.args)
    cfg = load_config(cls, path, overrides)
    model = getattr(cfg, "model", None) or cfg.train.model
    _offline(model.allow_download)
    return cfg


SUMMARY_HEADER = (
    "n: test queries, k: shots chosen on dev, best: test score at k, at max: score at max k shots"
)


def summary_table_text(summary: list[dict], width: int = TABLE_WIDTH) -> str:
    """The end-of-run summary, one line per (task, model), in ``width`` columns.

    Columns: task, model (full names, never cut), n test queries, k chosen on dev, the test score at k
    [95% CI], max k, the score at max k [95% CI]. A name too long for its column is printed in full on a
    line of its own, with the numbers on the next line.
    """
    from .report import fmt_ci

    def num(x) -> str:
        return "-" if x is None else f"{x:.0f}"

    rows = []
    for s in summary:
        rows.append(
            (
                str(s.get("task", "-")),
                str(s.get("model", "-")),
                num(s.get("n")),
                num(s.get("best_shots")),
                fmt_ci(s.get("best"), s.get("best_lo"), s.get("best_hi")),
                num(s.get("max_shots")),
                fmt_ci(s.get("at_max"), s.get("at_max_lo"), s.get("at_max_hi")),
            )
        )
    head = ("task", "model", "n", "k", "best [95% CI]", "max k", "at max [95% CI]")
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

    out = [SUMMARY_HEADER, f"{head[0]:<{tw}}  {head[1]:<{mw}}{right}"]
    for r in rows:
        out += line(r)
    return "\n".join(out)


def cmd_train(a: argparse.Namespace) -> int:
    cfg = _config(a, TrainConfig)
    if a.resume:
        cfg.resume = True
    from .train import train

    res = train(cfg)
    if res.summary:
        print(json.dumps({k: v for k, v in res.summary.items() if k != "build"}, indent=2))
        print(f"saved: {res.final_dir}")
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    cfg = _config(a, EvalConfig)
    from .evaluate import evaluate

    res = evaluate(cfg)
    print(summary_table_text(res.summary))
    print(f"\nreport: {res.report_path}\nplots:  {res.output_dir / 'plots'}")
    return 0


def cmd_experiment(a: argparse.Namespace) -> int:
    cfg = _config(a, ExperimentConfig)
    from .experiment import experiment

    report = experiment(cfg, status_only=a.status, report_only=a.report)
    if not a.status:
        print(f"report: {report}")
    return 0


def cmd_distill(a: argparse.Namespace) -> int:
    cfg = _config(a, DistillConfig)
    from .distill import distill

    print(f"report: {distill(cfg)}")
    return 0


def cmd_icl_preserve(a: argparse.Namespace) -> int:
    cfg = _config(a, ICLPreserveConfig)
    from .icl_preserve import icl_preserve

    print(f"report: {icl_preserve(cfg)}")
    return 0


def cmd_perplexity(a: argparse.Namespace) -> int:
    cfg = _config(a, PerplexityConfig)
    from .perplexity import perplexity, perplexity_table

    res = perplexity(cfg)
    print(perplexity_table(res.rows))
    print(f"written: {res.output_dir / 'perplexity.md'}")
    return 0


def cmd_quickstart(a: argparse.Namespace) -> int:
    overrides = list(a.overrides)
    if a.output:
        overrides.append(f"output_dir={a.output}")
    cfg = load_config(QuickstartConfig, a.config, overrides)
    _offline(cfg.train.model.allow_download)
    from .quickstart import quickstart

    res = quickstart(cfg)
    t = res.timings
    print("\nHeld-out synthetic families (never seen in meta-training), base model vs fine-tuned (manyicl):")
    print(summary_table_text(res.summary))
    print(
        f"\ntime: {t['total_s']:.0f} s total (load {t['load_model_s']:.0f} s, train {t['train_s']:.0f} s at "
        f"{t['train_tokens_per_s']:.0f} tokens/s, eval {t['eval_s']:.0f} s)"
    )
    print(f"report: {res.report}")
    print(f"plots:  {res.report.parent / 'plots'}/ ({len(res.plots)} PNG shot curves)")
    return 0


def _data_config(a: argparse.Namespace) -> tuple[TrainConfig, DataConfig]:
    cfg = _config(a, TrainConfig)
    return cfg, cfg.data


def cmd_data_stats(a: argparse.Namespace) -> int:
    cfg, dcfg = _data_config(a)
    from .data import build_training_data, format_stats, load_tasks
    from .modeling import load_tokenizer

    tok = load_tokenizer(cfg.model)
    build = build_training_data(load_tasks(dcfg.tasks), tok, dcfg)
    if a.json:
        print(json.dumps(build.stats.to_dict(), indent=2))
    else:
        print(format_stats(build.stats, per_task=not a.brief))
    return 0


def _why_not_loaded(name: str, src, key: str) -> tuple[str, list[str], str] | None:
    """Why task (or family) ``name`` is not among the tasks ``src`` selects: (reason, the overrides that
    select it, the task name to ask for), or None when no source of ``src`` has it at all."""
    from dataclasses import replace

    from .data import load_tasks
    from .synthetic import FAMILIES

    fam, _, num = name.rpartition("_")
    if src.synthetic and fam in FAMILIES and num.isdigit() and int(num) >= src.synthetic_instances:
        fix = [f"{key}.synthetic_instances={int(num) + 1}"]
        side = "held_out" if FAMILIES[fam].held_out else "held_in"
        if src.split not in ("all", side):
            fix.append(f"{key}.split={side}")
        return (
            f"{name!r} is instance {num} of the synthetic family {fam!r}, and this config builds "
            f"{src.synthetic_instances} instance(s) per family ({key}.synthetic_instances)",
            fix,
            name,
        )
    try:
        every = load_tasks(replace(src, split="all", include=[], exclude=[]))
    except ManyICLError:
        return None
    hits = [t for t in every if t.name == name] or [t for t in every if t.family == name]
    if not hits:
        return None
    t = hits[0]
    what = f"the family {name!r}" if t.name != name else f"the task {name!r}"
    names = {t.name, t.family, t.category}
    if src.include and not names & set(src.include):
        return f"{what} is not in {key}.include ({', '.join(src.include)})", [f"{key}.include=[]"], t.name
    if src.exclude and names & set(src.exclude):
        return f"{what} is in {key}.exclude ({', '.join(src.exclude)})", [f"{key}.exclude=[]"], t.name
    if t.family in FAMILIES:
        held_out = FAMILIES[t.family].held_out
        side, other = ("held-out", "held_out") if held_out else ("held-in", "held_in")
        kind = (
            f"is a {side} synthetic family (its instances are {t.family}_0, {t.family}_1, ...)"
            if t.name != name
            else f"is an instance of the {side} synthetic family {t.family!r}"
        )
        use = "reserved for evaluation, so" if held_out else "a training family, but"
        return (
            f"{name!r} {kind}: {use} not in this build, which takes the {src.split.replace('_', '-')} side "
            f"({key}.split={src.split})",
            [f"{key}.split={other}"],
            t.name,
        )
    return (
        f"{what} is not on the {src.split.replace('_', '-')} side of the {src.scheme} split "
        f"({key}.split={src.split})",
        [f"{key}.split=all"],
        t.name,
    )


def _close_names(name: str, tasks) -> str:
    import difflib

    pool = sorted({t.name for t in tasks} | {t.family for t in tasks})
    close = difflib.get_close_matches(name, pool, n=3, cutoff=0.6)
    return f" Did you mean {', '.join(close)}?" if close else ""


def cmd_data_show(a: argparse.Namespace) -> int:
    import shlex

    cfg, dcfg = _data_config(a)
    from .data import build_training_data, load_tasks
    from .modeling import load_tokenizer

    tasks = load_tasks(dcfg.tasks)
    if a.task:
        tasks = [t for t in tasks if t.name == a.task or t.family == a.task][:1]
        if not tasks:
            why = _why_not_loaded(a.task, dcfg.tasks, "data.tasks")
            if why is None:
                raise ManyICLError(
                    f"no task or family named {a.task!r} in this config's tasks "
                    f"(data.tasks).{_close_names(a.task, load_tasks(dcfg.tasks))} See `manyicl tasks list` "
                    "(and --dirs for your own folders)"
                )
            reason, fix, name = why
            cmdline = shlex.join(["manyicl", "data", "show", *a.args, "--task", name, *fix])
            raise ManyICLError(f"{reason}. Show it with:\n  {cmdline}")
    tok = load_tokenizer(cfg.model)
    dcfg.sequences_per_task = 1
    build = build_training_data(tasks[:1], tok, dcfg)
    seq = build.sequences[0]
    print(
        f"# task {seq.task}: {seq.n_examples} examples, {len(seq)} tokens, {int(seq.loss_mask.sum())} supervised"
    )
    print("# supervised tokens are shown in [[...]]\n")
    out, run, cur = [], [], None
    for tid, m in zip(seq.ids.tolist(), seq.loss_mask.tolist()):
        if cur is not None and m != cur:
            text = tok.decode(run)
            out.append(f"[[{text}]]" if cur else text)
            run = []
        run.append(tid)
        cur = m
    if run:
        text = tok.decode(run)
        out.append(f"[[{text}]]" if cur else text)
    full = "".join(out)
    print(full if a.chars <= 0 else full[: a.chars] + ("\n..." if len(full) > a.chars else ""))
    return 0


def _task_universe(a: argparse.Namespace):
    """(tasks, role of each task name) for the tasks commands: synthetic + shared + folders."""
    from .config import TaskSourceConfig
    from .data import load_tasks
    from .synthetic import FAMILIES

    roles: dict[str, str] = {}
    want_shared = not a.no_shared and (a.data or _shared_available())
    src = TaskSourceConfig(
        synthetic=not a.no_synthetic,
        shared=bool(want_shared),
        data_dir=a.data,
        scheme="all",
        split="all",
        dirs=list(getattr(a, "dirs", None) or []),
    )
    if not (src.synthetic or src.shared or src.dirs):
        raise ManyICLError(
            "nothing to list: no shared data found and --no-synthetic given; pass --data DIR or --dirs"
        )
    tasks = load_tasks(src)
    if want_shared:
        from .data import shared_data_dir
        from .splits import resolve_split

        split = resolve_split(a.scheme, shared_data_dir(src))
        roles.update({n: split.role(n) for n in split.train + split.test + list(split.excluded)})
    for t in tasks:
        if t.family in FAMILIES:
            roles[t.name] = "held-out" if FAMILIES[t.family].held_out else "held-in"
        roles.setdefault(t.name, "-")
    return tasks, roles


def _shared_available() -> bool:
    from .realdata import default_data_dir

    return default_data_dir() is not None


def cmd_tasks_list(a: argparse.Namespace) -> int:
    tasks, roles = _task_universe(a)
    if a.json:
        print(json.dumps([_task_summary(t) | {"role": roles.get(t.name, "-")} for t in tasks], indent=2))
        return 0
    print(f"{'task':<40}{'category':<9}{'metric':<15}{a.scheme + ' role':<14}{'labels':>7}  sizes")
    for t in tasks:
        sizes = " ".join(f"{k}={len(v)}" for k, v in t.splits.items())
        print(
            f"{t.name:<40}{t.category:<9}{t.metric:<15}{roles.get(t.name, '-'):<14}{len(t.labels):>7}  {sizes}"
        )
    print(f"\n{len(tasks)} tasks")
    return 0


def _task_summary(t) -> dict:
    return {
        "name": t.name,
        "family": t.family,
        "category": t.category,
        "metric": t.metric,
        "labels": list(t.labels),
        "splits": {k: len(v) for k, v in t.splits.items()},
        "notes": list(t.notes),
    }


def _no_task_message(a: argparse.Namespace, tasks) -> str:
    """``tasks show NAME`` found nothing: say where it looked and how to include a folder."""
    import shlex

    looked = [
        x
        for x, on in (
            ("the synthetic suite", not a.no_synthetic),
            ("the shared datasets", bool(a.data or (not a.no_shared and _shared_available()))),
            (f"the folders {', '.join(a.dirs or [])}", bool(a.dirs)),
        )
        if on
    ]
    msg = f"no task named {a.name!r} in {', '.join(looked) or 'no sources'}.{_close_names(a.name, tasks)}"
    local = [d for d in (Path(a.name), Path("tasks") / a.name) if (d / "task.yaml").exists()]
    if local:
        cmd = shlex.join(["manyicl", "tasks", "show", a.name, "--dirs", str(local[0])])
        return f"{msg} The folder {local[0]} holds a task.yaml: include it with\n  {cmd}"
    if not a.dirs:
        return (
            f"{msg} A task in a folder of your own is only seen with --dirs: "
            f"`manyicl tasks show {shlex.quote(a.name)} --dirs FOLDER` (the task folder, or a folder of them)"
        )
    return f"{msg} See `manyicl tasks list --dirs {' '.join(a.dirs)}`"


def within_task_overlap(task, train_split: str = "train", test_split: str = "test") -> dict | None:
    """Test inputs of ``task`` that also occur in its own training split (normalised text), and how many
    of those carry a different label there. None when the task lacks one of the splits."""
    from .overlap import normalize_text, train_test_duplicates

    if not (task.has_split(train_split) and task.has_split(test_split)):
        return None
    dup = train_test_duplicates(task, train_split, test_split)
    labels: dict[str, set[str]] = {}
    for e in task.split(train_split):
        key = normalize_text(e.input)
        if key in dup:
            labels.setdefault(key, set()).add(e.output)
    test = task.split(test_split)
    hits = [e for e in test if normalize_text(e.input) in dup]
    conflict = [e for e in hits if e.output not in labels.get(normalize_text(e.input), set())]
    return {
        "train_split": train_split,
        "test_split": test_split,
        "test": len(test),
        "duplicates": len(hits),
        "different_label": len(conflict),
        "samples": [e.input[:60] for e in (conflict or hits)[:2]],
    }


def overlap_text(o: dict) -> str:
    if not o["duplicates"]:
        return f"{o['test_split']}/{o['train_split']} overlap: no {o['test_split']} input occurs in {o['train_split']}"
    txt = (
        f"{o['test_split']}/{o['train_split']} overlap: {o['duplicates']} of {o['test']} {o['test_split']} inputs "
        f"also occur in {o['train_split']} (normalised text), {o['different_label']} of them with a different "
        f"label there; evaluation drops them (dedup), e.g. {o['samples'][0]!r}"
    )
    return txt


def cmd_tasks_show(a: argparse.Namespace) -> int:
    from collections import Counter

    import numpy as np

    from .config import ModelConfig
    from .modeling import load_tokenizer
    from .templates import tokenize_task

    tasks, roles = _task_universe(a)
    match = [t for t in tasks if t.name == a.name] or [t for t in tasks if a.name in t.name]
    if not match:
        raise ManyICLError(_no_task_message(a, tasks))
    t = match[0]
    print(f"{t.name}  [{t.category}, metric {t.metric}, {roles.get(t.name, '-')} in the {a.scheme} split]")
    if t.description:
        print(f"  {t.description[:300]}")
    if t.source:
        print(f"  source: {t.source}")
    for n in t.notes:
        print(f"  note: {n}")
    print("  splits: " + ", ".join(f"{k}={len(v)}" for k, v in t.splits.items()))
    overlap = within_task_overlap(t)
    if overlap is not None:
        print(f"  {overlap_text(overlap)}")
    first = next(iter(t.splits))
    counts = Counter(e.output for e in t.splits[first])
    if t.category in ("cls", "nli") or t.labels:
        lo, hi = min(counts.values()), max(counts.values())
        print(f"  labels ({len(t.labels) or len(counts)}), balance in {first}: min {lo}, max {hi}")
        print(
            "    "
            + ", ".join(f"{k} ({v})" for k, v in counts.most_common(12))
            + (" ..." if len(counts) > 12 else "")
        )
    tok = load_tokenizer(ModelConfig(name_or_path=a.model))
    tt = tokenize_task(t, tok, first, a.max_length, "truncate_input")
    lengths = tt.lengths
    budget = a.max_length - len(tt.header)
    print(
        f"  tokens per example ({a.model}): mean {np.mean(lengths):.1f}, max {int(np.max(lengths))}; "
        f"header {len(tt.header)}"
    )
    print(
        f"  shots that fit in {a.max_length} tokens: about {int(budget // max(np.mean(lengths), 1))} (mean length)"
    )
    ex = t.splits[first][0]
    print("\n  one rendered example (target in [[...]]):")
    print(
        "    "
        + (t.template.header_text() + t.template.query_text(ex.input)).replace("\n", "\n    ")
        + "[["
        + t.template.target_text(ex.output)
        + "]]"
    )
    return 0


def _print_errors(errors, limit: int) -> None:
    """Errors grouped by file in first-seen order: the first ``limit`` of each (0: all), then a count."""
    import re

    by_file: dict[str, list] = {}
    for p in errors:
        by_file.setdefault(re.sub(r":\d+$", "", p.where), []).append(p)
    for f, ps in by_file.items():
        shown = ps if limit <= 0 else ps[:limit]
        for p in shown:
            print(f"ERROR {p}", file=sys.stderr)
        if len(ps) > len(shown):
            print(
                f"ERROR {f}: ... and {len(ps) - len(shown)} more errors in this file (--max-errors 0 shows all)",
                file=sys.stderr,
            )


def cmd_tasks_validate(a: argparse.Namespace) -> int:
    from .errors import Collector, ProblemsError
    from .tasks import check_quality, load_task_dirs_collecting, validate_task

    c = Collector()
    tasks = []
    if a.dirs:
        tasks += load_task_dirs_collecting(a.dirs, c)
    if a.all:
        a.no_synthetic = False
        a.no_shared = False
        a.scheme = "all"
        dirs, a.dirs = a.dirs, []
        try:
            more, _ = _task_universe(a)
            tasks += more
        except ProblemsError as e:
            c.problems.extend(e.problems)
        a.dirs = dirs
    if not a.dirs and not a.all:
        raise ManyICLError(
            "name task folders to validate, or --all for the synthetic suite and the shared data"
        )
    for t in tasks:
        validate_task(t, c)
        check_quality(t, c)
        o = within_task_overlap(t)
        if o and o["duplicates"]:
            c.warn(t.source or t.name, overlap_text(o))
    for t in tasks:
        print(f"ok  {t.name}: " + ", ".join(f"{k}={len(v)}" for k, v in t.splits.items()))
    for p in c.warnings:
        print(f"  {p}")
    _print_errors(c.errors, a.max_errors)
    print(f"\n{len(tasks)} tasks loaded, {len(c.errors)} errors, {len(c.warnings)} warnings")
    if c.errors or (a.strict and c.warnings):
        return 2
    return 0


def cmd_tasks_split(a: argparse.Namespace) -> int:
    from .config import TaskSourceConfig
    from .data import shared_data_dir
    from .realdata import load_shared_tasks
    from .splits import TaskSplit, find_overlaps, resolve_split
    from .tasks import load_task_dirs

    folders = load_task_dirs(a.dirs) if a.dirs else []
    if a.no_shared and not folders:
        raise ManyICLError("--no-shared leaves nothing to split: name your task folders with --dirs")
    d = None
    if not a.no_shared:
        try:
            d = shared_data_dir(TaskSourceConfig(data_dir=a.data))
        except ManyICLError:
            if not folders or a.data:
                raise
    split = resolve_split(a.scheme, d) if d is not None else TaskSplit(a.scheme, [], [])
    out: dict = {
        "scheme": split.scheme,
        "train": split.train,
        "test": split.test,
        "missing": split.missing,
        "excluded": split.excluded,
        "folders": [t.name for t in folders],
    }
    if a.check_overlap:
        train = (load_shared_tasks(d, split.train) if d is not None else []) + folders
        test = (load_shared_tasks(d, split.test) if d is not None else []) + folders
        ov = find_overlaps(train, test, a.train_split, a.test_split)
        out["overlaps"] = [o for o in ov if o["train_task"] != o["test_task"]]
        out["within_task"] = [
            {"task": t.name, **o} for t in folders if (o := within_task_overlap(t, "train", a.test_split))
        ]
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    if d is not None:
        print(f"scheme {split.scheme}: {len(split.train)} training tasks, {len(split.test)} test tasks")
        print("test:  " + ", ".join(split.test))
        print("train: " + ", ".join(split.train))
    if folders:
        print(
            f"your folders ({len(folders)} tasks, used for training and evaluation alike): "
            + ", ".join(t.name for t in folders)
        )
    if split.excluded:
        print("excluded from training:")
        for n, why in split.excluded.items():
            print(f"  {n}: {why}")
    if split.missing:
        print(
            f"named by the scheme but absent here ({len(split.missing)}, skipped): "
            + ", ".join(split.missing)
        )
    if a.check_overlap:
        ov = out["overlaps"]
        if not ov:
            print(
                f"overlap check: no test example ({a.test_split}) occurs in any other training task "
                f"({a.train_split})"
            )
        for o in ov:
            tag = {"exact": "OVERLAP", "near": "NEAR-OVERLAP", "short": "short match (likely coincidence)"}[
                o["kind"]
            ]
            print(f"{tag}: {o['count']} of {o['test_task']} in {o['train_task']}, e.g. {o['samples'][0]!r}")
        for o in out["within_task"]:
            if o["duplicates"]:
                print(f"within {o['task']}: {overlap_text(o)}")
        leaks = [o for o in ov if o["kind"] != "short"]
        print(
            f"overlap check: {len(leaks)} leaking task pairs, {len(ov) - len(leaks)} short coincidental matches"
            + (
                f", {sum(bool(o['duplicates']) for o in out['within_task'])} folder tasks with train/test "
                "duplicates"
                if folders
                else ""
            )
        )
        return 2 if leaks else 0
    return 0


def cmd_synth_export(a: argparse.Namespace) -> int:
    from .synthetic import synthetic_suite
    from .tasks import write_task_dir

    tasks = synthetic_suite(
        seed=a.seed, instances=a.instances, train_size=a.train_size, test_size=a.test_size, split=a.split
    )
    for t in tasks:
        write_task_dir(t, Path(a.out) / t.name)
    print(f"wrote {len(tasks)} task folders to {a.out}")
    return 0


def _workflow_classes() -> dict[str, type]:
    """Workflow name -> config class (``manyicl.config.WORKFLOWS``)."""
    from . import config as C

    return {wf: getattr(C, cls_name) for cls_name, wf in C.WORKFLOWS.items()}


_WORKFLOW_CLASSES = _workflow_classes()


def _header_comment(text: str) -> str:
    """A shipped YAML's description: its leading comment lines (a ``workflow:`` line may come first)."""
    out = []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("#"):
            out.append(s.lstrip("#").strip())
        elif (not s or s.startswith("workflow:")) and not out:
            continue
        else:
            break
    return " ".join(x for x in out if x)


def config_class_for(path: Path) -> type:
    """The config class a YAML file is for: its ``workflow:`` key, else the first class that loads it."""
    from .config import load_yaml_mapping

    data = load_yaml_mapping(path)
    declared = data.get("workflow")
    if declared in _WORKFLOW_CLASSES:
        return _WORKFLOW_CLASSES[declared]
    stem = path.stem.replace("_", "-")
    order = sorted(_WORKFLOW_CLASSES.items(), key=lambda kv: not stem.startswith(kv[0]))
    for _, cls in order:
        try:
            load_config(cls, path)
        except ManyICLError:
            continue
        return cls
    raise ManyICLError(
        f"{path} loads as none of the workflows ({', '.join(_WORKFLOW_CLASSES)}); "
        "add `workflow: NAME` to it and see the problems with `manyicl NAME " + str(path) + "`"
    )


def _wrap(text: str, width: int, indent: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, max(width - indent, 30)) or [""]


def cmd_config_list(a: argparse.Namespace) -> int:
    rows = []
    for p in sorted(builtin_config_dir().glob("*.yaml")):
        try:
            wf = next(k for k, v in _WORKFLOW_CLASSES.items() if v is config_class_for(p))
        except (ManyICLError, StopIteration):
            wf = "?"
        rows.append((p.stem, wf, _header_comment(p.read_text(encoding="utf-8"))))
    nw = max(len(r[0]) for r in rows) + 2
    ww = max(len("workflow"), *(len(r[1]) for r in rows)) + 2
    print(f"{'name':<{nw}}{'workflow':<{ww}}description")
    for name, wf, desc in rows:
        lines = _wrap(desc, TABLE_WIDTH, nw + ww)
        print(f"{name:<{nw}}{wf:<{ww}}{lines[0]}")
        for line in lines[1:]:
            print(" " * (nw + ww) + line)
    print()
    for line in _wrap(
        "`manyicl config show NAME` prints a config's resolved values; `manyicl config show WORKFLOW` "
        f"({', '.join(_WORKFLOW_CLASSES)}) every field of that workflow with its default and docs.",
        TABLE_WIDTH,
        0,
    ):
        print(line)
    return 0


def _run_line(wf: str, config: str | None) -> str:
    if wf == "quickstart":
        return "manyicl quickstart" + (f" --config {config}" if config else "") + " [key.sub=value ...]"
    return f"manyicl {wf} {config or 'CONFIG'} [key.sub=value ...]"


def cmd_config_show(a: argparse.Namespace) -> int:
    from .config import dump_yaml, resolve_config_path

    name = a.name
    cls = _WORKFLOW_CLASSES.get(name) or _WORKFLOW_CLASSES.get(name.replace("_", "-"))
    if cls is not None:
        wf = next(k for k, v in _WORKFLOW_CLASSES.items() if v is cls)
        print(f"# `manyicl {wf}`: every field of {cls.__name__} with its default and documentation.")
        print(f"# Set them in a YAML file or as overrides: {_run_line(wf, None)}")
        if (builtin_config_dir() / f"{name}.yaml").exists():
            print(f"# ({name} is also a shipped config: `manyicl config show {name}.yaml` prints its values)")
        print(describe(cls))
        return 0
    try:
        path = resolve_config_path(name)
    except ManyICLError:
        shipped = ", ".join(sorted(q.stem for q in builtin_config_dir().glob("*.yaml")))
        raise ManyICLError(
            f"{name!r} is not a workflow ({', '.join(_WORKFLOW_CLASSES)}), a shipped config ({shipped}) or a "
            "config file"
        ) from None
    cls = config_class_for(path)
    wf = next(k for k, v in _WORKFLOW_CLASSES.items() if v is cls)
    cfg = load_config(cls, path)
    desc = _header_comment(path.read_text(encoding="utf-8"))
    for line in _wrap(desc, TABLE_WIDTH, 2) if desc else []:
        print(f"# {line}")
    shipped = path.resolve().parent == builtin_config_dir().resolve()
    shown = path.stem if shipped else str(path)
    print(f"# {'shipped config ' if shipped else ''}{shown}: every value resolved (defaults filled in)")
    print(f"# field docs: manyicl config show {wf}")
    print(f"# run it:     {_run_line(wf, shown)}")
    print(f"workflow: {wf}")
    print(dump_yaml(cfg).rstrip())
    return 0


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------


def cmd_serve(a: argparse.Namespace) -> int:
    from .serve import serve
    from .serve.config import config_from_args

    return serve(config_from_args(a))


def _epilog(command: str) -> str | None:
    lines = EXAMPLES.get(command)
    return "examples:\n" + "\n".join(f"  {x}" for x in lines) if lines else None


def _add_parser(sub, name: str, command: str | None = None, **kw) -> argparse.ArgumentParser:
    """A subcommand parser whose ``--help`` ends with the command's examples (printed as written)."""
    if "help" in kw and "description" not in kw:
        kw["description"] = kw["help"]
    return sub.add_parser(
        name, epilog=_epilog(command or name), formatter_class=argparse.RawDescriptionHelpFormatter, **kw
    )


def _workflow_parser(sub, name: str, help: str, what: str, func, cls) -> argparse.ArgumentParser:
    """A workflow subcommand: a config (file or shipped name) followed by key=value overrides."""
    p = _add_parser(sub, name, help=help)
    p.add_argument(
        "args",
        nargs="*",
        metavar="CONFIG|KEY=VALUE",
        help=f"{what} or shipped name (`manyicl config list`), then {overrides_help(name)}",
    )
    p.set_defaults(func=func, config_class=cls)
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="manyicl",
        description="Fine-tune a language model once (many-shot in-context fine-tuning), then adapt it to any "
        "task by many-shot prompting.",
        epilog="`manyicl COMMAND --help` shows a command's options and examples.",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = _workflow_parser(
        sub,
        "train",
        "fine-tune on packed many-shot sequences (LoRA or full)",
        "config YAML",
        cmd_train,
        TrainConfig,
    )
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")

    _workflow_parser(
        sub,
        "eval",
        "shot-curve evaluation with a cached prompt (base and/or adapters)",
        "eval config YAML",
        cmd_eval,
        EvalConfig,
    )

    q = _add_parser(
        sub, "quickstart", help="meta-train SmolLM2-135M on synthetic tasks, compare base vs fine-tuned"
    )
    q.add_argument("--output", help="output folder (default runs/quickstart)")
    q.add_argument("--config", default="quickstart", help="quickstart config (default: the shipped one)")
    q.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=overrides_help("quickstart"))
    q.set_defaults(func=cmd_quickstart, config_class=QuickstartConfig)

    x = _workflow_parser(
        sub,
        "experiment",
        "the paper's comparison (methods x tasks x shots, forgetting, ablation, cost), resumable",
        "experiment config",
        cmd_experiment,
        ExperimentConfig,
    )
    x.add_argument("--status", action="store_true", help="only show which cells are done, running and left")
    x.add_argument(
        "--report", action="store_true", help="only write the report from the cells finished so far"
    )

    _workflow_parser(
        sub,
        "distill",
        "context distillation: a k-shot teacher trains a student without context",
        "distill config",
        cmd_distill,
        DistillConfig,
    )

    _workflow_parser(
        sub,
        "icl-preserve",
        "task fine-tuning that keeps in-context learning (ICL data mixed in)",
        "icl-preserve config",
        cmd_icl_preserve,
        ICLPreserveConfig,
    )

    _workflow_parser(
        sub,
        "perplexity",
        "long-context perplexity and bits-per-byte on books (forgetting)",
        "perplexity config",
        cmd_perplexity,
        PerplexityConfig,
    )

    d = sub.add_parser("data", help="inspect training builds")
    dsub = d.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    ds = _add_parser(
        dsub,
        "stats",
        "data stats",
        help="token accounting of a build, incl. the mask-last comparison (paper Table 7)",
    )
    ds.add_argument(
        "args",
        nargs="*",
        metavar="CONFIG|KEY=VALUE",
        help=f"optional train config, then {overrides_help('train')}",
    )
    ds.add_argument("--json", action="store_true", help="print JSON")
    ds.add_argument("--brief", action="store_true", help="totals only")
    ds.set_defaults(func=cmd_data_stats, config_class=TrainConfig)
    dw = _add_parser(
        dsub, "show", "data show", help="print one training sequence with its supervised tokens marked"
    )
    dw.add_argument(
        "args",
        nargs="*",
        metavar="CONFIG|KEY=VALUE",
        help=f"optional train config, then {overrides_help('train')}",
    )
    dw.add_argument("--task", help="task or family name (default: the first task)")
    dw.add_argument("--chars", type=int, default=3000, help="print at most this many characters (0: all)")
    dw.set_defaults(func=cmd_data_show, config_class=TrainConfig)

    ta = sub.add_parser(
        "tasks", help="list, inspect, validate and split tasks (synthetic, shared data, folders)"
    )
    tsub = ta.add_subparsers(dest="tasks_command", required=True, metavar="SUBCOMMAND")

    def universe_args(x):
        x.add_argument(
            "--data", help="shared data folder (default: ../shared/data or $MANYICL_DATA when present)"
        )
        x.add_argument("--dirs", nargs="*", help="task folders to include")
        x.add_argument("--no-synthetic", action="store_true", help="leave out the synthetic suite")
        x.add_argument("--no-shared", action="store_true", help="leave out the shared datasets")
        x.add_argument(
            "--scheme",
            default="paper",
            help="split scheme for the role column (paper, metaicl:NAME, loco:CAT)",
        )

    tl = tsub.add_parser("list", help="every task with category, metric, held-in/out role and split sizes")
    universe_args(tl)
    tl.add_argument("--json", action="store_true")
    tl.set_defaults(func=cmd_tasks_list)
    ts = tsub.add_parser("show", help="one task: sizes, label balance, tokens per example, shots that fit")
    ts.add_argument("name")
    universe_args(ts)
    ts.add_argument("--model", default="smollm2-135m-instruct", help="tokenizer to count tokens with")
    ts.add_argument("--max-length", type=int, default=2048, help="context length for the shots estimate")
    ts.set_defaults(func=cmd_tasks_show)
    tv = tsub.add_parser("validate", help="check task folders (or --all) and report every problem")
    tv.add_argument("dirs", nargs="*", help="task folders (or folders of task folders)")
    tv.add_argument("--all", action="store_true", help="also the synthetic suite and every shared dataset")
    tv.add_argument("--data", help="shared data folder")
    tv.add_argument("--strict", action="store_true", help="fail on warnings too")
    tv.add_argument(
        "--max-errors",
        type=int,
        default=MAX_ERRORS_PER_FILE,
        help=f"errors printed per file before a count of the rest (default {MAX_ERRORS_PER_FILE}; 0: all)",
    )
    tv.set_defaults(func=cmd_tasks_validate, no_synthetic=False, no_shared=False, scheme="all")
    tp = tsub.add_parser(
        "split",
        help="held-in / held-out split of the shared tasks (and your folders), with an overlap check",
    )
    tp.add_argument(
        "--scheme", default="paper", help="paper, metaicl:NAME (e.g. metaicl:class_to_class), loco:CATEGORY"
    )
    tp.add_argument("--data", help="shared data folder")
    tp.add_argument(
        "--dirs",
        nargs="*",
        help="your task folders: their test examples are checked against every training task, and "
        "each one's test split against its own training split",
    )
    tp.add_argument("--no-shared", action="store_true", help="leave out the shared datasets (with --dirs)")
    tp.add_argument(
        "--check-overlap", action="store_true", help="report test examples that occur in training tasks"
    )
    tp.add_argument(
        "--train-split", default="train+dev+test", help="training examples to check (default all labelled)"
    )
    tp.add_argument("--test-split", default="test", help="test examples to check")
    tp.add_argument("--json", action="store_true")
    tp.set_defaults(func=cmd_tasks_split)

    sy = sub.add_parser("synth", help="the built-in synthetic task suite")
    ssub = sy.add_subparsers(dest="synth_command", required=True, metavar="SUBCOMMAND")
    se = ssub.add_parser(
        "export", help="write the suite as task folders (task.yaml + JSONL), e.g. as a format example"
    )
    se.add_argument("out")
    se.add_argument("--seed", type=int, default=0)
    se.add_argument("--instances", type=int, default=1)
    se.add_argument("--train-size", type=int, default=400)
    se.add_argument("--test-size", type=int, default=100)
    se.add_argument("--split", default="all", choices=["all", "held_in", "held_out"])
    se.set_defaults(func=cmd_synth_export)

    sv = _add_parser(
        sub, "serve", help="serve many tasks from one model over HTTP (cached many-shot prompts)"
    )
    from .serve.config import add_arguments as add_serve_arguments

    add_serve_arguments(sv)
    sv.set_defaults(func=cmd_serve)

    c = sub.add_parser("config", help="shipped configs and the documented schema")
    csub = c.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    cl = csub.add_parser("list", help="list shipped configs (name, workflow, description)")
    cl.set_defaults(func=cmd_config_list)
    cs = csub.add_parser(
        "show",
        help="a workflow's schema (every field, default and doc: "
        + ", ".join(_WORKFLOW_CLASSES)
        + ") or a shipped config's resolved values",
    )
    cs.add_argument("name", help="a workflow name, a shipped config name, or a config file")
    cs.set_defaults(func=cmd_config_show)
    return p


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Like ``parser.parse_args``, but ``KEY=VALUE`` overrides may also follow the flags
    (``manyicl data show tiny --task x data.max_length=256``), which argparse alone rejects."""
    a, extra = parser.parse_known_args(argv)
    if not extra:
        return a
    target = next((n for n in ("args", "overrides") if isinstance(getattr(a, n, None), list)), None)
    if target is None or any(x.startswith("-") for x in extra):
        return parser.parse_args(argv)  # argparse's own message for what is really unrecognised
    getattr(a, target).extend(extra)
    return a


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parse_args(parser, argv)
    _setup_logging(not a.quiet)
    try:
        return a.func(a)
    except ManyICLError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `manyicl tasks list | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
