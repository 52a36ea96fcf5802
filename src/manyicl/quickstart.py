"""Quickstart: the whole fine-tune-once idea in a few minutes on a laptop CPU.

1. Build many-shot sequences from the held-in synthetic families.
2. Meta-train SmolLM2-135M with LoRA and the mask-all-targets objective.
3. Evaluate the base model and the fine-tuned one on held-out families (task types never seen in
   training) at several shot counts, with a cached prompt, and write report.md and plots.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

from .config import QuickstartConfig, dump_yaml
from .fileio import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)


@dataclass
class QuickstartResult:
    """What ``quickstart`` did: where the eval report is, its plots, timings and the summary rows."""

    output_dir: Path
    report_path: Path
    """The evaluation's report.md (OUTPUT/eval/report.md)."""
    plots: list[Path]
    timings: dict
    summary: list[dict]


def quickstart(cfg: QuickstartConfig) -> QuickstartResult:
    from .evaluate import evaluate
    from .session import ModelSession
    from .train import prepare_model, train

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tcfg = replace(
        cfg.train, output_dir=str(out / "train"), overwrite=True
    )  # a quickstart reruns from scratch
    atomic_write_text(out / "config.yaml", dump_yaml(cfg))
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    session = ModelSession.load(tcfg.model)
    tokenizer = session.tokenizer

    def new_lora(base):
        return prepare_model(tcfg, base=base, tokenizer=tokenizer)[0]

    # On exit the in-memory LoRA layers go: evaluation attaches the saved adapter to the same base
    # weights, so it checks the artifact a user would ship, not just the live object.
    with session.attached(new_lora) as model:
        timings["load_model_s"] = time.perf_counter() - t0
        log.info("[1/2] meta-training on held-in synthetic families (LoRA, %s)", tcfg.data.objective)
        t1 = time.perf_counter()
        tres = train(tcfg, model=model, tokenizer=tokenizer)
        timings["train_s"] = time.perf_counter() - t1
    base = session.model
    base.eval()
    adapter_dir = str(tres.final_dir)
    ecfg = replace(
        cfg.eval,
        output_dir=str(out / "eval"),
        model=replace(tcfg.model, adapter=None),
        adapters={"base": None, "manyicl": adapter_dir},
        overwrite=True,  # a quickstart reruns from scratch
    )
    log.info("[2/2] evaluating base vs fine-tuned on held-out families (never seen in training)")
    t2 = time.perf_counter()
    eres = evaluate(ecfg, model=base, tokenizer=tokenizer)
    timings["eval_s"] = time.perf_counter() - t2
    timings["total_s"] = time.perf_counter() - t0
    timings["train_tokens_per_s"] = tres.summary.get("tokens_per_s") or 0.0
    atomic_write_json(out / "timings.json", timings)
    plots = sorted((out / "eval" / "plots").glob("*.png"))
    return QuickstartResult(out, eres.report_path, plots, timings, eres.summary)
