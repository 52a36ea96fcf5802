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

OVERRIDES_HELP = "config overrides as key.sub=value (e.g. data.max_length=1024 optim.lr=1e-4)"


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
    from .report import best_max_table

    res = evaluate(cfg)
    print(best_max_table(res.summary, markdown=False))
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
    from .report import best_max_table

    res = quickstart(cfg)
    t = res.timings
    print(
        "\nHeld-out synthetic families (never seen in meta-training): best score over shots / score at max shots"
    )
    print(best_max_table(res.summary, markdown=False))
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


def cmd_data_show(a: argparse.Namespace) -> int:
    cfg, dcfg = _data_config(a)
    from .data import build_training_data, load_tasks
    from .modeling import load_tokenizer

    tok = load_tokenizer(cfg.model)
    tasks = load_tasks(dcfg.tasks)
    if a.task:
        tasks = [t for t in tasks if t.name == a.task or t.family == a.task][:1]
        if not tasks:
            raise ManyICLError(f"no task named {a.task!r}; see `manyicl tasks list`")
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


def cmd_tasks_show(a: argparse.Namespace) -> int:
    from collections import Counter

    import numpy as np

    from .config import ModelConfig
    from .modeling import load_tokenizer
    from .templates import tokenize_task

    tasks, roles = _task_universe(a)
    match = [t for t in tasks if t.name == a.name] or [t for t in tasks if a.name in t.name]
    if not match:
        raise ManyICLError(f"no task named {a.name!r}; see `manyicl tasks list`")
    t = match[0]
    print(f"{t.name}  [{t.category}, metric {t.metric}, {roles.get(t.name, '-')} in the {a.scheme} split]")
    if t.description:
        print(f"  {t.description[:300]}")
    if t.source:
        print(f"  source: {t.source}")
    for n in t.notes:
        print(f"  note: {n}")
    print("  splits: " + ", ".join(f"{k}={len(v)}" for k, v in t.splits.items()))
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


def cmd_tasks_validate(a: argparse.Namespace) -> int:
    from .errors import Collector, ProblemsError
    from .tasks import check_quality, load_task_dirs, validate_task

    c = Collector()
    tasks = []
    if a.dirs:
        try:
            tasks += load_task_dirs(a.dirs)
        except ProblemsError as e:
            c.problems.extend(e.problems)
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
    for t in tasks:
        print(f"ok  {t.name}: " + ", ".join(f"{k}={len(v)}" for k, v in t.splits.items()))
    for p in c.warnings:
        print(f"  {p}")
    for p in c.errors:
        print(f"ERROR {p}", file=sys.stderr)
    print(f"\n{len(tasks)} tasks, {len(c.errors)} errors, {len(c.warnings)} warnings")
    if c.errors or (a.strict and c.warnings):
        return 2
    return 0


