"""Task fine-tuning that keeps in-context learning: ``manyicl icl-preserve CONFIG``.

Fine-tuning on one task tends to cost a model its few-shot ability on *other* tasks. This workflow
measures how much, and how much of it three remedies keep (seed 003): LoRA instead of full fine-tuning,
mixing a fraction of ICL-format multi-task data into the task data, and a KL-to-the-base regulariser on
that ICL data.

* Target task(s) ``train.data.tasks`` are fine-tuned zero-shot (``shots=0``, ``mask_last_target``: plain
  supervised fine-tuning) on ``train.data.train_split``.
* ICL data ``icl_tasks`` are many-shot sequences (``shots=icl_shots``, ``mask_all_targets``) of other
  tasks, at the same context length.
* Every run (finetune kind x mix ratio x KL weight) trains on the **same number of windows** N (the number
  of windows of the pure target build). A mix ratio r replaces ``round(r * N)`` target windows with ICL
  windows: the ratio counts *windows* (each window is one row of packed zero-shot sequences or one many-shot
  sequence, both close to ``max_length`` tokens); the resulting token and supervised-token fractions are
  measured and reported too. Windows are taken as prefixes of each (already shuffled) build, so the data of
  a larger ratio contains that of a smaller one.
* The base model (no fine-tuning) and every run are evaluated on held-out tasks unrelated to the target
  (``eval.tasks`` at ``eval.shots``) and on the target itself (``target_shots``). The ICL drop is
  ``(base - after) / base * 100`` per held-out task, per shot count and for the best few-shot score (best
  over the shot counts > 0), averaged over the tasks.

Runs are cells (``cells/train/<run>.json``, ``cells/eval/<run>.json``), saved when finished and never
redone; a killed run continues with the next unfinished cell. The metrics and the report (claims, tables,
plots) are in :mod:`manyicl.icl_preserve_report`.
"""

from __future__ import annotations

import copy
import gc
import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

from .config import ICLPreserveConfig
from .data import TrainingData, build_training_data, load_tasks
from .errors import ConfigError, ManyICLError
from .icl_preserve_report import (  # the report's public names stay importable from here
    BEST,
    KIND_LABELS,
    claims,
    heldout_metrics,
    noise_pct,
    report_from_results,
    shot_labels,
    summarize,
    target_labels,
    target_metrics,
    write_report,
)
from .packing import BuildStats, TaskBuildStats, Window
from .session import ModelSession
from .train import KL_TAG

log = logging.getLogger(__name__)

ICL_TAG = KL_TAG
TARGET_TAG = "target"

__all__ = [
    "BEST",
    "ICL_TAG",
    "KIND_LABELS",
    "TARGET_TAG",
    "Context",
    "RunSpec",
    "build_icl_data",
    "claims",
    "heldout_metrics",
    "icl_preserve",
    "icl_window_count",
    "mix_windows",
    "noise_pct",
    "plan_runs",
    "report_from_results",
    "shot_labels",
    "summarize",
    "target_labels",
    "target_metrics",
    "write_report",
]


# --------------------------------------------------------------------------------------------
# Runs and data mixing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    kind: str  # lora | full
    ratio: float
    kl: float

    @property
    def name(self) -> str:
        return f"{self.kind}_ratio{self.ratio:g}_kl{self.kl:g}"

    @property
    def label(self) -> str:
        text = f"{KIND_LABELS[self.kind]}, {self.ratio:.0%} ICL data"
        return text + (f", KL {self.kl:g}" if self.kl else "")


def plan_runs(cfg: ICLPreserveConfig) -> list[RunSpec]:
    """Every (kind, ratio, KL weight); a KL weight > 0 only with ratio > 0 (it acts on the ICL windows)."""
    runs = []
    for kind in dict.fromkeys(cfg.finetune):
        for ratio in dict.fromkeys(cfg.mix_ratios):
            for kl in dict.fromkeys(cfg.kl_to_base):
                if kl > 0 and ratio == 0:
                    continue
                runs.append(RunSpec(kind, float(ratio), float(kl)))
    return runs


def icl_window_count(ratio: float, n_windows: int) -> int:
    """ICL windows among ``n_windows`` for a mix ratio: round half up, at least one when ratio > 0."""
    if ratio <= 0:
        return 0
    return min(n_windows - 1, max(1, math.floor(ratio * n_windows + 0.5)))


