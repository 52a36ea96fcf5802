"""The experiment report's paired-test tables, on hand-made per-query outcomes."""

from __future__ import annotations

from manyicl.claims import Outcomes
from manyicl.experiment_report import _tests_table


def _preds(model, task, shots, scores, seed=0):
    return [
        {"model": model, "task": task, "shots_requested": shots, "query": q, "seed": seed, "score": s}
        for q, s in enumerate(scores)
    ]


def test_per_task_tests_at_the_dev_chosen_shot_count_are_counted():
    # task a: ours right on every query at its dev-chosen k (max), the other wrong at its own (5);
    # task b: no difference. At the chosen k, one task is significantly better, none worse.
    n = 40
    preds = (
        _preds("ours", "a", "max", [1.0] * n)
        + _preds("ours", "a", "5", [0.0] * n)
        + _preds("other", "a", "5", [0.0] * n)
        + _preds("other", "a", "max", [1.0] * n)
        + _preds("ours", "b", "max", [1.0, 0.0] * (n // 2))
        + _preds("other", "b", "max", [1.0, 0.0] * (n // 2))
    )
    summary = [
        {"model": "ours", "task": "a", "best_label": "max"},
        {"model": "other", "task": "a", "best_label": "5"},
        {"model": "ours", "task": "b", "best_label": "max"},
        {"model": "other", "task": "b", "best_label": "max"},
    ]
    text, recs = _tests_table(Outcomes(preds), summary, "ours", ["other"], ["a", "b"], "best")
    assert len(recs[0]["per_task"]) == 2
    assert "| 1 / 0 of 2 |" in text
    # at max shots the same data show no per-task difference (both right on task a)
    text_max, _ = _tests_table(Outcomes(preds), summary, "ours", ["other"], ["a", "b"], "max")
    assert "| 0 / 0 of 2 |" in text_max
