"""The workflow subcommands: each loads a typed config and calls one workflow function."""

from __future__ import annotations

import argparse
import json
import logging

from ..config import (
    DistillConfig,
    EvalConfig,
    ExperimentConfig,
    ICLPreserveConfig,
    PerplexityConfig,
    QuickstartConfig,
    TrainConfig,
    load_config,
)
from .common import _checked_output_dir, _config, _offline, summary_table_text

log = logging.getLogger("manyicl")


def cmd_train(a: argparse.Namespace) -> int:
    cfg = _checked_output_dir(_config(a, TrainConfig))
    if a.resume:
        cfg.resume = True
    from ..train import train

    res = train(cfg)
    if res.summary:
        print(json.dumps({k: v for k, v in res.summary.items() if k != "build"}, indent=2))
        print(f"saved: {res.final_dir}")
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    cfg = _checked_output_dir(_config(a, EvalConfig))
    from ..evaluate import evaluate

    res = evaluate(cfg)
    print(summary_table_text(res.summary))
    print(f"\nreport: {res.report_path}\nplots:  {res.output_dir / 'plots'}")
    return 0


def cmd_experiment(a: argparse.Namespace) -> int:
    cfg = _config(a, ExperimentConfig)
    if a.report:
        _refuse_report_without_cells(cfg.output_dir)
    elif not a.status:
        cfg = _checked_output_dir(cfg)
    from ..experiment import experiment

    res = experiment(cfg, status_only=a.status, report_only=a.report)
    if not a.status:
        print(f"report: {res.report_path}")
    return 0


def _refuse_report_without_cells(output_dir: str) -> None:
    """``experiment --report`` rebuilds every table from the cells: in a folder holding a report but no
    finished cells (a committed results folder: cells/ is not committed) it would replace that report
    with an empty one. Refused instead."""
    from pathlib import Path

    from ..errors import ConfigError
    from ..runs import has_cells

    out = Path(output_dir).expanduser()
    if (out / "report.md").exists() and not has_cells(out / "cells"):
        raise ConfigError.single(
            "output_dir",
            f"{out} holds a report but no finished cells ({out / 'cells'}): --report rebuilds the report "
            "from the cells and would replace it with an empty one; copy the cells back or run the study",
        )


def cmd_distill(a: argparse.Namespace) -> int:
    cfg = _config(a, DistillConfig)
    if a.report:
        from ..distill_report import report_from_results

        print(f"report: {report_from_results(cfg.output_dir)}")
        return 0
    cfg = _checked_output_dir(cfg)
    from ..distill import distill

    print(f"report: {distill(cfg).report_path}")
    return 0


def cmd_icl_preserve(a: argparse.Namespace) -> int:
    cfg = _config(a, ICLPreserveConfig)
    if a.report:
        from ..icl_preserve_report import report_from_results

        print(f"report: {report_from_results(cfg.output_dir)}")
        return 0
    cfg = _checked_output_dir(cfg)
    from ..icl_preserve import icl_preserve

    print(f"report: {icl_preserve(cfg).report_path}")
    return 0


def cmd_perplexity(a: argparse.Namespace) -> int:
    cfg = _checked_output_dir(_config(a, PerplexityConfig))
    from ..perplexity import perplexity, perplexity_table

    res = perplexity(cfg)
    print(perplexity_table(res.rows))
    print(f"written: {res.output_dir / 'perplexity.md'}")
    return 0


def cmd_quickstart(a: argparse.Namespace) -> int:
    overrides = list(a.overrides)
    if a.output:
        overrides.append(f"output_dir={a.output}")
    cfg = _checked_output_dir(load_config(QuickstartConfig, a.config, overrides))
    _offline(cfg.train.model.allow_download)
    from ..quickstart import quickstart

    res = quickstart(cfg)
    t = res.timings
    print("\nHeld-out synthetic families (never seen in meta-training), base model vs fine-tuned (manyicl):")
    print(summary_table_text(res.summary))
    print(
        f"\ntime: {t['total_s']:.0f} s total (load {t['load_model_s']:.0f} s, train {t['train_s']:.0f} s at "
        f"{t['train_tokens_per_s']:.0f} tokens/s, eval {t['eval_s']:.0f} s)"
    )
    print(f"report: {res.report_path}")
    print(f"plots:  {res.report_path.parent / 'plots'}/ ({len(res.plots)} PNG shot curves)")
    return 0


def cmd_serve(a: argparse.Namespace) -> int:
    from ..serve import serve
    from ..serve.config import config_from_args

    return serve(config_from_args(a))
