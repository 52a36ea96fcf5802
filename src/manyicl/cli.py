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
    EvalConfig,
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


def cmd_train(a: argparse.Namespace) -> int:
    path, overrides = _split_config_args(a.args)
    cfg = load_config(TrainConfig, path, overrides)
    if a.resume:
        cfg.resume = True
    _offline(cfg.model.allow_download)
    from .train import train

    res = train(cfg)
    if res.summary:
        print(json.dumps({k: v for k, v in res.summary.items() if k != "build"}, indent=2))
        print(f"saved: {res.final_dir}")
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    path, overrides = _split_config_args(a.args)
    cfg = load_config(EvalConfig, path, overrides)
    _offline(cfg.model.allow_download)
    from .evaluate import evaluate
    from .report import best_max_table

    res = evaluate(cfg)
    print(best_max_table(res.summary, markdown=False))
    print(f"\nreport: {res.report_path}\nplots:  {res.output_dir / 'plots'}")
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
    path, overrides = _split_config_args(a.args)
    cfg = load_config(TrainConfig, path, overrides)
    _offline(cfg.model.allow_download)
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


def cmd_tasks_list(a: argparse.Namespace) -> int:
    from .config import TaskSourceConfig
    from .data import load_tasks

    src = TaskSourceConfig(synthetic=not a.no_synthetic, split="all", dirs=list(a.dirs or []))
    tasks = load_tasks(src)
    if a.json:
        print(json.dumps([_task_summary(t) for t in tasks], indent=2))
        return 0
    from .synthetic import FAMILIES

    print(f"{'task':<30}{'family':<24}{'category':<9}{'metric':<15}{'split':<9}{'labels':>7}  sizes")
    for t in tasks:
        held = "held-out" if (t.family in FAMILIES and FAMILIES[t.family].held_out) else "held-in"
        sizes = " ".join(f"{k}={len(v)}" for k, v in t.splits.items())
        print(f"{t.name:<30}{t.family:<24}{t.category:<9}{t.metric:<15}{held:<9}{len(t.labels):>7}  {sizes}")
    return 0


def _task_summary(t) -> dict:
    return {
        "name": t.name,
        "family": t.family,
        "category": t.category,
        "metric": t.metric,
        "labels": list(t.labels),
        "splits": {k: len(v) for k, v in t.splits.items()},
    }


def cmd_tasks_validate(a: argparse.Namespace) -> int:
    from .tasks import load_task_dirs

    tasks = load_task_dirs(a.dirs)
    for t in tasks:
        print(f"ok  {t.name}: " + ", ".join(f"{k}={len(v)}" for k, v in t.splits.items()))
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="manyicl",
        description="Fine-tune a language model once (many-shot in-context fine-tuning), then adapt it to any "
        "task by many-shot prompting.",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="fine-tune on packed many-shot sequences (LoRA or full)")
    t.add_argument(
        "args",
        nargs="*",
        metavar="CONFIG|KEY=VALUE",
        help=f"config YAML or shipped name, then {OVERRIDES_HELP}",
    )
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="shot-curve evaluation with a cached prompt (base and/or adapters)")
    e.add_argument(
        "args",
        nargs="*",
        metavar="CONFIG|KEY=VALUE",
        help=f"eval config YAML or shipped name, then {OVERRIDES_HELP}",
    )
    e.set_defaults(func=cmd_eval)

    q = sub.add_parser(
        "quickstart", help="meta-train SmolLM2-135M on synthetic tasks, compare base vs fine-tuned"
    )
    q.add_argument("--output", help="output folder (default runs/quickstart)")
    q.add_argument("--config", default="quickstart", help="quickstart config (default: the shipped one)")
    q.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="e.g. train.train.max_steps=10 eval.max_queries=10"
    )
    q.set_defaults(func=cmd_quickstart)

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

    ta = sub.add_parser("tasks", help="list and validate tasks")
    tsub = ta.add_subparsers(dest="tasks_command", required=True, metavar="SUBCOMMAND")
    tl = tsub.add_parser("list", help="list tasks with category, metric and split sizes")
    tl.add_argument("--dirs", nargs="*", help="task folders to include")
    tl.add_argument("--no-synthetic", action="store_true", help="leave out the synthetic suite")
    tl.add_argument("--json", action="store_true")
    tl.set_defaults(func=cmd_tasks_list)
    tv = tsub.add_parser("validate", help="check task folders and report every problem")
    tv.add_argument("dirs", nargs="+", help="task folders (or folders of task folders)")
    tv.set_defaults(func=cmd_tasks_validate)

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


if __name__ == "__main__":
    sys.exit(main())
