"""Reports: results.json / results.csv / report.md and shot-curve plots (paper Table 4, Figure 5)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from .fileio import atomic_save, atomic_write_text


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def fmt_ci(mean: float | None, lo: float | None, hi: float | None, digits: int = 3) -> str:
    """'0.512 [0.414, 0.609]': a score with its 95% interval."""
    if mean is None:
        return "-"
    if lo is None or hi is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{lo:.{digits - 1}f}, {hi:.{digits - 1}f}]"


def best_max_table(
    summary: list[dict],
    models: list[str] | None = None,
    markdown: bool = True,
    labels: dict[str, str] | None = None,
    mean_column: bool = False,
) -> str:
    """Rows = models, columns = tasks, cells = 'best (shot count chosen on dev, scored on test) / at max
    shots'. No winner is marked: whether a difference is real is for the paired tests to say."""
    tasks = list(dict.fromkeys(s["task"] for s in summary))
    models = models or list(dict.fromkeys(s["model"] for s in summary))
    cell = {(s["model"], s["task"]): s for s in summary}
    labels = labels or {}
    if markdown:
        head = "| model | " + " | ".join(tasks) + (" | mean |" if mean_column else " |")
        sep = "|---|" + "---|" * (len(tasks) + int(mean_column))
        lines = [head, sep]
        for m in models:
            cells = []
            for t in tasks:
                s = cell.get((m, t))
                cells.append("-" if s is None else f"{_fmt(s['best'])} / {_fmt(s['at_max'])}")
            if mean_column:
                got = [cell[(m, t)] for t in tasks if (m, t) in cell]
                ok = len(got) == len(tasks) and all(g["best"] is not None for g in got)
                cells.append(
                    f"{_fmt(sum(g['best'] for g in got) / len(got))} / {_fmt(sum(g['at_max'] for g in got) / len(got))}"
                    if ok
                    else "-"
                )
            lines.append(f"| {labels.get(m, m)} | " + " | ".join(cells) + " |")
        return "\n".join(lines)
    width = max(12, *(len(t) for t in tasks)) if tasks else 12
    mwidth = max(16, *(len(m) for m in models)) if models else 16
    lines = [f"{'model':<{mwidth}}" + "".join(f"{t[:width]:>{width + 2}}" for t in tasks)]
    for m in models:
        row = f"{m:<{mwidth}}"
        for t in tasks:
            s = cell.get((m, t))
            row += f"{(_fmt(s['best']) + '/' + _fmt(s['at_max'])) if s else '-':>{width + 2}}"
        lines.append(row)
    return "\n".join(lines)


def summary_table(summary: list[dict], labels: dict[str, str] | None = None) -> str:
    """One row per task x model: queries, majority-class share, the dev-chosen shot count with its test
    score, and the score at max shots, each with its 95% interval. Without dev queries no shot count is
    chosen, and the 0-shot score takes those columns."""
    from .eval_summary import zero_shot_point

    labels = labels or {}
    has_best = any(s.get("best") is not None for s in summary)
    mid = "k (dev) | best: test at k [95% CI]" if has_best else "at 0 [95% CI]"
    lines = [
        f"| task | model | n | majority | {mid} | max k | at max [95% CI] |",
        "|---|---|---|---|---|---|---|" + ("---|" if has_best else ""),
    ]
    for s in summary:
        if has_best:
            k = "-" if s.get("best_shots") is None else f"{s['best_shots']:.0f}"
            cells = f"{k} | {fmt_ci(s.get('best'), s.get('best_lo'), s.get('best_hi'))}"
        else:
            z = zero_shot_point(s)
            cells = fmt_ci(z["mean"], z.get("lo"), z.get("hi")) if z else "-"
        lines.append(
            f"| {s['task']} | {labels.get(s['model'], s['model'])} | {s.get('n', '-')} | {_fmt(s.get('majority'))} | "
            f"{cells} | {s['max_shots']:.0f} | {fmt_ci(s['at_max'], s.get('at_max_lo'), s.get('at_max_hi'))} |"
        )
    return "\n".join(lines)


def _point_text(c: dict) -> str:
    txt = fmt_ci(c["mean"], c.get("lo"), c.get("hi"))
    if c.get("std") is not None and c.get("seeds", 1) >= 2:
        txt += f" ±{c['std']:.3f} sd"
    return txt


