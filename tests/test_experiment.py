"""The experiment runner end to end on the tiny model: every method, ablation, perplexity, resume."""

import json

from manyicl.cli import main
from manyicl.config import ExperimentConfig, load_config
from manyicl.experiment import Cells, experiment

TINY = [
    "train.model.name_or_path=tiny-random-llama",
    "train.model.dtype=float32",
    "train.lora.r=4",
    "train.data.tasks.synthetic_train_size=40",
    "train.data.tasks.synthetic_test_size=8",
    "train.data.tasks.include=[topic_labels,entail_rules,linear_rule]",
    "train.data.max_length=384",
    "eval.tasks.synthetic_train_size=40",
    "eval.tasks.synthetic_test_size=8",
    "eval.tasks.include=[intent_many,numeric_compare]",
    "eval.max_length=384",
    "eval.max_queries=3",
    "eval.scoring.max_new_tokens=4",
    "supervised_examples_per_task=6",
    "task_level_examples=6",
    "perplexity.n_books=1",
    "perplexity.context_lengths=[16,32]",
    "perplexity.tokens_per_length=64",
]


def _cfg(tmp_path, *extra):
    books = tmp_path / "books"
    books.mkdir(exist_ok=True)
    (books / "b.txt").write_text("It was a dark and stormy night. " * 60)
    return load_config(
        ExperimentConfig,
        "experiment_quick",
        [f"output_dir={tmp_path / 'exp'}", f"perplexity.books_dir={books}", *TINY, *extra],
    )


def test_experiment_runs_every_cell_writes_a_report_and_resumes(tmp_path, capsys):
    cfg = _cfg(tmp_path)
    report = experiment(cfg)
    text = report.read_text()
    for needle in (
        "Table 4",
        "Figure 5",
        "Table 5",
        "Tables 10 and 11",
        "Tables 7 and 8",
        "Task-level FT",
        "many_shot_all_without_cls",
    ):
        assert needle in text, needle
    out = tmp_path / "exp"
    assert (out / "results.csv").exists() and (out / "plots" / "intent_many_0.png").exists()
    data = json.loads((out / "results.json").read_text())
    methods = {s["model"] for s in data["summary"]}
    assert methods == set(cfg.methods)
    # every meta-training method got the same supervision
    sup = {m: c["summary"]["build"]["supervised_examples"] for m, c in data["train"].items()}
    assert all(3 * 6 <= n < 3 * 6 * 4 for n in sup.values()), (
        sup
    )  # 3 tasks x 6, plus at most one sequence each
    assert sup["zero_shot"] == sup["few_shot_last"] == sup["many_shot_last"] == 18  # one target per sequence

    # resume: finished cells are not redone; a deleted and an interrupted cell are
    cells = Cells(out)
    before = {p: p.stat().st_mtime_ns for p in (out / "cells").rglob("*.json")}
    redo = out / "cells" / "eval" / "zero_shot" / "numeric_compare_0.json"
    redo.unlink()
    lock = out / "cells" / "ppl" / "no_ft.running"
    (out / "cells" / "ppl" / "no_ft.json").unlink()
    lock.write_text("999999999 0\n")  # a process that no longer exists
    assert cells.state("ppl/no_ft") == "interrupted"
    assert (
        main(
            [
                "-q",
                "experiment",
                "experiment_quick",
                f"output_dir={out}",
                f"perplexity.books_dir={tmp_path / 'books'}",
                *TINY,
                "--status",
            ]
        )
        == 0
    )
    view = capsys.readouterr().out
    assert "✗" in view and "interrupted" in view
    experiment(cfg)
    after = {p: p.stat().st_mtime_ns for p in (out / "cells").rglob("*.json")}
    changed = {p.relative_to(out / "cells").as_posix() for p in after if before.get(p) != after[p]}
    assert changed == {"eval/zero_shot/numeric_compare_0.json", "ppl/no_ft.json"}
    assert not lock.exists()
