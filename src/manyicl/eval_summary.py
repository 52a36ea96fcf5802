"""Evaluation summaries: per-query score matrices and the per-(model, task) curve with 95% intervals,
the dev-selected best shot count (scored on test) and the score at max shots."""

from __future__ import annotations

import statistics

import numpy as np


def query_matrix(preds: list[dict], model: str, task: str, shots_label: str, split: str = "test"):
    """Per-query scores of one curve point as [queries, seeds] (queries sorted by index), and the seeds."""
    cells: dict[tuple[int, int], float] = {}
    for p in preds:
        if (
            p["model"] == model
            and p["task"] == task
            and p["shots_requested"] == shots_label
            and p["split"] == split
        ):
            cells[(p["query"], p["seed"])] = p["score"]
    queries = sorted({q for q, _ in cells})
    seeds = sorted({s for _, s in cells})
    mat = np.full((len(queries), len(seeds)), np.nan)
    qi, si = {q: i for i, q in enumerate(queries)}, {s: i for i, s in enumerate(seeds)}
    for (q, s), v in cells.items():
        mat[qi[q], si[s]] = v
    return mat, queries, seeds


def summarize(
    rows: list[dict], preds: list[dict] | None = None, task_info: list[dict] | None = None
) -> list[dict]:
    """Per (model, task): the curve (mean, 95% interval over queries, std over seeds when >= 2 seeds),
    the shot count chosen on dev queries with its test score ("best"), and the score at max shots."""
    from .stats import score_ci

    preds = preds or []
    info = {t["task"]: t for t in task_info or []}
    groups: dict[tuple[str, str], dict[str, list[dict]]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["task"]), {}).setdefault(r["shots_requested"], []).append(r)
    out = []
    for (model, task), by_shot in groups.items():
        curve = []
        for shot_label, rs in by_shot.items():
            vals = [r["score"] for r in rs]
            mat, _, _ = query_matrix(preds, model, task, shot_label)
            point = {
                "shots_requested": shot_label,
                "shots": float(np.mean([r["shots"] for r in rs])),
                "mean": float(np.mean(vals)),
                "std": float(statistics.pstdev(vals)) if len(vals) > 1 else None,
                "seeds": len(vals),
                "n": int(rs[0]["n_queries"]),
                "lo": None,
                "hi": None,
                "dev_mean": (
                    float(np.mean([r["dev_score"] for r in rs]))
                    if rs[0].get("dev_score") is not None
                    else None
                ),
            }
            if mat.size and not np.isnan(mat).any():
                ci = score_ci(mat if mat.shape[1] > 1 else mat[:, 0])
                point["lo"], point["hi"], point["ci"] = ci.lo, ci.hi, ci.method
            curve.append(point)
        curve.sort(key=lambda c: (c["shots"], c["shots_requested"] == "max"))
        at_max = next((c for c in curve if c["shots_requested"] == "max"), curve[-1])
        with_dev = [c for c in curve if c["dev_mean"] is not None]
        # "best over shots": the shot count with the best dev score (ties: fewer shots), scored on test
        best = max(with_dev, key=lambda c: (c["dev_mean"], -c["shots"])) if with_dev else None
        first = next(iter(by_shot.values()))[0]
        t = info.get(task, {})
        out.append(
            {
                "model": model,
                "task": task,
                "family": first["family"],
                "category": first["category"],
                "metric": first["metric"],
                "curve": curve,
                "best": best["mean"] if best else None,
                "best_lo": best["lo"] if best else None,
                "best_hi": best["hi"] if best else None,
                "best_shots": best["shots"] if best else None,
                "best_label": best["shots_requested"] if best else None,
                "at_max": at_max["mean"],
                "at_max_lo": at_max["lo"],
                "at_max_hi": at_max["hi"],
                "max_shots": at_max["shots"],
                "n": at_max["n"],
                "majority": (t.get("majority") or {}).get("share"),
                "truncated_queries": t.get("truncated_queries", 0),  # inputs cut to fit: scored shortened
            }
        )
    return out


def zero_shot_point(summary_row: dict) -> dict | None:
    """The 0-shot point of a summary row's curve, if it was evaluated (the many-shot gain's baseline)."""
    return next((c for c in summary_row.get("curve", []) if c.get("shots_requested") in (0, "0")), None)