def _max_k(c: dict) -> str:
    """How many shots "max" was; seeds' prompts hold different counts, so say it is their mean."""
    return f" (k={c['shots']:.0f}" + (", mean over seeds)" if c.get("seeds", 1) >= 2 else ")")


def curve_table(summary: list[dict], task: str) -> str:
    """Markdown table of one task's curve: shots x models; mean [95% interval over queries], and the
    standard deviation over demonstration seeds where there are at least two."""
    rows = [s for s in summary if s["task"] == task]
    models = [s["model"] for s in rows]
    labels = list(dict.fromkeys(c["shots_requested"] for s in rows for c in s["curve"]))
    by = {(s["model"], c["shots_requested"]): c for s in rows for c in s["curve"]}
    lines = ["| shots | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for lab in labels:
        cells = []
        for m in models:
            c = by.get((m, lab))
            cells.append("-" if c is None else _point_text(c) + (_max_k(c) if lab == "max" else ""))
        lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


_PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
]  # fmt: skip


def model_color(name: str, order: list[str] | None = None) -> str:
    """A model keeps its colour in every plot of a report (by its place in ``order``, else its name)."""
    import zlib

    if order and name in order:
        return _PALETTE[order.index(name) % len(_PALETTE)]
    return _PALETTE[zlib.crc32(name.encode()) % len(_PALETTE)]


def plot_curves(
    summary: list[dict],
    task: str,
    path: Path,
    title: str | None = None,
    hlines: dict[str, float] | None = None,
    model_order: list[str] | None = None,
) -> Path:
    """Score vs shots, one line per model with its 95% band; ticks at the evaluated shot counts; the
    point with the most shots that fit is a star (it may sit between grid points); the majority-class
    share is a grey dashed line; ``hlines`` adds reference levels (e.g. task-level fine-tuning)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [s for s in summary if s["task"] == task]
    order = model_order or [s["model"] for s in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ticks: set[float] = set()
    for i, s in enumerate(rows):
        pts = sorted(s["curve"], key=lambda c: c["shots"])
        mx = next((c for c in s["curve"] if c["shots_requested"] == "max"), None)
        xs = [c["shots"] for c in pts]
        ys = [c["mean"] for c in pts]
        ticks |= set(xs)
        color = model_color(s["model"], order)
        # lines that coincide stay visible: a thin offset-free line on top of a wider one
        ax.plot(xs, ys, marker="o", label=s["model"], color=color, linewidth=2.4 - 0.3 * (i % 4), alpha=0.9)
        if all(c.get("lo") is not None for c in pts):
            ax.fill_between(xs, [c["lo"] for c in pts], [c["hi"] for c in pts], alpha=0.12, color=color)
        if mx:
            ax.plot([mx["shots"]], [mx["mean"]], marker="*", markersize=13, color=color, linestyle="none")
    if rows and rows[0].get("majority") is not None:
        ax.axhline(rows[0]["majority"], linestyle="--", color="grey", linewidth=1, label="majority class")
    for label, y in (hlines or {}).items():
        ax.axhline(y, linestyle=":", color="red", label=label)
    ax.plot([], [], marker="*", markersize=11, color="black", linestyle="none", label="most shots that fit")
    ax.set_xscale("symlog", linthresh=1)
    tick_list = sorted(ticks)
    ax.set_xticks(tick_list)
    ax.set_xticklabels([f"{t:.0f}" for t in tick_list], fontsize=8)
    ax.minorticks_off()
    ax.set_xlim(left=-0.2)
    ax.set_xlabel("shots (in-context examples)")
    metric = rows[0]["metric"] if rows else ""
    ax.set_ylabel(f"{metric} (95% band)")
    ax.set_title(title or f"{task} ({rows[0]['category'] if rows else ''})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best", framealpha=0.6)
    fig.tight_layout()
    atomic_save(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
    return path


def _ppl_interval(r: dict) -> str:
    """' [lo, hi]' of a perplexity from its windows' NLLs (windows of equal length, so exp(mean NLL) is the
    perplexity), or '' where fewer than 2 windows were kept."""
    import numpy as np

    from .stats import bootstrap_ci

    nll = r.get("window_nll") or []
    if len(nll) < 2:
        return ""
    lo, hi = bootstrap_ci(np.asarray(nll, dtype=float))
    return f" [{np.exp(lo):.2f}, {np.exp(hi):.2f}]"


def perplexity_table(rows: list[dict], baseline: str | None = None) -> str:
    """Paper Table 5 layout: models x context lengths, with the change against the baseline model."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    lengths = sorted({r["context_length"] for r in rows}, reverse=True)
    baseline = baseline or models[0]
    cell = {(r["model"], r["context_length"]): r for r in rows}
    lines = [
        "| model | " + " | ".join(str(L) for L in lengths) + " |",
        "|---|" + "---|" * len(lengths),
    ]
    any_interval = False
    for m in models:
        cells = []
        for L in lengths:
            r = cell.get((m, L))
            if r is None:
                cells.append("-")
                continue
            interval = _ppl_interval(r)
            any_interval |= bool(interval)
            txt = f"{r['perplexity']:.2f}" + interval
            b = cell.get((baseline, L))
            if m != baseline and b:
                txt += f" ({r['perplexity'] - b['perplexity']:+.2f})"
            cells.append(txt)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    bpb = [
        f"| {m} | "
        + " | ".join(f"{cell[(m, L)]['bits_per_byte']:.3f}" if (m, L) in cell else "-" for L in lengths)
        + " |"
        for m in models
    ]
    return (
        "Perplexity by context length (change vs "
        + baseline
        + (
            "; [95% interval]: bootstrap over the evaluation windows of the mean NLL, exponentiated — windows of "
            "one book are not independent, so it is a lower bound on the uncertainty"
            if any_interval
            else ""
        )
        + ")\n\n"
        + "\n".join(lines)
        + "\n\nBits per byte\n\n"
        + "\n".join(lines[:2] + bpb)
        + "\n"
    )


