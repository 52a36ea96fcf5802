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
redone; a killed run continues with the next unfinished cell.
"""

from __future__ import annotations

import copy
import gc
import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .config import ICLPreserveConfig, dump_yaml, to_dict
from .data import TrainingData, build_training_data, load_tasks
from .errors import ConfigError, ManyICLError
from .fileio import atomic_save, atomic_write_json, atomic_write_text
from .packing import BuildStats, TaskBuildStats, Window
from .train import KL_TAG

log = logging.getLogger(__name__)

ICL_TAG = KL_TAG
TARGET_TAG = "target"
KIND_LABELS = {"lora": "LoRA", "full": "Full FT"}


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
    model: object
    tokenizer: object
    target_tasks: list
    icl_tasks: list
    heldout_tasks: list
    _target: TrainingData | None = None
    _icl: TrainingData | None = None

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
    key = "eval/base"
    done = ctx.cells.get(key)
    if done:
        return done
    with ctx.cells.working(key):
        cell = {"label": "No fine-tuning (base)"} | _evaluate(ctx, "base", "base", ctx.model, None)
        ctx.cells.put(key, cell)
        return cell


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
    tcell, ecell = ctx.cells.get(tkey), ctx.cells.get(ekey)
    if tcell and ecell:
        return tcell | ecell
    full_model = None
    if not tcell:
        with ctx.cells.working(tkey):
            tcfg = _train_cfg(ctx, run)
            t0 = time.perf_counter()
            data, comp = mix_windows(ctx.target_data(), ctx.icl_data() if run.ratio else None, run.ratio)
            build_s = time.perf_counter() - t0
            if run.kind == "lora":
                model, _ = prepare_model(tcfg, base=ctx.model, tokenizer=ctx.tokenizer)
                res = train(tcfg, data=data, model=model, tokenizer=ctx.tokenizer)
                ctx.model = model.unload()  # the LoRA layers go; the base weights were never touched
                if tcfg.train.gradient_checkpointing:
                    ctx.model.gradient_checkpointing_disable()
                ctx.model.eval()
            else:
                # a fresh float32 copy of the base (bf16 AdamW updates lose small steps), and a frozen
                # reference for the KL term
                fresh, _ = load_model(tcfg.model, tokenizer=ctx.tokenizer)
                ref = copy.deepcopy(fresh) if run.kl else None
                model, _ = prepare_model(tcfg, base=fresh, tokenizer=ctx.tokenizer)
                res = train(tcfg, data=data, model=model, tokenizer=ctx.tokenizer, ref_model=ref)
                del ref
                full_model = model
            tcell = {
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
            ctx.cells.put(tkey, tcell)
    with ctx.cells.working(ekey):
        if run.kind == "lora":
            ecell = _evaluate(ctx, run.name, run.name, ctx.model, tcell["final_dir"])
        else:
            dtype = ctx.cfg.train.model.dtype
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
        ctx.cells.put(ekey, ecell)
    return tcell | ecell


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def _points(summary: list[dict]) -> dict[str, dict[str, float]]:
    """task -> {shots label: mean score}."""
    return {s["task"]: {c["shots_requested"]: c["mean"] for c in s["curve"]} for s in summary}


def _drop(base: float | None, after: float | None) -> float | None:
    if base is None or after is None or base <= 0:
        return None
    return (base - after) / base * 100


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


BEST = "best"
"""The best few-shot score: the best over the shot counts > 0 (over all when the grid is only 0)."""


def heldout_metrics(summary: list[dict], base_summary: list[dict], shots: list[str]) -> dict:
    """Per task and averaged: score at each shot count and best few-shot, and the ICL drop vs the base."""
    pts, bpts = _points(summary), _points(base_summary)
    tasks = list(bpts)
    cols = [*shots, BEST]

    def value(p: dict[str, float], col: str) -> float | None:
        if col != BEST:
            return p.get(col)
        few = [v for k, v in p.items() if k != "0"] or list(p.values())
        return max(few) if few else None

    per_task = {}
    for t in tasks:
        p, b = pts.get(t, {}), bpts[t]
        per_task[t] = {
            c: {"score": value(p, c), "base": value(b, c), "drop_pct": _drop(value(b, c), value(p, c))}
            for c in cols
        }
    mean = {}
    for c in cols:
        sc = _mean(per_task[t][c]["score"] for t in tasks)
        bs = _mean(per_task[t][c]["base"] for t in tasks)
        mean[c] = {
            "score": sc,
            "base": bs,
            "drop_pct": _mean(per_task[t][c]["drop_pct"] for t in tasks),  # mean of per-task drops
            "drop_of_mean_pct": _drop(bs, sc),
        }
    return {"per_task": per_task, "mean": mean}


def target_metrics(summary: list[dict], shots: list[str]) -> dict[str, float | None]:
    pts = _points(summary)
    return {s: _mean(p.get(s) for p in pts.values()) for s in shots}


def noise_pct(base_cell: dict, shots: list[str]) -> dict:
    """Rough 95% half-width of a difference between two models, from binomial standard errors.

    Held-out: of the mean best few-shot score, in drop points (% of the base mean). Target: of the mean
    accuracy at each target shot count, in accuracy points. Treats scores as accuracies of independent
    queries (ROUGE/F1 tasks are approximated the same way) and two models as independent (paired
    evaluations on the same queries are less noisy than this)."""
    nq = base_cell["n_queries"]
    hm = heldout_metrics(base_cell["heldout"], base_cell["heldout"], shots)
    ses, bases = [], []
    for t, cols in hm["per_task"].items():
        p = cols[BEST]["base"] or 0.0
        ses.append(p * (1 - p) / max(nq.get(t, 1), 1))
        bases.append(p)
    se_mean = math.sqrt(sum(ses)) / max(len(ses), 1)
    bmean = float(np.mean(bases)) if bases else 0.0
    heldout = 1.96 * math.sqrt(2) * se_mean / bmean * 100 if bmean > 0 else None
    target = {}
    tp = _points(base_cell["target"])
    for s in dict.fromkeys(k for p in tp.values() for k in p):
        v = [(p[s], nq.get(t, 1)) for t, p in tp.items() if s in p]
        se = math.sqrt(sum(x * (1 - x) / max(n, 1) for x, n in v)) / max(len(v), 1)
        target[s] = 1.96 * math.sqrt(2) * se
    return {"heldout_drop_points": heldout, "target_points": target}


# --------------------------------------------------------------------------------------------
# The workflow
# --------------------------------------------------------------------------------------------


def icl_preserve(cfg: ICLPreserveConfig) -> Path:
    """Run (or continue) every run of the study, then write report.md, results.json/csv and plots."""
    from .experiment import Cells
    from .modeling import load_model

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", dump_yaml(cfg))
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
    model, tok = load_model(replace(cfg.train.model, adapter=None))
    ctx = Context(cfg, out, cells, model, tok, target_tasks, icl_tasks, heldout_tasks)
    t_start = time.perf_counter()
    base = _base_cell(ctx)
    log.info("base model evaluated (%.0f s into this run)", time.perf_counter() - t_start)
    results = []
    for run in runs:
        results.append(_run_cells(ctx, run))
        log.info("finished %s (%.0f s into this run)", run.name, time.perf_counter() - t_start)
    return write_report(cfg, base, results)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _f(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:+.1f}"


def shot_labels(cfg: ICLPreserveConfig, base: dict) -> list[str]:
    """The held-out shot labels, in the order of ``eval.shots``, that the base evaluation produced."""
    have = {c["shots_requested"] for s in base["heldout"] for c in s["curve"]}
    return [str(s) for s in dict.fromkeys(str(x) for x in cfg.eval.shots) if str(s) in have]


def target_labels(cfg: ICLPreserveConfig, base: dict) -> list[str]:
    have = {c["shots_requested"] for s in base["target"] for c in s["curve"]}
    return [str(s) for s in dict.fromkeys(str(x) for x in cfg.target_shots) if str(s) in have]


def summarize(cfg: ICLPreserveConfig, base: dict, results: list[dict]) -> list[dict]:
    """One row per model (base first): target accuracy, held-out scores and ICL drops, cost."""
    shots, tshots = shot_labels(cfg, base), target_labels(cfg, base)
    rows = []
    for cell in [base, *results]:
        base_run = {"kind": "base", "ratio": None, "kl": None, "name": "base", "label": cell.get("label")}
        run = cell.get("run") or base_run
        summ = cell.get("summary", {})
        rows.append(
            {
                **run,
                "target": target_metrics(cell["target"], tshots),
                "heldout": heldout_metrics(cell["heldout"], base["heldout"], shots),
                "mix": cell.get("mix"),
                "train_s": summ.get("wall_s"),
                "tokens": summ.get("tokens_processed"),
                "supervised_tokens": summ.get("supervised_tokens"),
                "tokens_per_s": summ.get("tokens_per_s"),
                # peak sampled during training (older runs: the process's ru_maxrss so far)
                "peak_rss_mb": (summ.get("memory") or {}).get("measured", {}).get("peak_rss_mb")
                or summ.get("peak_rss_mb"),
                "memory_estimate_mb": ((summ.get("memory") or {}).get("estimate") or {}).get("total_mb"),
                "steps": summ.get("steps"),
                "final_loss": summ.get("final_loss"),
                "mean_kl": summ.get("mean_kl"),
                "eval_s": cell.get("eval_s"),
            }
        )
    return rows


def claims(rows: list[dict], noise: dict) -> list[str]:
    """Seed 003's Evidence claims, each checked against the measured numbers (generated text)."""
    n_h = noise.get("heldout_drop_points")
    n_txt = f"±{n_h:.0f} points" if n_h is not None else "unknown"

    def drop(r: dict) -> float | None:
        return r["heldout"]["mean"][BEST]["drop_pct"]

    def find(kind: str, ratio: float, kl: float = 0.0) -> dict | None:
        return next((r for r in rows if r["kind"] == kind and r["ratio"] == ratio and r["kl"] == kl), None)

    def nearest(kind: str, want: float) -> dict | None:
        cands = [r for r in rows if r["kind"] == kind and r["kl"] == 0 and r["ratio"]]
        return min(cands, key=lambda r: abs(r["ratio"] - want)) if cands else None

    def sig(x: float) -> bool:
        return n_h is not None and abs(x) > n_h

    out = []
    full0, lora0 = find("full", 0.0), find("lora", 0.0)
    if full0 and drop(full0) is not None:
        d = drop(full0)
        if sig(d) and d > 0:
            verdict = "Supported: full fine-tuning on the task lowers held-out ICL beyond noise"
            if d < 31 / 2:
                verdict += ", though by less than the claimed 31%"
            elif d > 31 * 1.5:
                verdict += ", by more than the claimed 31%"
        elif sig(d):
            verdict = "Contradicted: held-out ICL *improved*"
        else:
            verdict = f"Not supported at this scale: the change is within noise ({n_txt})"
        out.append(
            f"**Full FT drops ICL by ~31%** — measured {d:+.1f}% (mean best few-shot drop over the held-out "
            f"tasks, full FT without ICL data). {verdict}."
        )
    if lora0 and drop(lora0) is not None:
        d = drop(lora0)
        text = f"**LoRA drops ICL by only ~9%** — measured {d:+.1f}%"
        if full0 and drop(full0) is not None:
            diff = drop(full0) - d
            text += f" vs {drop(full0):+.1f}% for full FT (difference {diff:+.1f} points, noise {n_txt}). "
            if sig(diff) and diff > 0:
                text += "Supported: LoRA preserves ICL better than full fine-tuning."
            elif sig(diff):
                text += "Contradicted: LoRA lost more ICL than full fine-tuning."
            else:
                text += "Not resolved at this scale: the two drops are within noise of each other."
        out.append(text)
    for kind in ("lora", "full"):
        r0, r10 = find(kind, 0.0), nearest(kind, 0.1)
        if not (r0 and r10) or drop(r10) is None:
            continue
        d, d0 = drop(r10), drop(r0)
        tk = next(iter(r10["target"]), None)
        t10, t0 = (r10["target"].get(tk), r0["target"].get(tk)) if tk else (None, None)
        nt = noise["target_points"].get(tk) if tk else None
        text = (
            f"**~10% general data keeps ICL within 5% of the base while keeping task performance** "
            f"({KIND_LABELS[kind]}, {r10['ratio']:.0%} ICL windows here) — ICL drop {d:+.1f}% with {r10['ratio']:.0%} ICL windows vs {d0:+.1f}% without; "
        )
        within = d <= 5
        text += "within 5% of the base" if within else "not within 5% of the base"
        text += f" (noise {n_txt}). "
        if t10 is not None and t0 is not None:
            dt = t10 - t0
            kept = nt is None or dt >= -nt
            text += (
                f"Target accuracy ({tk}-shot) {t10:.3f} vs {t0:.3f} without ICL data ({dt:+.3f}; noise ±{_f(nt)}): "
                + ("kept. " if kept else "lost. ")
            )
        else:
            kept = True
        helped = sig(d0 - d) and d0 > d
        if within and kept:
            text += "Supported" + (
                " (and the mix improved on no mix beyond noise)."
                if helped
                else ", but the unmixed run was also within 5% or the gain is within noise."
            )
        elif helped and kept:
            text += (
                "Partly supported: the mix preserved ICL better than no mix, but not within 5% of the base."
            )
        else:
            text += "Not supported at this scale."
        out.append(text)
    kl_rows = [r for r in rows if r["kind"] in ("lora", "full") and r["kl"]]
    for r in kl_rows:
        r0 = find(r["kind"], r["ratio"], 0.0)
        if not r0 or drop(r) is None or drop(r0) is None:
            continue
        diff = drop(r0) - drop(r)
        out.append(
            f"**KL regulariser** ({r['label']}): ICL drop {drop(r):+.1f}% vs {drop(r0):+.1f}% without KL "
            f"({'better' if diff > 0 else 'worse'} by {abs(diff):.1f} points; "
            + ("beyond noise)." if sig(diff) else f"within noise {n_txt}).")
        )
    return out


