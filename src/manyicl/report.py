"""Reports: results.json / results.csv / report.md and shot-curve plots (paper Table 4, Figure 5)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from .fileio import atomic_save, atomic_write_text


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def best_max_table(
    summary: list[dict],
    models: list[str] | None = None,
    markdown: bool = True,
    bold_among: list[str] | None = None,
    labels: dict[str, str] | None = None,
    mean_column: bool = False,
) -> str:
    """Rows = models, columns = tasks, cells = 'best / at max shots'; the best model per task in bold
    (among ``bold_among`` when given, e.g. only the meta-learning methods)."""
    tasks = list(dict.fromkeys(s["task"] for s in summary))
    models = models or list(dict.fromkeys(s["model"] for s in summary))
    cell = {(s["model"], s["task"]): s for s in summary}
    contenders = [m for m in models if bold_among is None or m in bold_among]
    top = {}
    for t in tasks:
        vals = [cell[(m, t)]["best"] for m in contenders if (m, t) in cell]
        # bold marks a winner; when every contender ties there is none
        top[t] = max(vals) if vals and len(set(vals)) > 1 else None
    labels = labels or {}
    if markdown:
        head = "| model | " + " | ".join(tasks) + (" | mean |" if mean_column else " |")
        sep = "|---|" + "---|" * (len(tasks) + int(mean_column))
        lines = [head, sep]
        for m in models:
            cells = []
            for t in tasks:
                s = cell.get((m, t))
                if s is None:
                    cells.append("-")
                    continue
                txt = f"{_fmt(s['best'])} / {_fmt(s['at_max'])}"
                bold = len(contenders) > 1 and m in contenders and s["best"] == top[t]
                cells.append(f"**{txt}**" if bold else txt)
            if mean_column:
                got = [cell[(m, t)] for t in tasks if (m, t) in cell]
                cells.append(
                    f"{_fmt(sum(g['best'] for g in got) / len(got))} / {_fmt(sum(g['at_max'] for g in got) / len(got))}"
                    if len(got) == len(tasks)
                    else "-"
                )
            lines.append(f"| {labels.get(m, m)} | " + " | ".join(cells) + " |")
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


def plot_curves(
    summary: list[dict],
    task: str,
    path: Path,
    title: str | None = None,
    hlines: dict[str, float] | None = None,
) -> Path:
    """Score vs shots (symlog x so 0 shots shows), one line per model, +-std band, star at max shots;
    ``hlines`` draws reference levels (e.g. task-level fine-tuning, the paper's dotted red line)."""
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
    for label, y in (hlines or {}).items():
        ax.axhline(y, linestyle=":", color="red", label=label)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(left=-0.2)
    ax.set_xlabel("shots (in-context examples)")
    metric = rows[0]["metric"] if rows else ""
    ax.set_ylabel(metric)
    ax.set_title(title or f"{task} ({rows[0]['category'] if rows else ''})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best", framealpha=0.6)
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
    mem = res.memory or {}
    if mem.get("estimate") and mem.get("measured"):
        e, m = mem["estimate"], mem["measured"]
        cuda = f", CUDA peak {m['cuda_peak_mb']:,.0f} MB" if m.get("cuda_peak_mb") is not None else ""
        lines += [
            f"Memory: estimated {e['total_mb']:,.0f} MB before the run (budget {e['budget_mb']:,.0f} MB); "
            f"measured peak RSS {m['peak_rss_mb']:,.0f} MB{cuda}.",
            "",
        ]
    return atomic_write_text(out / "report.md", "\n".join(lines))


# --------------------------------------------------------------------------------------------
# Experiment report
# --------------------------------------------------------------------------------------------


def _curve_point(summary: dict, shots_label: str) -> dict | None:
    return next((c for c in summary["curve"] if c["shots_requested"] == shots_label), None)


def write_experiment_report(cfg, plan, cells) -> Path:
    """report.md, results.json, results.csv and plots for an experiment (paper Tables 4, 5, 7, 10, 11; Figure 5)."""
    from .experiment import LABELS, META
    from .fileio import atomic_write_json
    from .perplexity import perplexity_table

    out = Path(cfg.output_dir)
    summary, rows = [], []
    for m in plan.methods:
        for t in plan.held_out:
            c = cells.get(f"eval/{m}/{t}")
            if c:
                summary += c["summary"]
                rows += c["rows"]
    train_cells = {m: cells.get(f"train/{m}") for m in plan.methods if m in META}
    tl_cells = (
        {t: cells.get(f"train/task_level/{t}") for t in plan.held_out} if "task_level" in plan.methods else {}
    )
    ppl_rows = [r for m in plan.ppl_models for r in (cells.get(f"ppl/{m}") or {}).get("rows", [])]
    loco = {}
    for cat, tasks in plan.loco.items():
        for m in cfg.ablation.methods:
            for t in tasks:
                c = cells.get(f"loco/{cat}/eval/{m}/{t}")
                if c:
                    loco.setdefault(cat, []).extend(c["summary"])

    flat = []
    for s_ in summary:
        for c in s_["curve"]:
            flat.append({k: s_[k] for k in ("model", "task", "category", "metric")} | c)
    write_csv(
        flat,
        out / "results.csv",
        ["model", "task", "category", "metric", "shots_requested", "shots", "mean", "std", "seeds"],
    )
    atomic_write_json(
        out / "results.json",
        {
            "summary": summary,
            "rows": rows,
            "train": train_cells,
            "task_level": tl_cells,
            "perplexity": ppl_rows,
            "ablation": loco,
        },
    )
    methods = [m for m in plan.methods]
    # task-level models are evaluated at 0 shots only: a reference level, not a curve
    tl = {s_["task"]: s_["best"] for s_ in summary if s_["model"] == "task_level"}
    curves = [s_ for s_ in summary if s_["model"] != "task_level"]
    for t in plan.held_out:
        if any(s_["task"] == t for s_ in curves):
            plot_curves(
                curves,
                t,
                out / "plots" / f"{_safe(t)}.png",
                hlines={"task-level FT": tl[t]} if t in tl else None,
            )

    lines = [
        f"# Experiment report: {Path(cfg.output_dir).name}",
        "",
        f"Base model `{cfg.train.model.name_or_path}` ({cfg.train.model.dtype}), LoRA r={cfg.train.lora.r} on "
        f"{', '.join(cfg.train.lora.target_modules)}; context {cfg.train.data.max_length} tokens in training and "
        f"{cfg.eval.max_length} in evaluation. {cfg.supervised_examples_per_task} supervised examples per training task "
        f"for every meta-training method ({cfg.epochs:g} epoch); few-shot k={cfg.few_shot_k}. Evaluation: "
        f"{cfg.eval.max_queries} queries per task, seeds {cfg.eval.seeds}, shots {shot_grid_str(cfg)}.",
        "",
        "## Best / at-max-shots score per held-out task (paper Table 4)",
        "",
        "Each cell is *best over the shot grid / with the most shots that fit*. Bold: best meta-learning method "
        "(zero-, few-, many-shot fine-tuning). Task-level FT is one adapter per task, evaluated at 0 shots (upper bound).",
        "",
        best_max_table(summary, methods, bold_among=list(META), labels=LABELS, mean_column=True),
        "",
    ]
    lines += ["## Shot curves (paper Figure 5)", ""]
    for t in plan.held_out:
        if not any(s_["task"] == t for s_ in curves):
            continue
        s0 = next(s_ for s_ in curves if s_["task"] == t)
        lines += [f"### {t} ({s0['category']}, {s0['metric']})", "", f"![{t}](plots/{_safe(t)}.png)", ""]
        lines += [curve_table(curves, t)]
        if t in tl:
            lines += ["", f"Task-level fine-tuning (0 shots): {tl[t]:.3f}"]
        lines.append("")
    if ppl_rows:
        lines += [
            "## Forgetting: long-context perplexity on books (paper Table 5)",
            "",
            perplexity_table(ppl_rows, baseline="no_ft"),
            "",
        ]
    if loco:
        lines += ["## Leave-one-category-out ablation (paper Tables 10 and 11)", ""]
        for cat, summ in loco.items():
            tasks = plan.loco[cat]
            base_rows = [
                s_ for s_ in summary if s_["task"] in tasks and s_["model"] in ("no_ft", "many_shot_all")
            ]
            renamed = [
                dict(s_, model="many_shot_all (all data)") if s_["model"] == "many_shot_all" else s_
                for s_ in base_rows
            ]
            table = renamed + summ
            order = (
                ["no_ft"]
                + [f"{m}_without_{cat}" for m in cfg.ablation.methods]
                + ["many_shot_all (all data)"]
            )
            order = [o for o in order if any(s_["model"] == o for s_ in table)]
            lines += [
                f"### Without {cat} training tasks: best / at max shots",
                "",
                best_max_table(table, order),
                "",
            ]
            lines += [
                f"### Without {cat} training tasks: 0-shot / {cfg.few_shot_k}-shot",
                "",
                _zero_k_table(table, order, tasks, cfg.few_shot_k),
                "",
            ]
    lines += ["## Cost (paper Tables 7 and 8)", "", _cost_table(train_cells, tl_cells, LABELS), ""]
    lines += [
        "Tokens processed are measured on each method's actual build; *mask-last equivalent* is what mask-last-target "
        "training would process to supervise the same targets (paper Table 7). Wall-clock and tokens/s are measured "
        "during training on this machine.",
        "",
    ]
    return atomic_write_text(out / "report.md", "\n".join(lines))


def shot_grid_str(cfg) -> str:
    from .experiment import shot_grid

    return ", ".join(map(str, shot_grid(cfg)))


def _safe(name: str) -> str:
    return name.replace(":", "_").replace("/", "_")


def _zero_k_table(summary: list[dict], models: list[str], tasks: list[str], k: int) -> str:
    cell = {(s_["model"], s_["task"]): s_ for s_ in summary}
    lines = ["| model | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for m in models:
        vals = []
        for t in tasks:
            s_ = cell.get((m, t))
            zero = _curve_point(s_, "0") if s_ else None
            kk = _curve_point(s_, str(k)) if s_ else None
            vals.append(f"{_fmt(zero['mean'] if zero else None)} / {_fmt(kk['mean'] if kk else None)}")
        lines.append(f"| {m} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


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


# --------------------------------------------------------------------------------------------
# Context distillation report (seed 004)
# --------------------------------------------------------------------------------------------


def _label(r: dict) -> str:
    return r["method"] if r["update"] == "-" else f"{r['method']}+{r['update']}"


def _plot_vs_k(
    rows: list[dict], labels: list[str], metrics: list[tuple[str, str]], path: Path, title: str
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6))
    axes = [axes] if len(metrics) == 1 else list(axes)
    for ax, (key, name) in zip(axes, metrics):
        for lab in labels:
            pts = sorted((r["k"], r[key]) for r in rows if _label(r) == lab and r.get(key) is not None)
            if not pts:
                continue
            if lab == "base":  # no support examples: a reference level
                ax.axhline(pts[0][1], linestyle=":", color="gray", label="base")
                continue
            ax.plot([k for k, _ in pts], [v for _, v in pts], marker="o", label=lab)
        ax.set_xlabel("support examples k")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    atomic_save(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
    return path


def _slope(rows: list[dict], lab: str, key: str) -> float | None:
    pts = sorted((r["k"], r[key]) for r in rows if _label(r) == lab and r.get(key) is not None)
    if len(pts) < 2:
        return None
    import numpy as np

    return float(np.polyfit([k for k, _ in pts], [v for _, v in pts], 1)[0])


def _mean(rows: list[dict], lab: str, key: str) -> float | None:
    vals = [r[key] for r in rows if _label(r) == lab and r.get(key) is not None]
    return sum(vals) / len(vals) if vals else None


def distill_claims(
    rows: list[dict], updates: list[str], n_queries: int | None = None, n_ood_sets: int = 1
) -> list[str]:
    """Seed 004's claims, each checked against this run's numbers.

    With ``n_queries`` (test queries per set) an accuracy difference within the rough 95% binomial band
    of a difference of two accuracies is called noise; and when ICL itself does not beat the untrained
    student beyond that band, the accuracy claims are marked not testable (the teacher has nothing to
    distil)."""
    import math

    out = []
    cd = [f"cd+{u}" for u in updates]
    pb = [f"pbft+{u}" for u in updates]
    icl_ood, icl_in = _mean(rows, "icl", "out_of_domain"), _mean(rows, "icl", "in_domain")
    noise_in = 1.96 * math.sqrt(2 * 0.25 / n_queries) if n_queries else None
    noise_ood = noise_in / math.sqrt(max(n_ood_sets, 1)) if noise_in else None
    base_in = _mean(rows, "base", "in_domain")
    icl_best_in = max(
        (r["in_domain"] for r in rows if _label(r) == "icl" and r.get("in_domain") is not None), default=None
    )
    untestable = ""
    if noise_in and base_in is not None and icl_best_in is not None and icl_best_in - base_in < noise_in:
        untestable = (
            f"not testable here — ICL does not beat the untrained model beyond noise (best ICL in domain "
            f"{icl_best_in:.3f} vs base {base_in:.3f}, noise ±{noise_in:.2f} at {n_queries} queries), so the teacher "
            "has no in-context ability to distil; "
        )

    def verdict(diff: float, noise: float | None) -> str:
        if noise is not None and abs(diff) < noise:
            return untestable + f"within noise (±{noise:.2f})"
        return untestable + ("supported" if diff > 0 else "not supported")

    if icl_ood is not None:
        best_cd = max(((_mean(rows, c, "out_of_domain") or -1), c) for c in cd)
        if best_cd[0] >= 0:
            out.append(
                f"CD generalises out of domain better than ICL: {verdict(best_cd[0] - icl_ood, noise_ood)} (mean OOD "
                f"accuracy over k: best CD variant {best_cd[1]} {best_cd[0]:.3f} vs ICL {icl_ood:.3f}; seed 004 "
                "reports ~+50%)."
            )
    if icl_in is not None:
        others = [(_mean(rows, lab, "in_domain"), lab) for lab in ["base", *pb, *cd]]
        others = [(v, lab) for v, lab in others if v is not None]
        if others:
            top = max(others)
            out.append(
                f"ICL is best in domain: {verdict(icl_in - top[0] + 1e-12, noise_in)} (ICL {icl_in:.3f}; best other "
                f"{top[1]} {top[0]:.3f})."
            )
    for c, p in zip(cd, pb):
        sc, sp = _slope(rows, c, "delta_rss_mb"), _slope(rows, p, "delta_rss_mb")
        if sc is not None and sp is not None:
            verdict = "supported" if sp > max(sc, 0) else "not supported"
            out.append(
                f"Training memory grows with k for PBFT but hardly for CD ({c.split('+')[1]}): {verdict} "
                f"(slope of peak RSS over k: PBFT {sp:+.1f} MB per support, CD {sc:+.1f} MB per support)."
            )
        tc, tp = _slope(rows, c, "train_s"), _slope(rows, p, "train_s")
        if tc is not None and tp is not None:
            verdict = "supported" if tp > max(tc, 0) else "not supported"
            out.append(
                f"Training time grows with k for PBFT, stays flat for CD ({c.split('+')[1]}): {verdict} "
                f"(slopes: PBFT {tp:+.2f} s per support, CD {tc:+.2f} s per support)."
            )
    for method in ("pbft", "cd"):
        full = _mean(rows, f"{method}+full", "delta_rss_mb")
        for u in ("lora", "bitfit"):
            peft = _mean(rows, f"{method}+{u}", "delta_rss_mb")
            if full is not None and peft is not None:
                verdict = "supported" if peft < full else "not supported"
                out.append(
                    f"{method.upper()}+{u} needs less training memory than full updates: {verdict} "
                    f"(mean peak RSS increase {peft:.0f} MB vs {full:.0f} MB)."
                )
    return out


def write_distill_report(cfg, rows: list[dict], notes: list[str], student: str) -> Path:
    out = Path(cfg.output_dir)
    flat = [
        {k: v for k, v in r.items() if k != "per_task"}
        | {f"acc_{t}": a for t, a in r.get("per_task", {}).items()}
        for r in rows
    ]
    fields = list(dict.fromkeys(k for r in flat for k in r))
    write_csv(flat, out / "results.csv", fields)
    updates = list(cfg.updates)
    first = updates[0] if updates else "full"
    main = ["base", "icl", f"pbft+{first}", f"cd+{first}"]
    acc = [("in_domain", "in-domain accuracy"), ("out_of_domain", "out-of-domain accuracy")]
    cost = [("delta_rss_mb", "peak training RSS increase (MB)"), ("train_s", "training time (s)")]
    pbft, cd = [f"pbft+{u}" for u in updates], [f"cd+{u}" for u in updates]
    figs = [  # seed 004's Figures 1-6: accuracy and cost, overall and per update kind
        ("fig1_accuracy.png", main, acc, "Baseline, ICL, PBFT, CD"),
        ("fig2_cost.png", main[2:], cost, "Training cost"),
        ("fig3_pbft_variants.png", ["base", *pbft], acc, "PBFT variants"),
        ("fig4_pbft_cost.png", pbft, cost, "PBFT variants: cost"),
        ("fig5_cd_variants.png", ["base", *cd], acc, "CD variants"),
        ("fig6_cd_cost.png", cd, cost, "CD variants: cost"),
    ]
    for name, labels, metrics, title in figs:
        _plot_vs_k(rows, labels, metrics, out / "plots" / name, title)
    ood_names = list(cfg.out_of_domain)
    head = [
        "method",
        "k",
        "in-domain",
        "OOD mean",
        *ood_names,
        "train s",
        "peak RSS +MB",
        "CUDA MB",
        "trainable",
        "infer ms/query",
        "prompt tokens",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=lambda r: (r["k"], r["method"], r["update"])):
        per = r.get("per_task", {})
        cuda = r.get("cuda_peak_mb")
        lines.append(
            "| "
            + " | ".join(
                [
                    _label(r),
                    str(r["k"]),
                    _fmt(r.get("in_domain")),
                    _fmt(r.get("out_of_domain")),
                    *[_fmt(per.get(t)) for t in ood_names],
                    f"{r['train_s']:.1f}" if "train_s" in r else "-",
                    f"{r['delta_rss_mb']:.0f}" if "delta_rss_mb" in r else "-",
                    f"{cuda:.0f}" if cuda is not None else "-",
                    f"{r['trainable_params']:,}" if "trainable_params" in r else "-",
                    f"{r['inference_ms_per_query']:.1f}",
                    str(r.get("prompt_tokens", "-")),
                ]
            )
            + " |"
        )
    text = [
        "# Context distillation report (seed 004)",
        "",
        f"Teacher `{cfg.model.name_or_path}`; student: {student}. Binary NLI with a yes/no verbalizer; supports and "
        f"training queries from {cfg.in_domain} (neutral removed); out of domain: {', '.join(ood_names)}. "
        f"k in {cfg.shots}; {cfg.train_queries} training queries, {cfg.epochs} epochs, batch {cfg.batch_size}; "
        f"KL over {'the verbalizer tokens' if cfg.kl == 'verbalizer' else 'the full vocabulary'}, alpha={cfg.alpha}, "
        f"T={cfg.temperature}; LoRA r={cfg.lora.r}, alpha={cfg.lora.alpha:g} on {', '.join(cfg.lora.target_modules)}; "
        f"{cfg.eval_queries} test queries per task. PBFT and CD students answer without support examples; ICL is the "
        "teacher with the k supports in its prompt.",
        "",
    ]
    if notes:
        text += ["Notes: " + "; ".join(notes) + ".", ""]
    text += ["## Results", "", *lines, ""]
    text += [
        "Peak RSS is sampled during each method's training phase (teacher targets included for CD) and given as the "
        "increase over the process's memory before it (after the first cells the allocator reuses memory freed by "
        "earlier ones, so small deltas understate); CUDA is `torch.cuda.max_memory_allocated` when a GPU is used.",
        "",
        "## Seed 004's claims against these numbers",
        "",
        *[f"- {c}" for c in distill_claims(rows, updates, cfg.eval_queries, len(cfg.out_of_domain))],
        "",
        "## Figures",
        "",
        *[f"![{n}](plots/{n})" for n, *_ in figs],
        "",
    ]
    return atomic_write_text(out / "report.md", "\n".join(text))
