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


def test_per_task_shot_tests_pair_the_same_queries_and_seeds():
    # 0 shots: ours right on 30 of 40 queries the base gets wrong (McNemar, one seed); 10 shots: identical;
    # max: ours wrong everywhere the base is right, over two seeds (sign-flip test).
    from manyicl.experiment_report import _task_shot_tests

    n = 40
    preds = (
        _preds("many_shot_all", "a", "0", [1.0] * 30 + [0.0] * 10)
        + _preds("no_ft", "a", "0", [0.0] * n)
        + _preds("many_shot_all", "a", "10", [1.0, 0.0] * (n // 2))
        + _preds("no_ft", "a", "10", [1.0, 0.0] * (n // 2))
        + [p for seed in (0, 1) for p in _preds("many_shot_all", "a", "max", [0.0] * n, seed=seed)]
        + [p for seed in (0, 1) for p in _preds("no_ft", "a", "max", [1.0] * n, seed=seed)]
    )
    text = _task_shot_tests(Outcomes(preds), "a", ["0", "1", "10", "max"])
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines()[2:]}
    assert set(rows) == {"0", "10", "max"}  # no 1-shot outcomes: no row
    assert "+0.750" in rows["0"] and "mcnemar_exact" in rows["0"] and rows["0"].endswith("| better |")
    assert "+0.000" in rows["10"] and rows["10"].endswith("| not significant |")
    assert "-1.000" in rows["max"] and "permutation" in rows["max"] and rows["max"].endswith("| worse |")
    assert _task_shot_tests(Outcomes(preds), "b", ["0", "max"]) == ""