def write_csv(rows: list[dict], path: Path, fields: list[str]) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return atomic_write_text(path, buf.getvalue())


CURVE_FIELDS = [
    "shots_requested", "shots", "n", "mean", "lo", "hi", "ci", "std", "seeds", "dev_mean",
]  # fmt: skip


def write_eval_report(res, cfg) -> Path:
    """results.csv (one row per model x task x shots: n, mean, 95% interval, seeds), report.md, plots.
    results.json and predictions.jsonl are written by the workflow (``res`` holds what they hold)."""
    out = res.output_dir
    flat = []
    for s in res.summary:
        for c in s["curve"]:
            flat.append({k: s[k] for k in ("model", "task", "family", "category", "metric")} | c)
    write_csv(flat, out / "results.csv", ["model", "task", "family", "category", "metric", *CURVE_FIELDS])
    tasks = list(dict.fromkeys(s["task"] for s in res.summary))
    models = list(dict.fromkeys(s["model"] for s in res.summary))
    plots = {}
    if cfg.plots:
        for t in tasks:
            plots[t] = plot_curves(res.summary, t, out / "plots" / f"{_safe(t)}.png", model_order=models)
    seeds = list(cfg.seeds)
    lines = [
        "# manyicl evaluation report",
        "",
        f"Model: `{cfg.model.name_or_path}`; compared: {', '.join(models)}. Context {cfg.max_length} tokens; "
        f"demonstration seeds {seeds} ({'fresh demonstrations per query' if cfg.demos == 'per_query' else 'one balanced draw in random order per seed and shot count, its prompt cached'}); "
        f"up to {cfg.max_queries} test and {cfg.dev_queries} dev queries per task; scoring in "
        f"{getattr(res, 'scoring_dtype', '') or cfg.model.dtype}, option normalisation `{cfg.scoring.normalize}`.",
        "",
        "Intervals are 95%: Wilson for accuracy with one seed, otherwise a bootstrap over queries (each "
        "query's mean over seeds). *± sd* is the spread over demonstration seeds, shown only with 2 or more. "
        "0 shots has no demonstrations and is scored once. "
        + (
            "*Best* is the test score at the shot count chosen on the dev queries, never a maximum over "
            "test points."
            if cfg.dev_queries
            else "No dev queries (`dev_queries: 0`), so no best shot count is chosen."
        ),
        "",
        "## Per task",
        "",
        summary_table(res.summary),
        "",
    ]
    notes = _task_notes(getattr(res, "tasks", []), cfg)
    if notes:
        lines += ["## Data notes", "", *notes, ""]
    lines += ["## Shot curves", ""]
    for t in tasks:
        s0 = next(s for s in res.summary if s["task"] == t)
        lines += [f"### {t} ({s0['category']}, {s0['metric']})", ""]
        if t in plots:
            lines += [f"![{t}](plots/{_safe(t)}.png)", ""]
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
    nq = sum(r["n_queries"] + r.get("n_dev", 0) for r in res.rows)
    lines += [
        "## Cost",
        "",
        f"Prompt prefill (one per model x task x seed x shot count{', and per query' if cfg.demos == 'per_query' else ''}): "
        f"{prefill:.1f} s. Query scoring: {query:.1f} s for {nq} query evaluations ({1000 * query / max(nq, 1):.1f} ms each).",
        "",
    ]
    mem = res.memory or {}
    if mem.get("estimate") and mem.get("measured"):
        e, m = mem["estimate"], mem["measured"]
        cuda = f", CUDA peak {m['cuda_peak_mb']:,.0f} MB" if m.get("cuda_peak_mb") is not None else ""
        lines += [
            f"Memory: estimated {e['total_mb']:,.0f} MB before the run (budget {e['budget_mb']:,.0f} MB); "
            f"measured peak RSS {m['peak_rss_mb']:,.0f} MB{cuda}.",
            "",
        ]
    lines += [
        "Every query outcome is in `predictions.jsonl` (model, task, seed, shots, split, query, gold, prediction, score, correct).",
        "",
    ]
    return atomic_write_text(out / "report.md", "\n".join(lines))