def _plot(rows: list[dict], path: Path, y, ylabel: str, title: str, hlines: dict[str, float] | None = None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    series: dict[tuple[str, float], list[dict]] = {}
    for r in rows:
        if r["kind"] in ("lora", "full"):
            series.setdefault((r["kind"], r["kl"]), []).append(r)
    for (kind, kl), rs in series.items():
        rs = sorted(rs, key=lambda r: r["ratio"])
        xs = [r["ratio"] * 100 for r in rs]
        ys = [y(r) for r in rs]
        pts = [(a, b) for a, b in zip(xs, ys) if b is not None]
        if not pts:
            continue
        label = KIND_LABELS[kind] + (f" + KL {kl:g}" if kl else "")
        ax.plot(*zip(*pts), marker="o" if not kl else "s", linestyle="-" if not kl else "--", label=label)
    for label, v in (hlines or {}).items():
        ax.axhline(v, linestyle=":", color="gray", label=label)
    ax.set_xlabel("ICL-format windows in the fine-tuning mix (%)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_save(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
    return path


def write_report(cfg: ICLPreserveConfig, base: dict, results: list[dict]) -> Path:
    from .report import write_csv

    out = Path(cfg.output_dir)
    shots, tshots = shot_labels(cfg, base), target_labels(cfg, base)
    rows = summarize(cfg, base, results)
    noise = noise_pct(base, shots)
    found = claims(rows, noise)
    cols = [*shots, BEST]

    # CSV: one row per model x set x task x shots (task 'mean' = average over tasks)
    flat = []
    for r in rows:
        head = {k: r[k] for k in ("name", "kind", "ratio", "kl")}
        for t, byc in [*r["heldout"]["per_task"].items(), ("mean", r["heldout"]["mean"])]:
            for c in cols:
                v = byc[c]
                flat.append(
                    head
                    | {"set": "heldout", "task": t, "shots": c, "score": v["score"], "base_score": v["base"]}
                    | {"icl_drop_pct": v["drop_pct"]}
                )
        for s in tshots:
            flat.append(head | {"set": "target", "task": "mean", "shots": s, "score": r["target"][s]})
    write_csv(
        flat,
        out / "results.csv",
        ["name", "kind", "ratio", "kl", "set", "task", "shots", "score", "base_score", "icl_drop_pct"],
    )
    atomic_write_json(
        out / "results.json",
        {
            "config": to_dict(cfg),
            "rows": rows,
            "noise": noise,
            "claims": found,
            "base": base,
            "runs": results,
        },
    )
    runs = [r for r in rows if r["kind"] != "base"]
    base_row = rows[0]
    base_tk = tshots[0] if tshots else None
    _plot(
        runs,
        out / "plots" / "icl_drop_vs_mix.png",
        lambda r: r["heldout"]["mean"][BEST]["drop_pct"],
        "ICL drop vs base (%, best few-shot)",
        "Held-out ICL drop (mean over tasks) vs ICL data in the mix",
        {"base (no drop)": 0.0, "seed 003: within 5%": 5.0},
    )
    _plot(
        runs,
        out / "plots" / "target_accuracy_vs_mix.png",
        lambda r: r["target"].get(base_tk) if base_tk else None,
        f"target accuracy ({base_tk}-shot)",
        "Target-task accuracy vs ICL data in the mix",
        {"base model": base_row["target"][base_tk]}
        if base_tk and base_row["target"].get(base_tk) is not None
        else None,
    )

    icl_names = sorted(
        {t for r in results for t in ((r.get("mix") or {}).get("icl", {}).get("tasks") or [])}
    ) or [t.name for t in load_tasks(cfg.icl_tasks)]
    target_noise = ", ".join(f"{_f(v)} at {k} shots" for k, v in noise["target_points"].items())
    target_names = ", ".join(sorted({s["task"] for s in base["target"]}))
    heldout_names = ", ".join(dict.fromkeys(s["task"] for s in base["heldout"]))
    tc = cfg.train
    lines = [
        f"# ICL preservation under task fine-tuning: {out.name}",
        "",
        f"Base model `{tc.model.name_or_path}`. Target task: {target_names}, fine-tuned zero-shot (mask last target) "
        f"on its `{tc.data.train_split}` split; ICL data mixed in: many-shot sequences (shots={cfg.icl_shots}, "
        f"mask all targets) of {len(icl_names)} tasks ({', '.join(icl_names)}); context {tc.data.max_length} tokens. "
        f"LoRA: r={tc.lora.r} on {', '.join(tc.lora.target_modules)}, {tc.model.dtype} base weights; full FT: "
        f"float32 weights, evaluated in {tc.model.dtype} like the others. Shared optimizer: lr {tc.optim.lr:g}, "
        f"{tc.optim.warmup_steps} warm-up steps, cosine; the same number of windows and optimizer steps in every run.",
        "",
        f"Held-out ICL tasks (unrelated to the target and to the ICL data): {heldout_names}; shots "
        f"{', '.join(shots)}; {cfg.eval.max_queries} queries per task, seeds {cfg.eval.seeds}, context "
        f"{cfg.eval.max_length}. Target accuracy on its `{cfg.eval.eval_split}` split at {', '.join(tshots)} shots "
        f"(demonstrations from `{cfg.eval.demo_split}`).",
        "",
        "**Mix ratio** = fraction of training *windows* that are ICL-format; the total window count is the same "
        "in every run (ICL windows replace target windows). **ICL drop** = (base − after) / base × 100 per held-out "
        "task, averaged over tasks (tasks where the base scores 0 are left out); positive = ICL got worse. "
        "**best** = best score over the shot counts > 0 (the best few-shot score).",
        "",
        "## Main table (seed 003 Evidence style)",
        "",
        _main_table(rows, shots, tshots),
        "",
        f"Noise: a difference of about {_f(noise['heldout_drop_points'], '.0f')} drop points between two runs "
        f"(best few-shot) and {target_noise} in target accuracy is within the rough 95% binomial interval "
        "(`noise_pct`: independent queries, scores treated as accuracies). One seed and few queries per task: "
        "read differences smaller than that as no difference.",
        "",
        "## What seed 003's claims look like here",
        "",
        *[f"- {c}" for c in found],
        "",
        "![ICL drop vs mix ratio](plots/icl_drop_vs_mix.png)",
        "",
        "![Target accuracy vs mix ratio](plots/target_accuracy_vs_mix.png)",
        "",
        "## ICL drop per held-out task (%, best few-shot / at each shot count)",
        "",
        _per_task_table(rows, shots),
        "",
        "## Training mix and cost",
        "",
        _cost_table(rows),
        "",
        "Memory: the guard's estimate made before training (`manyicl.memory`) and the process's peak RSS sampled "
        "during training; the process also holds the base model and the evaluation state of earlier runs. Where no "
        "estimate is shown the run predates the guard and its peak is the process's `ru_maxrss` so far.",
        "",
    ]
    return atomic_write_text(out / "report.md", "\n".join(lines))


def _main_table(rows: list[dict], shots: list[str], tshots: list[str]) -> str:
    head = (
        ["run"]
        + [f"target acc {s}-shot" for s in tshots]
        + [f"held-out {s}" for s in shots]
        + ["held-out best"]
        + [f"ICL drop % {s}" for s in shots]
        + ["**ICL drop % best**"]
    )
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in rows:
        m = r["heldout"]["mean"]
        cells = (
            [r["label"]]
            + [_f(r["target"].get(s)) for s in tshots]
            + [_f(m[s]["score"]) for s in shots]
            + [_f(m[BEST]["score"])]
            + [("-" if r["kind"] == "base" else _pct(m[s]["drop_pct"])) for s in shots]
            + [("-" if r["kind"] == "base" else f"**{_pct(m[BEST]['drop_pct'])}**")]
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _per_task_table(rows: list[dict], shots: list[str]) -> str:
    tasks = list(rows[0]["heldout"]["per_task"])
    lines = [
        "| run | " + " | ".join(tasks) + " |",
        "|---|" + "---|" * len(tasks),
    ]
    base = rows[0]["heldout"]["per_task"]
    lines.append(
        "| base score (best; "
        + " / ".join(shots)
        + ") | "
        + " | ".join(
            f"{_f(base[t][BEST]['base'])}; " + " / ".join(_f(base[t][s]["base"]) for s in shots)
            for t in tasks
        )
        + " |"
    )
    for r in rows[1:]:
        pt = r["heldout"]["per_task"]
        lines.append(
            f"| {r['label']} | "
            + " | ".join(
                f"**{_pct(pt[t][BEST]['drop_pct'])}**; "
                + " / ".join(_pct(pt[t][s]["drop_pct"]) for s in shots)
                for t in tasks
            )
            + " |"
        )
    return "\n".join(lines)


def _cost_table(rows: list[dict]) -> str:
    lines = [
        "| run | windows (target + ICL) | ICL share of tokens / supervised tokens | steps | tokens | supervised tokens | train s | tokens/s | memory estimate / peak RSS MB | final loss | mean KL | eval s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mix = r.get("mix")
        if not mix:
            lines.append(
                f"| {r['label']} | - | - | - | - | - | - | - | - | - | - | {_f(r['eval_s'], '.0f')} |"
            )
            continue
        lines.append(
            f"| {r['label']} | {mix['target']['windows']} + {mix['icl']['windows']} | "
            f"{mix['icl_tokens_fraction']:.1%} / {mix['icl_supervised_tokens_fraction']:.1%} | {r['steps']} | "
            f"{r['tokens']:,} | {r['supervised_tokens']:,} | {_f(r['train_s'], '.0f')} | {_f(r['tokens_per_s'], '.0f')} | "
            f"{_f(r['memory_estimate_mb'], '.0f')} / {_f(r['peak_rss_mb'], '.0f')} | {_f(r['final_loss'], '.3f')} | {_f(r['mean_kl'], '.4f')} | {_f(r['eval_s'], '.0f')} |"
        )
    return "\n".join(lines)
