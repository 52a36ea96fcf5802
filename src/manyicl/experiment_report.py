"""The experiment report: pooled scores with 95% intervals, paired tests, and the paper's claims as
verdicts computed from those tests (never written by hand). Reads finished cells only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .claims import (
    ALPHA,
    Outcomes,
    _best_label,
    _collect,
    _fmt_test,
    compute_claims,
    pooled_best_test,
    pooled_score,
    pooled_test,
)
from .fileio import atomic_write_json, atomic_write_text
from .methods import LABELS, META
from .report import _cost_table, _safe, curve_table, perplexity_table, plot_curves, write_csv
from .stats import holm, paired_test, score_ci, verdict

# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


def _pooled_table(
    out: Outcomes, summary: list[dict], methods: list[str], tasks: list[str], shots: list[str]
) -> str:
    head = "| method | " + " | ".join(f"{s} shots" for s in shots) + " | best (k chosen on dev) |"
    lines = [head, "|---|" + "---|" * (len(shots) + 1)]
    by = {(s["model"], s["task"]): s for s in summary}
    for m in methods:
        cells = []
        for s in shots:
            ci = pooled_score(out, m, tasks, s)
            cells.append(ci.fmt() if ci else "-")
        vals = []
        for t in tasks:
            sm = by.get((m, t))
            if sm and _best_label(sm):
                pq = out.per_query(m, t, _best_label(sm))
                vals += list(pq.values()) if pq else []
        cells.append(score_ci(np.array(vals)).fmt() if vals else "-")
        lines.append(f"| {LABELS.get(m, m)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _tests_table(
    out: Outcomes, summary: list[dict], ours: str, others: list[str], tasks: list[str], shots: str
) -> tuple[str, list[dict]]:
    recs = []
    for o in others:
        t = (
            pooled_test(out, ours, o, tasks, shots)
            if shots != "best"
            else pooled_best_test(out, summary, ours, o, tasks)
        )
        per_task = []
        for task in tasks:
            if shots == "best":  # each model at its own dev-chosen k for this task, same test queries
                bt = pooled_best_test(out, summary, ours, o, [task])
                if bt is not None:
                    per_task.append(bt)
                continue
            pt = out.task_test(ours, o, task, shots)
            if pt is not None:
                per_task.append(pt)
        recs.append({"other": o, "test": t, "per_task": per_task})
    adj = holm([r["test"].p for r in recs if r["test"] is not None])
    it = iter(adj)
    lines = [
        "| many-shot FT (mask all) minus | pooled difference [95% CI], p | verdict | tasks better / worse (p<0.05) |",
        "|---|---|---|---|",
    ]
    for r in recs:
        t = r["test"]
        pa = next(it) if t is not None else None
        r["p_holm"] = pa
        better = sum(1 for x in r["per_task"] if x.p < ALPHA and x.diff > 0)
        worse = sum(1 for x in r["per_task"] if x.p < ALPHA and x.diff < 0)
        v = verdict(t, ALPHA) if t else "-"
        lines.append(
            f"| {LABELS.get(r['other'], r['other'])} | {_fmt_test(t, pa)} | {v} | "
            f"{better} / {worse} of {len(r['per_task'])} |"
        )
    return "\n".join(lines), recs


def _per_task_table(summary: list[dict], methods: list[str], tasks: list[str], info: dict) -> str:
    by = {(s["model"], s["task"]): s for s in summary}
    head = "| task | n | majority | " + " | ".join(methods) + " |"
    lines = [head, "|---|---|---|" + "---|" * len(methods)]
    for t in tasks:
        maj = (info.get(t, {}).get("majority") or {}).get("share")
        n = next((by[(m, t)]["n"] for m in methods if (m, t) in by), "-")
        cells = []
        for m in methods:
            s = by.get((m, t))
            cells.append(
                "-"
                if not s
                else f"{s['at_max']:.2f}" + (f" / {s['best']:.2f}" if s.get("best") is not None else "")
            )
        lines.append(f"| {t} | {n} | {'-' if maj is None else f'{maj:.2f}'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _task_shot_tests(
    out: Outcomes, task: str, shots: list[str], ours: str = "many_shot_all", base: str = "no_ft"
) -> str:
    """One task's paired difference ours minus base at every shot count (the same queries and seeds), so a
    per-task statement such as "fine-tuning lifts the 1,000-shot point" is read from a test, not a curve.
    Empty when either model lacks the task. No Holm adjustment: each row answers its own question."""
    rows = []
    for s in shots:
        t = out.task_test(ours, base, task, s)
        if t is None:
            continue
        v = {"supported": "better", "contradicted": "worse"}.get(verdict(t, ALPHA), "not significant")
        rows.append(f"| {s} | {_fmt_test(t)} | {v} |")
    if not rows:
        return ""
    head = [
        f"| shots | {LABELS.get(ours, ours)} minus {LABELS.get(base, base)} [95% CI], p | p < {ALPHA} |",
        "|---|---|---|",
    ]
    return "\n".join(head + rows)


def _label_bias(out: Outcomes, methods: list[str], tasks: list[str], info: dict) -> str:
    """How concentrated predictions are: the share of the most predicted answer per (task, seed), next
    to the gold majority share. A model that answers one label for every query behind a fixed prompt
    shows up here, not only as low accuracy."""
    lines = [
        "| method | 0 shots: top-prediction share | max shots: top-prediction share | gold majority share |",
        "|---|---|---|---|",
    ]
    by: dict[tuple, list[str]] = {}
    for p in out.preds:
        if p.get("split", "test") == "test":
            by.setdefault((p["model"], p["task"], p["shots_requested"], p["seed"]), []).append(
                p["prediction"]
            )
    maj = [((info.get(t, {}).get("majority") or {}).get("share")) for t in tasks]
    maj = [m for m in maj if m is not None]
    for m in methods:
        vals = {}
        for shots in ("0", "max"):
            shares = []
            for (mm, t, s, _seed), ps in by.items():
                if mm == m and s == shots and t in tasks and ps:
                    shares.append(max(ps.count(x) for x in set(ps)) / len(ps))
            vals[shots] = f"{np.mean(shares):.2f}" if shares else "-"
        lines.append(
            f"| {LABELS.get(m, m)} | {vals['0']} | {vals['max']} | {np.mean(maj):.2f} |"
            if maj
            else f"| {m} | {vals['0']} | {vals['max']} | - |"
        )
    return "\n".join(lines)


def _convergence(train_cells: dict) -> tuple[str, dict]:
    lines = [
        "| method | steps | tokens | val loss first -> best (step) -> last | last quarter change | converged? |",
        "|---|---|---|---|---|---|",
    ]
    curves = {}
    for m, c in train_cells.items():
        if not c:
            continue
        s = c["summary"]
        vc = s.get("val_curve") or []
        curves[m] = vc
        if len(vc) < 2:
            lines.append(
                f"| {LABELS.get(m, m)} | {s['steps']} | {s['tokens_processed']:,} | - | - | no validation |"
            )
            continue
        first, last = vc[0]["val_loss"], vc[-1]["val_loss"]
        best = min(vc, key=lambda r: r["val_loss"])
        q = [r for r in vc if r["step"] >= 0.75 * vc[-1]["step"]]
        change = (
            (q[-1]["val_loss"] - q[0]["val_loss"]) / max(abs(q[0]["val_loss"]), 1e-9)
            if len(q) >= 2
            else float("nan")
        )
        conv = (
            "plateaued"
            if abs(change) < 0.02
            else ("still improving" if change < 0 else "rising (overfitting?)")
        )
        lines.append(
            f"| {LABELS.get(m, m)} | {s['steps']} | {s['tokens_processed']:,} | {first:.3f} -> {best['val_loss']:.3f} "
            f"({best['step']}) -> {last:.3f} | {change:+.1%} | {conv} |"
        )
    return "\n".join(lines), curves


def _plot_val(curves: dict, path: Path) -> Path | None:
    if not any(len(v) >= 2 for v in curves.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .fileio import atomic_save
    from .report import model_color

    order = list(curves)
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for m, vc in curves.items():
        if len(vc) >= 2:
            ax.plot(
                [r["step"] for r in vc],
                [r["val_loss"] for r in vc],
                marker=".",
                label=m,
                color=model_color(m, order),
            )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("validation loss (held-in tasks, own objective)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_save(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
    return path


def _budget_text(cfg, train_cells: dict | None = None) -> str:
    if cfg.budget == "equal_tokens":
        text = f"equal tokens: every meta-training method processes about {cfg.budget_tokens:,} tokens (the same compute)"
        done = sorted(
            c["summary"]["build"]["tokens"]
            for c in (train_cells or {}).values()
            if c and "tokens" in (c.get("summary", {}).get("build") or {})
        )
        if done:  # what the builds actually held (a build may round up; the cost table has every method)
            span = f"{done[0]:,}" if done[0] == done[-1] else f"{done[0]:,}-{done[-1]:,}"
            text += f"; measured on the builds: {span} tokens"
        return text
    if cfg.budget == "equal_steps":
        return f"equal steps: every meta-training method runs {cfg.budget_steps} optimizer steps"
    return (
        f"equal examples: {cfg.supervised_examples_per_task} supervised examples per training task for every method "
        "(paper Appendix A.1; mask-last methods then process far more tokens)"
    )


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def _run_cache_timing(outdir: Path) -> list[dict]:
    """Prompt-cache timings from the evaluation runs' own results.json (for cells made before the cells kept
    them): ``eval_runs/*/results.json``, where present."""
    import json

    found = []
    for p in sorted((outdir / "eval_runs").glob("*/results.json")):
        try:
            found += json.loads(p.read_text(encoding="utf-8")).get("prompt_cache_timing") or []
        except (OSError, ValueError):
            continue
    return found