def cmd_tasks_split(a: argparse.Namespace) -> int:
    from .config import TaskSourceConfig
    from .data import shared_data_dir
    from .realdata import load_shared_tasks
    from .splits import find_overlaps, resolve_split

    d = shared_data_dir(TaskSourceConfig(data_dir=a.data))
    split = resolve_split(a.scheme, d)
    out: dict = {
        "scheme": split.scheme,
        "train": split.train,
        "test": split.test,
        "missing": split.missing,
        "excluded": split.excluded,
    }
    if a.check_overlap:
        train = load_shared_tasks(d, split.train)
        test = load_shared_tasks(d, split.test)
        out["overlaps"] = find_overlaps(train, test, a.train_split, a.test_split)
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"scheme {split.scheme}: {len(split.train)} training tasks, {len(split.test)} test tasks")
    print("test:  " + ", ".join(split.test))
    print("train: " + ", ".join(split.train))
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
                f"overlap check: no test example ({a.test_split}) occurs in any training task ({a.train_split})"
            )
        for o in ov:
            tag = {"exact": "OVERLAP", "near": "NEAR-OVERLAP", "short": "short match (likely coincidence)"}[
                o["kind"]
            ]
            print(f"{tag}: {o['count']} of {o['test_task']} in {o['train_task']}, e.g. {o['samples'][0]!r}")
        leaks = [o for o in ov if o["kind"] != "short"]
        print(
            f"overlap check: {len(leaks)} leaking task pairs, {len(ov) - len(leaks)} short coincidental matches"
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


def cmd_config_list(a: argparse.Namespace) -> int:
    for p in sorted(builtin_config_dir().glob("*.yaml")):
        first = p.read_text().splitlines()[0] if p.read_text() else ""
        print(f"{p.stem:<24}{first.lstrip('# ')}")
    return 0


def cmd_config_show(a: argparse.Namespace) -> int:
    if a.name == "train":
        print(describe(TrainConfig))
        return 0
    from .config import resolve_config_path

    print(resolve_config_path(a.name).read_text())
    return 0


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------


def _workflow_parser(sub, name: str, help: str, what: str, func) -> argparse.ArgumentParser:
    """A workflow subcommand: a config (file or shipped name) followed by key=value overrides."""
    p = sub.add_parser(name, help=help)
    p.add_argument(
        "args",
        nargs="*",
        metavar="CONFIG|KEY=VALUE",
        help=f"{what} or shipped name, then {OVERRIDES_HELP}",
    )
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="manyicl",
        description="Fine-tune a language model once (many-shot in-context fine-tuning), then adapt it to any "
        "task by many-shot prompting.",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = _workflow_parser(
        sub, "train", "fine-tune on packed many-shot sequences (LoRA or full)", "config YAML", cmd_train
    )
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")

    _workflow_parser(
        sub,
        "eval",
        "shot-curve evaluation with a cached prompt (base and/or adapters)",
        "eval config YAML",
        cmd_eval,
    )

    q = sub.add_parser(
        "quickstart", help="meta-train SmolLM2-135M on synthetic tasks, compare base vs fine-tuned"
    )
    q.add_argument("--output", help="output folder (default runs/quickstart)")
    q.add_argument("--config", default="quickstart", help="quickstart config (default: the shipped one)")
    q.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="e.g. train.train.max_steps=10 eval.max_queries=10"
    )
    q.set_defaults(func=cmd_quickstart)

    x = _workflow_parser(
        sub,
        "experiment",
        "the paper's comparison (methods x tasks x shots, forgetting, ablation, cost), resumable",
        "experiment config",
        cmd_experiment,
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
    )

    _workflow_parser(
        sub,
        "icl-preserve",
        "task fine-tuning that keeps in-context learning (ICL data mixed in)",
        "icl-preserve config",
        cmd_icl_preserve,
    )

    _workflow_parser(
        sub,
        "perplexity",
        "long-context perplexity and bits-per-byte on books (forgetting)",
        "perplexity config",
        cmd_perplexity,
    )

    d = sub.add_parser("data", help="inspect training builds")
    dsub = d.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    ds = dsub.add_parser(
        "stats", help="token accounting of a build, incl. the mask-last comparison (paper Table 7)"
    )
    ds.add_argument(
        "args", nargs="*", metavar="CONFIG|KEY=VALUE", help=f"optional train config, then {OVERRIDES_HELP}"
    )
    ds.add_argument("--json", action="store_true", help="print JSON")
    ds.add_argument("--brief", action="store_true", help="totals only")
    ds.set_defaults(func=cmd_data_stats)
    dw = dsub.add_parser("show", help="print one training sequence with its supervised tokens marked")
    dw.add_argument("args", nargs="*", metavar="CONFIG|KEY=VALUE")
    dw.add_argument("--task", help="task or family name (default: the first task)")
    dw.add_argument("--chars", type=int, default=3000, help="print at most this many characters (0: all)")
    dw.set_defaults(func=cmd_data_show)

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
    tv.set_defaults(func=cmd_tasks_validate, no_synthetic=False, no_shared=False, scheme="all")
    tp = tsub.add_parser("split", help="held-in / held-out split of the shared tasks, with an overlap check")
    tp.add_argument(
        "--scheme", default="paper", help="paper, metaicl:NAME (e.g. metaicl:class_to_class), loco:CATEGORY"
    )
    tp.add_argument("--data", help="shared data folder")
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

    c = sub.add_parser("config", help="shipped configs and the documented schema")
    csub = c.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    cl = csub.add_parser("list", help="list shipped configs")
    cl.set_defaults(func=cmd_config_list)
    cs = csub.add_parser("show", help="print a shipped config, or 'train' for every field with its docs")
    cs.add_argument("name")
    cs.set_defaults(func=cmd_config_show)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
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