def mix_windows(
    target: TrainingData, icl: TrainingData | None, ratio: float, n_windows: int | None = None
) -> tuple[TrainingData, dict]:
    """A build of ``n_windows`` windows (default: all target windows), ``icl_window_count(ratio, n)`` of
    them ICL windows and the rest target windows; both are prefixes of their builds. Returns the build and
    its composition (windows, tokens, supervised tokens and examples of each part)."""
    n = n_windows if n_windows is not None else len(target.windows)
    n_icl = icl_window_count(ratio, n)
    n_tgt = n - n_icl
    if n_tgt > len(target.windows):
        raise ManyICLError(f"mixing needs {n_tgt} target windows, the target build has {len(target.windows)}")
    icl_windows = icl.windows if icl is not None else []
    if n_icl > len(icl_windows):
        raise ManyICLError(f"mixing needs {n_icl} ICL windows, the ICL build has {len(icl_windows)}")
    tgt_w, icl_w = target.windows[:n_tgt], icl_windows[:n_icl]
    windows: list[Window] = tgt_w + icl_w
    shots = f"{target.stats.shots}+{icl.stats.shots}" if icl is not None and n_icl else target.stats.shots
    stats = BuildStats(target.stats.max_length, shots, f"mixed ratio {ratio:g}")
    for w in windows:
        for s in w.sequences:
            stats.per_task.setdefault(s.task, TaskBuildStats(s.task)).add(s)
    stats.windows = len(windows)
    stats.window_tokens = sum(len(w) for w in windows)

    def part(ws: list[Window]) -> dict:
        seqs = [s for w in ws for s in w.sequences]
        return {
            "windows": len(ws),
            "sequences": len(seqs),
            "tokens": sum(len(s) for s in seqs),
            "supervised_tokens": int(sum(s.loss_mask.sum() for s in seqs)),
            "supervised_examples": sum(s.supervised_examples for s in seqs),
            "tasks": sorted({s.task for s in seqs}),
        }

    t, i = part(tgt_w), part(icl_w)
    comp = {"ratio": ratio, "windows": n, "target": t, "icl": i}
    for k in ("windows", "tokens", "supervised_tokens"):
        comp[f"icl_{k}_fraction"] = i[k] / max(t[k] + i[k], 1)
    return TrainingData(windows, stats), comp


def build_icl_data(tasks, tokenizer, cfg: ICLPreserveConfig, needed: int) -> TrainingData:
    """Many-shot ICL-format windows of ``tasks`` (tagged ``icl``), at least ``needed`` of them."""
    per_task = max(1, math.ceil(needed / max(len(tasks), 1)))
    for _ in range(8):
        dcfg = replace(
            cfg.train.data,
            tasks=cfg.icl_tasks,
            shots=cfg.icl_shots,
            objective="mask_all_targets",
            sequences_per_task=per_task,
            supervised_examples_per_task=0,
        )
        data = build_training_data(tasks, tokenizer, dcfg, tag=ICL_TAG)
        if len(data.windows) >= needed:
            return data
        per_task *= 2
    raise ManyICLError(f"could not build {needed} ICL windows from {len(tasks)} tasks")


# --------------------------------------------------------------------------------------------
# Cells
# --------------------------------------------------------------------------------------------


@dataclass
class Context:
    cfg: ICLPreserveConfig
    out: Path
    cells: object
    session: ModelSession  # the base model, loaded once; LoRA runs attach to it and are removed again
    target_tasks: list
    icl_tasks: list
    heldout_tasks: list
    _target: TrainingData | None = None
    _icl: TrainingData | None = None

    @property
    def model(self):
        return self.session.model

    @property
    def tokenizer(self):
        return self.session.tokenizer

    def target_data(self) -> TrainingData:
        if self._target is None:
            dcfg = replace(self.cfg.train.data, shots=0, objective="mask_last_target")
            self._target = build_training_data(self.target_tasks, self.tokenizer, dcfg, tag=TARGET_TAG)
        return self._target

    def icl_data(self) -> TrainingData:
        if self._icl is None:
            n = len(self.target_data().windows)
            needed = max(icl_window_count(r, n) for r in self.cfg.mix_ratios)
            self._icl = build_icl_data(self.icl_tasks, self.tokenizer, self.cfg, max(needed, 1))
        return self._icl


def _eval_cfgs(ctx: Context, name: str, label: str, adapter: str | None):
    base = replace(
        ctx.cfg.eval,
        adapters={label: adapter},
        plots=False,
        model=ctx.cfg.train.model,
        save_prompt_caches=False,
        resume=True,  # a killed cell keeps its finished points
    )
    root = ctx.out / "eval_runs" / name
    heldout = replace(base, output_dir=str(root / "heldout"))
    target = replace(base, output_dir=str(root / "target"), shots=list(ctx.cfg.target_shots))
    return heldout, target