def _eval_cost(eval_cells: dict, extra_caches: Sequence[dict] = ()) -> list[str]:
    """Where evaluation time goes at max shots (prompt length, prefill, per-query scoring) and what the saved
    prompt caches weigh and cost to load, per model and task, from the finished evaluation cells."""
    rows = [r for c in eval_cells.values() for r in (c or {}).get("rows", [])]
    cell_caches = [c for cell in eval_cells.values() for c in (cell or {}).get("cache_timing") or []]
    caches = {(c["model"], c["task"]): c for c in [*extra_caches, *cell_caches]}
    if not rows:
        return []
    lines = [
        "## Evaluation cost at max shots",
        "",
        "| model | task | shots (most over seeds) | prompt tokens (most) | prefill s (mean per prompt) | ms per query | cache MB | cache load s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if r["shots_requested"] == "max":
            groups.setdefault((r["model"], r["task"]), []).append(r)
    tasks = {t for _, t in groups}
    if len(tasks) > 4:  # many small tasks: one line per model (shots and prompt tokens: the largest)
        merged: dict[tuple[str, str], list[dict]] = {}
        for (m, _), rs in groups.items():
            merged.setdefault((m, f"all {len(tasks)} tasks"), []).extend(rs)
        groups = merged
    for (m, t), rs in groups.items():
        nq = sum(r["n_queries"] + r.get("n_dev", 0) for r in rs)
        c = caches.get((m, t))
        mb, load = (f"{c['file_mb']:.0f}", f"{c['load_s']:.2f}") if c else ("-", "-")
        lines.append(
            f"| {m} | {t} | {max(r['shots'] for r in rs)} | {max(r['prompt_tokens'] for r in rs):,} | "
            f"{np.mean([r['prefill_s'] for r in rs]):.1f} | {1000 * sum(r['query_s'] for r in rs) / max(nq, 1):.0f} | "
            f"{mb} | {load} |"
        )
    prefill = sum(r["prefill_s"] for r in rows)
    query = sum(r["query_s"] for r in rows)
    lines += [
        "",
        f"All evaluation points: {prefill / 3600:.2f} h of prompt prefill and {query / 3600:.2f} h of query scoring "
        f"({len(rows)} points). Recomputing a prompt instead of loading its saved cache costs its prefill time.",
        "",
    ]
    return lines


def _train_dtype(cfg, train_cells: dict) -> str:
    """The dtype the training cells record; never re-resolved here (``auto`` differs between machines)."""
    seen = sorted({(c or {}).get("summary", {}).get("dtype") for c in train_cells.values()} - {None})
    if seen:
        return " / ".join(seen)
    if cfg.train.model.dtype != "auto":
        return cfg.train.model.dtype
    return "dtype `auto` (not recorded by these cells)"


def _compute_line(cells) -> str:
    """What the finished cells cost in wall time, as far as they record it (older cells do not)."""
    total, timed, n = cells.recorded_wall_s()
    if not timed:
        return f"Compute: {n} finished cells; none records its wall time (cells made before that was kept)."
    part = "" if timed == n else f" ({timed} of {n} finished cells record it; the others predate that)"
    return f"Compute: {total / 3600:.2f} h of cell wall time on the machines that ran them{part}."


def write_experiment_report(cfg, plan, cells) -> Path:
    """report.md, results.json, results.csv, predictions.jsonl.gz and plots for an experiment."""
    from .predictions import save_predictions

    outdir = Path(cfg.output_dir)
    summary, rows, preds, info = _collect(cfg, plan, cells)
    loco_summary, loco_preds = [], []
    for cat, ltasks in plan.loco.items():
        for m in cfg.ablation.methods:
            for t in ltasks:
                c = cells.get(f"loco/{cat}/eval/{m}/{t}")
                if c:
                    loco_summary += c["summary"]
                    loco_preds += c.get("predictions", [])
    demos_preds = []
    for t in plan.demos_check:
        for mode in ("per_seed", "per_query"):
            c = cells.get(f"demos/{mode}/{t}")
            if c:
                demos_preds += [dict(p, model=f"{p['model']}@{mode}") for p in c.get("predictions", [])]
    out = Outcomes(preds + loco_preds + demos_preds)
    train_cells = {m: cells.get(f"train/{m}") for m in plan.methods if m in META}
    tl_cells = (
        {t: cells.get(f"train/task_level/{t}") for t in plan.held_out} if "task_level" in plan.methods else {}
    )
    ppl_rows = [r for m in plan.ppl_models for r in (cells.get(f"ppl/{m}") or {}).get("rows", [])]
    ce_rows = {m: (cells.get(f"ce/{m}") or {}).get("rows") for m in plan.ce_models}

    save_predictions(outdir / "predictions.jsonl.gz", preds + loco_preds + demos_preds)
    flat = []
    for s_ in summary:
        for c in s_["curve"]:
            flat.append({k: s_[k] for k in ("model", "task", "category", "metric")} | c)
    write_csv(
        flat,
        outdir / "results.csv",
        [
            "model",
            "task",
            "category",
            "metric",
            "shots_requested",
            "shots",
            "n",
            "mean",
            "lo",
            "hi",
            "ci",
            "std",
            "seeds",
            "dev_mean",
        ],
    )
    claims, tests = compute_claims(cfg, plan, cells, out, summary)
    methods = [m for m in plan.methods if any(s["model"] == m for s in summary)]
    tasks = [t for t in plan.held_out if any(s["task"] == t for s in summary)]
    shot_labels = [str(s) for s in cfg.eval.shots if s != "max"]
    shot_labels = [
        s
        for s in dict.fromkeys(["0", *shot_labels])
        if any(out.per_query(m, t, s) for m in methods for t in tasks[:1])
    ]
    curve_methods = [m for m in methods if m != "task_level"]
    n_queries = sum(1 for p in preds if p.get("split", "test") == "test")
    seeds_seen = sorted({p["seed"] for p in preds})

    lines = [
        f"# Experiment report: {outdir.name}",
        "",
        f"Base model `{cfg.train.model.name_or_path}` (trained in {_train_dtype(cfg, train_cells)}; scored in "
        f"{next((c.get('scoring_dtype') for c in [cells.get(f'eval/{m}/{t}') for m in plan.methods for t in plan.held_out] if c and c.get('scoring_dtype')), '?')}), "
        f"LoRA r={cfg.train.lora.r} on {', '.join(cfg.train.lora.target_modules)}; context {cfg.train.data.max_length} tokens in "
        f"training and {cfg.eval.max_length} in evaluation. Budget — {_budget_text(cfg, train_cells)}. Few-shot k={cfg.few_shot_k}. "
        f"Held-out tasks: {len(plan.held_out)}; up to {cfg.eval.max_queries} test and {cfg.eval.dev_queries} dev queries per task; "
        f"demonstration seeds {list(cfg.eval.seeds)} (a fresh balanced draw in random order for every seed and shot count); "
        f"shots {', '.join(map(str, cfg.eval.shots))}.",
        "",
        f"Evaluated so far: {len(tasks)} of {len(plan.held_out)} held-out tasks, methods {', '.join(methods)}"
        f"{' (the study runs in parts; `--status` shows what is left)' if len(tasks) < len(plan.held_out) else ''}. "
        f"{n_queries:,} test-query outcomes in `predictions.jsonl.gz` (seeds {seeds_seen}); every number below is recomputed from it. "
        "Intervals are 95% (bootstrap over queries, each query's mean over seeds; Wilson for one seed of 0/1 scores). "
        "Paired tests compare two models on the same queries: exact McNemar for one seed of 0/1 outcomes, otherwise a "
        "sign-flip permutation test on per-query differences; Holm-adjusted p-values where several comparisons share a table. "
        "*Best* uses the shot count with the best dev score, evaluated on the test queries.",
        "",
        _compute_line(cells),
        "",
        "## The paper's claims at this scale (computed)",
        "",
        "| claim | paper | verdict | evidence (difference [95% CI], p) |",
        "|---|---|---|---|",
    ]
    for c in claims:
        lines.append(f"| {c['claim']} | {c['source']} | **{c['verdict']}** | {c['evidence']} |")
    lines += [
        "",
        "*supported*: every listed comparison is significant (p < 0.05) in the paper's direction; *contradicted*: at least "
        "one is significant in the opposite direction; *not significant*: neither.",
        "",
        "## Pooled scores over held-out tasks (paper Table 4)",
        "",
        _pooled_table(out, summary, methods, tasks, [*shot_labels, "max"]),
        "",
    ]
    if "many_shot_all" in methods:
        others = [m for m in methods if m != "many_shot_all"]
        for shots, title in (("max", "at max shots"), ("best", "at each model's dev-chosen shot count")):
            table, _ = _tests_table(out, summary, "many_shot_all", others, tasks, shots)
            lines += [f"### Paired tests {title}", "", table, ""]
    lines += [
        "## Per task: at max shots / best (dev-chosen k), with the majority-class share",
        "",
        _per_task_table(summary, methods, tasks, info),
        "",
        "## Label bias",
        "",
        _label_bias(out, methods, tasks, info),
        "",
        "A top-prediction share near 1.0 means the model answers one label for (almost) every query behind that prompt.",
        "",
    ]
    conv, curves = _convergence(train_cells)
    val_plot = _plot_val(curves, outdir / "plots" / "validation_loss.png")
    lines += ["## Did training converge?", "", conv, ""]
    if val_plot:
        lines += ["![validation loss](plots/validation_loss.png)", ""]
    if tl_cells:
        tl = [c for c in tl_cells.values() if c]
        stopped = sum(1 for c in tl if c["summary"].get("stopped_early"))
        lines += [
            f"Task-level FT: {len(tl)} adapters, early stopping on a dev slice of each task's demo split "
            f"({stopped} stopped early; best validation step kept).",
            "",
        ]
    if any(ce_rows.values()):
        lines += [
            "## Held-out target cross-entropy (low variance)",
            "",
            "Mean cross-entropy (nats per target token) of every model on max-shot sequences of the held-out tasks' test "
            "examples, labels drawn i.i.d. in random order; paired over the same sequences against no fine-tuning.",
            "",
            "| method | mean CE [95% CI] | minus no_ft [95% CI], p |",
            "|---|---|---|",
        ]
        base = ce_rows.get("no_ft")
        for m, r in ce_rows.items():
            if not r:
                continue
            vals = np.array([x["ce"] for x in r])
            ci = score_ci(vals)
            t = (
                paired_test(vals, np.array([x["ce"] for x in base]))
                if base and m != "no_ft" and len(base) == len(r)
                else None
            )
            lines.append(f"| {LABELS.get(m, m)} | {ci.fmt()} | {_fmt_test(t)} |")
        lines.append("")
    lines += ["## Shot curves (paper Figure 5)", ""]
    tl_level = {s_["task"]: s_["at_max"] for s_ in summary if s_["model"] == "task_level"}
    curves_summary = [s_ for s_ in summary if s_["model"] != "task_level"]
    for t in tasks:
        if not any(s_["task"] == t for s_ in curves_summary):
            continue
        plot_curves(
            curves_summary,
            t,
            outdir / "plots" / f"{_safe(t)}.png",
            hlines={"task-level FT": tl_level[t]} if t in tl_level else None,
            model_order=curve_methods,
        )
        s0 = next(s_ for s_ in curves_summary if s_["task"] == t)
        lines += [f"### {t} ({s0['category']}, {s0['metric']})", "", f"![{t}](plots/{_safe(t)}.png)", ""]
        lines += [curve_table(curves_summary, t), ""]
        task_tests = _task_shot_tests(out, t, [*shot_labels, "max"])
        if task_tests:
            lines += ["Paired over the same test queries and seeds:", "", task_tests, ""]
    if ppl_rows:
        lines += [
            "## Forgetting: long-context perplexity on books (paper Table 5)",
            "",
            perplexity_table(ppl_rows, baseline="no_ft"),
            "",
        ]
    if plan.loco:
        lines += ["## Leave-one-category-out ablation (paper Tables 10 and 11)", ""]
        for cat, ltasks in plan.loco.items():
            ms = ["no_ft", *[f"{m}_without_{cat}" for m in cfg.ablation.methods], "many_shot_all"]
            lines += [
                f"### Without {cat} training tasks ({len(ltasks)} held-out {cat} tasks)",
                "",
                _pooled_table(
                    out,
                    summary + loco_summary,
                    [m for m in ms if out.per_query(m, ltasks[0], "max")],
                    ltasks,
                    [s for s in ("0", str(cfg.few_shot_k)) if s in shot_labels] + ["max"],
                ),
                "",
            ]
    if plan.demos_check:
        lines += ["## Fixed cached prompt vs fresh demonstrations per query", ""]
        lab = next((p["model"].split("@")[0] for p in demos_preds), None)
        if lab:
            for shots in dict.fromkeys(p["shots_requested"] for p in demos_preds):
                t = pooled_test(out, f"{lab}@per_query", f"{lab}@per_seed", plan.demos_check, shots)
                a = pooled_score(out, f"{lab}@per_query", plan.demos_check, shots)
                b = pooled_score(out, f"{lab}@per_seed", plan.demos_check, shots)
                lines.append(
                    f"- {lab}, {shots} shots, {len(plan.demos_check)} tasks: per query {a.fmt() if a else '-'}, cached per seed "
                    f"{b.fmt() if b else '-'}; difference {_fmt_test(t)}."
                )
            cost = {}
            for mode in ("per_seed", "per_query"):
                rs = [
                    r
                    for t in plan.demos_check
                    for r in (cells.get(f"demos/{mode}/{t}") or {}).get("rows", [])
                ]
                cost[mode] = sum(r["prefill_s"] + r["query_s"] for r in rs) / max(
                    sum(r["n_queries"] for r in rs), 1
                )
            lines += [
                "",
                f"Cost per query: {1000 * cost['per_seed']:.0f} ms with the shared cached prompt vs "
                f"{1000 * cost['per_query']:.0f} ms with fresh demonstrations ({cost['per_query'] / max(cost['per_seed'], 1e-9):.0f}x).",
                "",
            ]
    lines += _eval_cost(
        {(m, t): cells.get(f"eval/{m}/{t}") for m in plan.methods for t in plan.held_out},
        _run_cache_timing(outdir),
    )
    lines += ["## Cost (paper Tables 7 and 8)", "", _cost_table(train_cells, tl_cells, LABELS), ""]
    lines += [
        "Tokens processed are measured on each method's actual build; *mask-last equivalent* is what mask-last-target "
        "training would process to supervise the same targets (paper Table 7). Wall-clock and tokens/s are measured "
        "during training on this machine, cell by cell, possibly while other jobs shared it: they are a record, not "
        "a speed comparison (that is `benchmarks/`, ratios from one run on an idle machine).",
        "",
    ]
    atomic_write_json(
        outdir / "results.json",
        {
            "summary": summary,
            "rows": rows,
            "claims": claims,
            "tests": {k: (asdict(v) if v is not None else None) for k, v in tests.items()},
            "train": train_cells,
            "task_level": tl_cells,
            "perplexity": ppl_rows,
            "heldout_ce": ce_rows,
            "ablation": loco_summary,
        },
    )
    return atomic_write_text(outdir / "report.md", "\n".join(lines))
