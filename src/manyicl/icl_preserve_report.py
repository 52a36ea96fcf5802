"""The report of ``manyicl icl-preserve``: metrics from the evaluation cells, seed 003's claims checked
against them, results.json/csv, plots and report.md. Reads finished cells (or the results.json written
from them) only; loads no model or task data and runs no workflow."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .config import ICLPreserveConfig, load_config, to_dict
from .errors import ConfigError
from .fileio import atomic_save, atomic_write_json, atomic_write_text, exclusive_lock

KIND_LABELS = {"lora": "LoRA", "full": "Full FT"}
"""Finetune kind -> its name in tables and plots."""


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


def write_report(
    cfg: ICLPreserveConfig,
    base: dict,
    results: list[dict],
    icl_tasks: list[str] | None,
    recorded_config: dict | None = None,
) -> Path:
    """Write report.md, results.json/csv and the plots of a study: its settings, the base model's cell,
    one merged cell per run, and ``icl_tasks``, the names of the ICL-format tasks the workflow loaded
    (recorded in results.json; None: not known). The report names the tasks the runs actually mixed in,
    and ``icl_tasks`` when no run mixed any. results.json records ``recorded_config`` when given (a
    rewrite from an earlier results.json keeps its settings as they were, not completed with defaults
    added since), else ``cfg``."""
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
            "config": recorded_config if recorded_config is not None else to_dict(cfg),
            "rows": rows,
            "noise": noise,
            "claims": found,
            "base": base,
            "runs": results,
        }
        | ({"icl_tasks": list(icl_tasks)} if icl_tasks is not None else {}),
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
    ) or list(icl_tasks or [])
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


def report_from_results(output_dir: str | Path) -> Path:
    """Rewrite a finished study's report.md, results.json/csv and plots from its ``results.json`` alone
    (the settings, base cell, runs and ICL task names recorded there): no model, task data or cells
    needed (``manyicl icl-preserve CONFIG --report``). Holds the folder's lock while it writes."""
    out = Path(output_dir)
    path = out / "results.json"
    if not path.is_file():
        raise ConfigError.single(
            "output_dir", f"{out} has no results.json: run the study first (without --report)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError.single(
            str(path), f"not readable JSON ({e}): rerun the study to rewrite it"
        ) from None
    missing = [k for k in ("config", "base", "runs") if not isinstance(data, dict) or k not in data]
    if missing:
        raise ConfigError.single(
            str(path),
            f"not an icl-preserve results.json (no {', '.join(missing)}): rerun the study to rewrite it",
        )
    cfg = load_config(ICLPreserveConfig, data=data["config"] | {"output_dir": str(out)})
    with exclusive_lock(out, "icl-preserve report"):
        return write_report(
            cfg, data["base"], data["runs"], data.get("icl_tasks"), recorded_config=data["config"]
        )


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
        per_task = r["heldout"]["per_task"]
        lines.append(
            f"| {r['label']} | "
            + " | ".join(
                f"**{_pct(per_task[t][BEST]['drop_pct'])}**; "
                + " / ".join(_pct(per_task[t][s]["drop_pct"]) for s in shots)
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