def _evaluate(ctx: Context, name: str, label: str, model, adapter: str | None) -> dict:
    """Held-out ICL curves and target accuracy of one model; ``adapter`` is loaded onto ``model``."""
    from .evaluate import evaluate

    t0 = time.perf_counter()
    hcfg, tcfg = _eval_cfgs(ctx, name, label, adapter)
    h = evaluate(hcfg, model=model, tokenizer=ctx.tokenizer, tasks=ctx.heldout_tasks)
    t = evaluate(tcfg, model=model, tokenizer=ctx.tokenizer, tasks=ctx.target_tasks)
    nq = {}
    for r in h.rows + t.rows:
        nq[r["task"]] = r["n_queries"]
    return {
        "heldout": h.summary,
        "target": t.summary,
        "n_queries": nq,
        "eval_s": time.perf_counter() - t0,
    }


def _base_cell(ctx: Context) -> dict:
    return ctx.cells.run(
        "eval/base",
        lambda: {"label": "No fine-tuning (base)"} | _evaluate(ctx, "base", "base", ctx.model, None),
    )


def _train_cfg(ctx: Context, run: RunSpec):
    c = ctx.cfg.train
    model = c.model if run.kind == "lora" else replace(c.model, dtype="float32", adapter=None)
    return replace(
        c,
        output_dir=str(ctx.out / "train" / run.name),
        model=model,
        lora=replace(c.lora, enabled=run.kind == "lora"),
        optim=replace(c.optim, kl_to_base=run.kl),
        data=replace(c.data, shots=0, objective="mask_last_target"),
        resume=True,
    )


def _run_cells(ctx: Context, run: RunSpec) -> dict:
    """Train (unless its cell is done) and evaluate one run; returns the merged cell."""
    from .modeling import _DTYPES, load_model, resolve_dtype
    from .train import prepare_model, train

    tkey, ekey = f"train/{run.name}", f"eval/{run.name}"
    # set when train_cell runs in this call: [the full fine-tuned model, evaluated without a reload] or [None]
    trained: list = []

    def train_cell() -> dict:
        tcfg = _train_cfg(ctx, run)
        t0 = time.perf_counter()
        data, comp = mix_windows(ctx.target_data(), ctx.icl_data() if run.ratio else None, run.ratio)
        build_s = time.perf_counter() - t0
        if run.kind == "lora":

            def new_lora(base):
                return prepare_model(tcfg, base=base, tokenizer=ctx.tokenizer)[0]

            with ctx.session.attached(new_lora) as model:  # the LoRA layers go on exit
                res = train(tcfg, data=data, model=model, tokenizer=ctx.tokenizer)
            if tcfg.train.gradient_checkpointing:
                ctx.model.gradient_checkpointing_disable()
            ctx.model.eval()
            trained.append(None)
        else:
            # a fresh float32 copy of the base (bf16 AdamW updates lose small steps), and a frozen
            # reference for the KL term
            fresh, _ = load_model(tcfg.model, tokenizer=ctx.tokenizer)
            ref = copy.deepcopy(fresh) if run.kl else None
            model, _ = prepare_model(tcfg, base=fresh, tokenizer=ctx.tokenizer)
            res = train(tcfg, data=data, model=model, tokenizer=ctx.tokenizer, ref_model=ref)
            del ref
            trained.append(model)
        return {
            "run": {
                "kind": run.kind,
                "ratio": run.ratio,
                "kl": run.kl,
                "name": run.name,
                "label": run.label,
            },
            "final_dir": str(res.final_dir),
            "build_s": build_s,
            "mix": comp,
            "summary": res.summary,
        }

    def eval_cell() -> dict:
        if run.kind == "lora":
            ecell = _evaluate(ctx, run.name, run.name, ctx.model, tcell["final_dir"])
        else:
            dtype = ctx.cfg.train.model.dtype
            full_model = trained.pop() if trained else None
            if full_model is None:
                full_model, _ = load_model(
                    replace(ctx.cfg.train.model, name_or_path=tcell["final_dir"], adapter=None),
                    tokenizer=ctx.tokenizer,
                )
            # evaluated in the same dtype as the base model and the LoRA runs
            full_model.to(_DTYPES[resolve_dtype(dtype)]).eval()
            full_model.config.use_cache = False
            ecell = _evaluate(ctx, run.name, run.name, full_model, None)
            del full_model
            gc.collect()
        ecell["eval_dtype"] = ctx.cfg.train.model.dtype
        return ecell

    tcell = ctx.cells.run(tkey, train_cell)
    # an evaluation describes the training before it: when the training is (re)done, so is its evaluation
    ecell = ctx.cells.run(ekey, eval_cell, valid=lambda _: not trained)
    trained.clear()
    return tcell | ecell