def _task_notes(tasks: list[dict], cfg) -> list[str]:
    """Lines on what the data did: duplicates removed, queries skipped, shot counts that did not fit."""
    notes = []
    for t in tasks:
        d = t.get("duplicates") or {}
        if d.get("inputs"):
            notes.append(
                f"- {t['task']}: {d['inputs']} input(s) occur in both the demo and the eval split; dropped "
                f"{d['queries_dropped']} eval and {d['demos_dropped']} demo example(s)."
            )
        if t.get("skipped_queries"):
            notes.append(
                f"- {t['task']}: {t['skipped_queries']} quer(ies) skipped as too long (on_overlong=skip)."
            )
        if t.get("truncated_queries"):
            notes.append(
                f"- {t['task']}: {t['truncated_queries']} quer(ies) truncated from the left to fit "
                "(on_overlong=truncate_input): scored on shortened inputs."
            )
        if t.get("dev_split") and t.get("dev_split") != cfg.eval_split:
            notes.append(
                f"- {t['task']}: dev queries held out of the '{t['dev_split']}' split (eval split too small)."
            )
    return notes


# --------------------------------------------------------------------------------------------
# Experiment report
# --------------------------------------------------------------------------------------------


def _safe(name: str) -> str:
    return name.replace(":", "_").replace("/", "_")


def _cost_table(train_cells: dict, tl_cells: dict, labels: dict) -> str:
    lines = [
        "| method | sequences | windows | tokens processed | supervised tokens | supervised examples | mask-last equivalent | steps | wall s | tokens/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def row(name: str, cells: list[dict]) -> None:
        cells = [c for c in cells if c]
        if not cells:
            return
        b = [c["summary"]["build"] for c in cells]
        tok = sum(c["summary"]["tokens_processed"] for c in cells)
        wall = sum(c["summary"]["wall_s"] for c in cells)
        lines.append(
            f"| {name} | {sum(x['sequences'] for x in b):,} | {sum(x['windows'] for x in b):,} | {tok:,} | "
            f"{sum(c['summary']['supervised_tokens'] for c in cells):,} | {sum(x['supervised_examples'] for x in b):,} | "
            f"{sum(x['mask_last_equivalent_tokens'] for x in b):,} | {sum(c['summary']['steps'] for c in cells):,} | "
            f"{wall:.0f} | {tok / max(wall, 1e-9):.0f} |"
        )

    for m, c in train_cells.items():
        row(labels.get(m, m), [c])
    if tl_cells:
        row(labels.get("task_level", "task_level") + f" ({len(tl_cells)} adapters)", list(tl_cells.values()))
    return "\n".join(lines)
