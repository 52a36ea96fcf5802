"""Reports: results.json / results.csv / report.md and shot-curve plots (paper Table 4, Figure 5)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from .fileio import atomic_save, atomic_write_text


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def best_max_table(summary: list[dict], models: list[str] | None = None, markdown: bool = True) -> str:
    """Rows = models, columns = tasks, cells = 'best / at max shots'; the best model per task in bold."""
    tasks = list(dict.fromkeys(s["task"] for s in summary))
    models = models or list(dict.fromkeys(s["model"] for s in summary))
    cell = {(s["model"], s["task"]): s for s in summary}
    top = {}
    for t in tasks:
        vals = [cell[(m, t)]["best"] for m in models if (m, t) in cell]
        top[t] = max(vals) if vals else None
    if markdown:
        head = "| model | " + " | ".join(tasks) + " |"
        sep = "|---|" + "---|" * len(tasks)
        lines = [head, sep]
        for m in models:
            cells = []
            for t in tasks:
                s = cell.get((m, t))
                if s is None:
                    cells.append("-")
                    continue
                txt = f"{_fmt(s['best'])} / {_fmt(s['at_max'])}"
                cells.append(f"**{txt}**" if len(models) > 1 and s["best"] == top[t] else txt)
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        return "\n".join(lines)
    width = max(12, *(len(t) for t in tasks)) if tasks else 12
    lines = [f"{'model':<16}" + "".join(f"{t[:width]:>{width + 2}}" for t in tasks)]
    for m in models:
        row = f"{m[:16]:<16}"
        for t in tasks:
            s = cell.get((m, t))
            row += f"{(_fmt(s['best']) + '/' + _fmt(s['at_max'])) if s else '-':>{width + 2}}"
        lines.append(row)
    return "\n".join(lines)


def curve_table(summary: list[dict], task: str) -> str:
    """Markdown table of one task's curve: shots x models, mean +- std over seeds."""
    rows = [s for s in summary if s["task"] == task]
    models = [s["model"] for s in rows]
    labels = list(dict.fromkeys(c["shots_requested"] for s in rows for c in s["curve"]))
    by = {(s["model"], c["shots_requested"]): c for s in rows for c in s["curve"]}
    lines = ["| shots | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for lab in labels:
        cells = []
        for m in models:
            c = by.get((m, lab))
            cells.append(
                "-"
                if c is None
                else f"{c['mean']:.3f} ± {c['std']:.3f}" + (f" (k={c['shots']:.0f})" if lab == "max" else "")
            )
        lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(summary: list[dict], task: str, path: Path, title: str | None = None) -> Path:
    """Score vs shots (symlog x so 0 shots shows), one line per model, +-std band, star at max shots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [s for s in summary if s["task"] == task]
    fig, ax = plt.subplots(figsize=(6, 4))
    for s in rows:
        pts = [c for c in s["curve"] if c["shots_requested"] != "max"]
        mx = next((c for c in s["curve"] if c["shots_requested"] == "max"), None)
        if mx and all(abs(c["shots"] - mx["shots"]) > 1e-9 for c in pts):
            pts = sorted(pts + [mx], key=lambda c: c["shots"])
        xs = [c["shots"] for c in pts]
        ys = [c["mean"] for c in pts]
        sd = [c["std"] for c in pts]
        (line,) = ax.plot(xs, ys, marker="o", label=s["model"])
        ax.fill_between(
            xs,
            [y - d for y, d in zip(ys, sd)],
            [y + d for y, d in zip(ys, sd)],
            alpha=0.15,
            color=line.get_color(),
        )
        if mx:
            ax.plot([mx["shots"]], [mx["mean"]], marker="*", markersize=13, color=line.get_color())
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("shots (in-context examples)")
    metric = rows[0]["metric"] if rows else ""
    ax.set_ylabel(metric)
    ax.set_title(title or f"{task} ({rows[0]['category'] if rows else ''})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_save(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
    return path


def write_csv(rows: list[dict], path: Path, fields: list[str]) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return atomic_write_text(path, buf.getvalue())


def write_eval_report(res, cfg) -> Path:
    """results.json, results.csv (one row per model x task x shots, aggregated over seeds), report.md, plots."""
    from .evaluate import save_results_json

    out = res.output_dir
    save_results_json(res, cfg)
    flat = []
    for s in res.summary:
        for c in s["curve"]:
            flat.append({k: s[k] for k in ("model", "task", "family", "category", "metric")} | c)
    write_csv(
        flat,
        out / "results.csv",
        ["model", "task", "family", "category", "metric", "shots_requested", "shots", "mean", "std", "seeds"],
    )
    tasks = list(dict.fromkeys(s["task"] for s in res.summary))
    plots = {}
    if cfg.plots:
        for t in tasks:
            plots[t] = plot_curves(res.summary, t, out / "plots" / f"{t}.png")
    lines = [
        "# manyicl evaluation report",
        "",
        f"Model: `{cfg.model.name_or_path}`; compared: {', '.join(dict.fromkeys(s['model'] for s in res.summary))}. "
        f"Context {cfg.max_length} tokens, seeds {cfg.seeds}, up to {cfg.max_queries} queries per task, "
        f"scoring normalisation: {cfg.scoring.normalize}.",
        "",
        "## Best / at-max-shots score per task (paper Table 4 style)",
        "",
        "Each cell is *best score over the shot grid / score with the most shots that fit*; bold marks the best model.",
        "",
        best_max_table(res.summary),
        "",
        "## Shot curves",
        "",
    ]
    for t in tasks:
        s0 = next(s for s in res.summary if s["task"] == t)
        lines += [f"### {t} ({s0['category']}, {s0['metric']})", ""]
        if t in plots:
            lines += [f"![{t}](plots/{t}.png)", ""]
        lines += [curve_table(res.summary, t), ""]
    if res.cache_timing:
        lines += [
            "## Prompt caches on disk",
            "",
            "| model | task | prompt tokens | recompute s | load s | speed-up | file MB |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in res.cache_timing:
            lines.append(
                f"| {c['model']} | {c['task']} | {c['prompt_tokens']} | {c['recompute_s']:.3f} | {c['load_s']:.3f} | "
                f"{(c['speedup'] or 0):.1f}x | {c['file_mb']:.1f} |"
            )
        lines.append("")
    prefill = sum(r["prefill_s"] for r in res.rows)
    query = sum(r["query_s"] for r in res.rows)
    nq = sum(r["n_queries"] for r in res.rows)
    lines += [
        "## Cost",
        "",
        f"Prompt prefill (once per model x task x seed): {prefill:.1f} s. Query scoring: {query:.1f} s for {nq} "
        f"query evaluations ({1000 * query / max(nq, 1):.1f} ms each).",
        "",
    ]
    return atomic_write_text(out / "report.md", "\n".join(lines))