# --------------------------------------------------------------------------------------------
# The workflow
# --------------------------------------------------------------------------------------------


_SELECTION = ("output_dir", "overwrite", "finetune", "kl_to_base")
"""Settings that choose which runs are done, not what a run computes (a continued study may change them).
``mix_ratios`` is not one: the largest ratio sets how many ICL windows are built for every run."""

_SET_PER_CELL = (
    "train.output_dir", "train.resume", "train.lora.enabled", "train.optim.kl_to_base",
    "train.data.shots", "train.data.objective",
    "eval.output_dir", "eval.resume", "eval.plots", "eval.save_prompt_caches", "eval.adapters", "eval.model",
)  # fmt: skip
"""Settings every cell replaces with its own (``_train_cfg``, ``_eval_cfgs``): they change no number."""


def settings_drift(old: dict, cfg: ICLPreserveConfig) -> list[str]:
    """Settings that differ between the run that made a folder's cells and ``cfg`` (selection keys and
    the settings each cell sets itself aside)."""
    from .config import to_dict
    from .runs import settings_drift as drift

    return drift(
        old, to_dict(cfg), ignore=_SELECTION + _SET_PER_CELL, keep_whole=("eval.adapters", "eval.model")
    )


def claim_folder(cfg: ICLPreserveConfig):
    """The output folder under the shared run policy (``runs.RunFolder``): finished cells made with the
    same settings are kept (the study continues cell by cell); cells made with other settings are
    refused, or discarded with ``overwrite=true``. Returns the folder, to hold its lock while the study
    works."""
    from .fileio import check_output_dir
    from .runs import study_folder

    return study_folder(
        check_output_dir(cfg.output_dir),
        "icl-preserve",
        ("cells", "train", "eval_runs", "plots", "results.json", "results.csv", "report.md"),
        lambda old: settings_drift(old, cfg),
        cfg.overwrite,
    )


@dataclass
class ICLPreserveResult:
    """What ``icl_preserve`` did: the report and the cells it is made from."""

    report_path: Path
    output_dir: Path
    base: dict
    """The base model's evaluation cell (no fine-tuning): held-out curves and target accuracy."""
    runs: list[dict]
    """One per run (``plan_runs`` order): its training cell merged with its evaluation cell."""
    icl_tasks: list[str]
    """Names of the ICL-format tasks loaded to be mixed in (``icl_tasks``), in load order."""


def icl_preserve(cfg: ICLPreserveConfig) -> ICLPreserveResult:
    """Run (or continue) every run of the study, then write report.md, results.json/csv and plots."""
    folder = claim_folder(cfg)
    with folder.started(cfg) as cfg:
        return _study(cfg, folder.path)


def _study(cfg: ICLPreserveConfig, out: Path) -> ICLPreserveResult:
    from .cells import Cells

    target_tasks = load_tasks(cfg.train.data.tasks)
    icl_tasks = load_tasks(cfg.icl_tasks)
    heldout_tasks = load_tasks(cfg.eval.tasks)
    clash = {t.name for t in heldout_tasks} & {t.name for t in target_tasks + icl_tasks}
    if clash:
        raise ConfigError.single(
            "eval.tasks",
            f"held-out tasks must be unrelated to the training data; also trained on: {', '.join(sorted(clash))}",
        )
    if not any(s != 0 and s != "0" for s in cfg.eval.shots):
        log.warning("eval.shots has no shot count > 0: the 'best few-shot' score is the 0-shot score")
    runs = plan_runs(cfg)
    cells = Cells(out)
    session = ModelSession.load(cfg.train.model)
    ctx = Context(cfg, out, cells, session, target_tasks, icl_tasks, heldout_tasks)
    t_start = time.perf_counter()
    base = _base_cell(ctx)
    log.info("base model evaluated (%.0f s into this run)", time.perf_counter() - t_start)
    results = []
    for run in runs:
        results.append(_run_cells(ctx, run))
        log.info("finished %s (%.0f s into this run)", run.name, time.perf_counter() - t_start)
    icl_names = [t.name for t in icl_tasks]
    return ICLPreserveResult(write_report(cfg, base, results, icl_names), out, base, results, icl_names)
