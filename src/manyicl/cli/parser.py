"""The argument parser: one subcommand per workflow and tool, with examples under each `--help`."""

from __future__ import annotations

import argparse
import logging

from ..config import (
    DistillConfig,
    EvalConfig,
    ExperimentConfig,
    ICLPreserveConfig,
    PerplexityConfig,
    QuickstartConfig,
    TrainConfig,
)
from .common import EXAMPLES, MAX_ERRORS_PER_FILE, overrides_help
from .config_cmds import _WORKFLOW_CLASSES, cmd_config_list, cmd_config_show
from .tasks_cmds import (
    cmd_data_show,
    cmd_data_stats,
    cmd_synth_export,
    cmd_tasks_list,
    cmd_tasks_show,
    cmd_tasks_split,
    cmd_tasks_validate,
)
from .workflows import (
    cmd_distill,
    cmd_eval,
    cmd_experiment,
    cmd_icl_preserve,
    cmd_perplexity,
    cmd_quickstart,
    cmd_serve,
    cmd_train,
)

log = logging.getLogger("manyicl")


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

    d = _workflow_parser(
        sub,
        "distill",
        "context distillation: a k-shot teacher trains a student without context",
        "distill config",
        cmd_distill,
        DistillConfig,
    )
    d.add_argument(
        "--report",
        action="store_true",
        help="only rewrite report.md, results.json/csv and plots from output_dir/results.json (the settings "
        "recorded there, or in config.yaml for an older study; no model or data loaded)",
    )

    ip = _workflow_parser(
        sub,
        "icl-preserve",
        "task fine-tuning that keeps in-context learning (ICL data mixed in)",
        "icl-preserve config",
        cmd_icl_preserve,
        ICLPreserveConfig,
    )
    ip.add_argument(
        "--report",
        action="store_true",
        help="only rewrite report.md, results.json/csv and plots from output_dir/results.json (the settings "
        "recorded there; no model or data loaded)",
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
    from ..serve.config import add_arguments as add_serve_arguments

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
