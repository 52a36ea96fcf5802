"""The experiment runner end to end on the tiny model: every method, ablation, perplexity, resume."""

import json
from dataclasses import replace

import pytest

from manyicl.cli import main
from manyicl.config import ExperimentConfig, load_config
from manyicl.experiment import Cells, experiment
from manyicl.session import ModelSession

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


@pytest.mark.slow
def test_experiment_runs_every_cell_writes_a_report_and_resumes(tmp_path, capsys):
    cfg = _cfg(tmp_path)
    res = experiment(cfg)
    text = res.report_path.read_text()
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
    assert res.report_path == out / "report.md" and res.output_dir == out
    finished = res.finished(cfg)  # the cells the report was made from: every cell of the plan
    on_disk = {
        p.relative_to(out / "cells").with_suffix("").as_posix() for p in (out / "cells").rglob("*.json")
    }
    assert set(finished) == set(res.plan.keys(cfg)) == on_disk
    assert finished["train/zero_shot"] == json.loads((out / "cells" / "train" / "zero_shot.json").read_text())
    assert (out / "results.csv").exists() and (out / "plots" / "intent_many_0.png").exists()
    data = json.loads((out / "results.json").read_text())
    # claims are computed verdicts, one of three words, each with its evidence
    assert data["claims"] and all(
        c["verdict"] in ("supported", "contradicted", "not significant", "not run") for c in data["claims"]
    )
    assert "## The paper's claims at this scale (computed)" in text and "[95% CI]" in text
    # one claim per shot count (a joint verdict hid a few-shot gain behind a 0-shot tie)
    claims = {c["claim"] for c in data["claims"]}
    assert "Many-shot FT also beats no fine-tuning at 0 shots" in claims
    grid = [k for k in cfg.eval.shots if k not in ("max", 0, cfg.few_shot_k)]
    assert grid and all(f"Many-shot FT also beats no fine-tuning at {k} shots" in claims for k in grid)
    assert not any("0 and few" in c for c in claims)
    # the dtype the training recorded, and what the finished cells cost
    dtypes = {c["summary"]["dtype"] for c in data["train"].values()}
    assert len(dtypes) == 1 and f"trained in {dtypes.pop()};" in text
    assert "Compute: " in text and " h of cell wall time" in text and "record it" not in text
    assert "## Evaluation cost at max shots" in text and "h of prompt prefill" in text
    from manyicl.evaluate import load_predictions

    preds = load_predictions(out / "predictions.jsonl.gz")
    assert {p["model"] for p in preds} >= set(cfg.methods)
    # the experiment reports the model that actually ran
    ecfg = (out / "eval_runs" / "eval__no_ft__intent_many_0" / "config.yaml").read_text()
    assert "tiny-random-llama" in ecfg
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


def test_budgets_give_every_method_the_same_steps_or_tokens(tmp_path):
    from manyicl.experiment import Context, _loop_cfg, _method_data_cfg

    cfg = _cfg(tmp_path, "budget=equal_tokens", "budget_tokens=3000")
    ctx = Context(cfg, tmp_path, Cells(tmp_path), None, [], [])
    for m in ("zero_shot", "few_shot_all", "many_shot_last", "many_shot_all"):
        d = _method_data_cfg(ctx, m, 3)
        assert d.tokens_per_task == 1000 and d.supervised_examples_per_task == 0
        assert _loop_cfg(ctx, m).epochs == cfg.epochs
    cfg = _cfg(tmp_path, "budget=equal_steps", "budget_steps=7")
    ctx = Context(cfg, tmp_path, Cells(tmp_path), None, [], [])
    for m in ("zero_shot", "many_shot_all"):
        loop = _loop_cfg(ctx, m)
        assert loop.max_steps == 7 and loop.epochs == 0
    assert _loop_cfg(ctx, "task_level").epochs == cfg.epochs  # task-level FT has its own budget


@pytest.mark.slow
def test_equal_tokens_experiment_logs_validation_and_stops_task_level_early(tmp_path):
    cfg = _cfg(
        tmp_path,
        "methods=[no_ft,zero_shot,many_shot_all,task_level]",
        "budget=equal_tokens",
        "budget_tokens=2400",
        "train.train.eval_every=2",
        "train.train.early_stopping_patience=1",
        "val_windows=2",
        "task_level_examples=40",
        "task_level_dev_examples=8",
        "ablation.categories=[]",
        "run_perplexity=false",
        "heldout_ce_sequences=1",
        "demos_check_tasks=1",
        "demos_check_queries=2",
    )
    experiment(cfg)
    data = json.loads((tmp_path / "exp" / "results.json").read_text())
    tokens = {m: c["summary"]["tokens_processed"] for m, c in data["train"].items()}
    assert max(tokens.values()) / min(tokens.values()) < 1.5, tokens  # the same compute, up to one window
    for c in data["train"].values():
        vc = c["summary"]["val_curve"]
        assert vc[0]["step"] == 0 and vc[-1]["step"] == c["summary"]["steps_run"]
    tl = list(data["task_level"].values())
    assert all(c["summary"]["val_curve"] for c in tl)
    assert set(data["heldout_ce"]) == {"no_ft", "zero_shot", "many_shot_all"}
    text = (tmp_path / "exp" / "report.md").read_text()
    assert "Did training converge?" in text and "Fixed cached prompt vs fresh demonstrations" in text
    built = data["train"]["many_shot_all"]["summary"]["build"]["tokens"]
    assert 2400 <= built < 2400 * 1.1, built  # a task's last max-shot sequence stops at its share
    assert "; measured on the builds: " in text and f"{built:,}" in text


def test_a_heldout_ce_cell_made_for_another_sequence_count_is_redone(tmp_path, tok, model):
    from manyicl.experiment import Context, _ce_cell
    from manyicl.session import ModelSession

    from conftest import toy_task

    cells = Cells(tmp_path)
    session = ModelSession(model, tok, "tiny-random-llama")
    task = toy_task(12, "held")
    cfg = _cfg(tmp_path, "heldout_ce_sequences=1", "train.data.max_length=64")
    ctx = Context(cfg, tmp_path, cells, session, [], [task])
    first = _ce_cell(ctx, "ce/no_ft", None)
    assert first["sequences_per_task"] == 1 and len(first["rows"]) == 1
    stamp = (tmp_path / "cells" / "ce" / "no_ft.json").stat().st_mtime_ns
    assert _ce_cell(ctx, "ce/no_ft", None) == first  # the same count: kept, not redone
    assert (tmp_path / "cells" / "ce" / "no_ft.json").stat().st_mtime_ns == stamp
    cfg2 = _cfg(tmp_path, "heldout_ce_sequences=2", "train.data.max_length=64")
    again = _ce_cell(Context(cfg2, tmp_path, cells, session, [], [task]), "ce/no_ft", None)
    assert again["sequences_per_task"] == 2 and len(again["rows"]) == 2
    assert cells.get("ce/no_ft") == again  # replaced on disk


def test_an_experiment_result_gives_the_finished_cells_of_its_plan(tmp_path):
    from manyicl.experiment import ExperimentResult, Plan

    cfg = _cfg(tmp_path, "ablation.categories=[]")
    plan = Plan(["no_ft", "zero_shot"], ["t"], {}, [])
    cells = Cells(tmp_path)
    cells.put("train/zero_shot", {"final_dir": "x"})
    cells.put("eval/no_ft/t", {"rows": []})
    cells.put("eval/other/t", {"rows": [1]})  # not part of this plan
    res = ExperimentResult(tmp_path / "report.md", tmp_path, plan, cells)
    assert res.finished(cfg) == {"train/zero_shot": {"final_dir": "x"}, "eval/no_ft/t": {"rows": []}}


def test_the_evaluation_cost_table_reads_max_shot_rows_and_saved_caches():
    from manyicl.experiment_report import _eval_cost

    def row(seed, shots="max", prefill=10.0):
        return {"model": "no_ft", "task": "clinc150", "shots_requested": shots, "shots": 1905, "seed": seed,
                "prompt_tokens": 32742, "prefill_s": prefill, "query_s": 3.0, "n_queries": 300, "n_dev": 0}  # fmt: skip

    cells = {
        ("no_ft", "clinc150"): {
            "rows": [row(0, prefill=180.0), row(1, prefill=182.0), row(0, shots="10", prefill=1.0)],
            "cache_timing": [{"model": "no_ft", "task": "clinc150", "file_mb": 207.4, "load_s": 0.27}],
        },
        ("no_ft", "banking77"): None,  # not finished yet
    }
    text = "\n".join(_eval_cost(cells))
    assert "| no_ft | clinc150 | 1905 | 32,742 | 181.0 | 10 | 207 | 0.27 |" in text  # 6 s / 600 queries
    assert "0.10 h of prompt prefill" in text and "(3 points)" in text
    assert _eval_cost({("no_ft", "x"): None}) == []


def test_a_budget_below_one_window_per_task_warns_before_training(tmp_path, caplog):
    import logging

    from manyicl.experiment import Context, _method_data_cfg

    cfg = _cfg(tmp_path, "budget=equal_tokens", "budget_tokens=300")
    ctx = Context(cfg, tmp_path, Cells(tmp_path), None, [], [])
    with caplog.at_level(logging.WARNING, logger="manyicl.experiment"):
        _method_data_cfg(ctx, "many_shot_all", 3)
        _method_data_cfg(ctx, "few_shot_all", 3)  # short sequences: nothing is cut
    (msg,) = [r.getMessage() for r in caplog.records]
    assert (
        "many_shot_all" in msg
        and "100 tokens" in msg
        and f"budget_tokens >= {3 * cfg.train.data.max_length}" in msg
    )
    caplog.clear()
    Cells(tmp_path).put("train/many_shot_all", {"final_dir": "x"})
    with caplog.at_level(logging.WARNING, logger="manyicl.experiment"):
        _method_data_cfg(ctx, "many_shot_all", 3)  # already trained: nothing to warn about
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="manyicl.experiment"):
        _method_data_cfg(ctx, "many_shot_all", 3, key="loco/cls/train/many_shot_all")  # its own cell: to do
    assert len(caplog.records) == 1


def test_the_evaluation_cost_table_falls_back_to_the_runs_own_cache_timings(tmp_path):
    from manyicl.experiment_report import _eval_cost, _run_cache_timing

    run = tmp_path / "eval_runs" / "eval__no_ft__clinc150"
    run.mkdir(parents=True)
    timing = {"model": "no_ft", "task": "clinc150", "file_mb": 207.4, "load_s": 0.27}
    (run / "results.json").write_text(json.dumps({"prompt_cache_timing": [timing]}))
    (tmp_path / "eval_runs" / "torn").mkdir()
    (tmp_path / "eval_runs" / "torn" / "results.json").write_text("{")  # unreadable: skipped
    assert _run_cache_timing(tmp_path) == [timing]
    row = {"model": "no_ft", "task": "clinc150", "shots_requested": "max", "shots": 9, "seed": 0,
           "prompt_tokens": 99, "prefill_s": 1.0, "query_s": 1.0, "n_queries": 10, "n_dev": 0}  # fmt: skip
    text = "\n".join(_eval_cost({("no_ft", "clinc150"): {"rows": [row]}}, _run_cache_timing(tmp_path)))
    assert "| 207 | 0.27 |" in text


def test_evaluation_scores_weights_loaded_in_float32_not_bf16_weights_upcast(tmp_path):
    """On a CPU with native bf16, `dtype: auto` trains in bf16; scoring then upcast bf16-rounded weights,
    so the same study gave other scores on an AVX2 machine. The base is loaded again in float32."""
    import torch

    from manyicl.evaluate import load_dtype
    from manyicl.experiment import Context, _load_for_scoring
    from manyicl.modeling import load_model

    cfg = _cfg(tmp_path, "train.model.dtype=bfloat16", "eval.scoring.dtype=float32")
    assert load_dtype(cfg.eval) == "float32"
    assert load_dtype(_cfg(tmp_path, "eval.model.dtype=bfloat16", "eval.scoring.dtype=bfloat16").eval) == (
        "bfloat16"
    )
    ctx = Context(cfg, tmp_path, Cells(tmp_path), ModelSession.load(cfg.train.model), [], [])
    tok = ctx.tokenizer
    _load_for_scoring(ctx)
    got = next(ctx.model.parameters())
    assert got.dtype == torch.float32 and ctx.tokenizer is tok
    fp32, _ = load_model(replace(cfg.train.model, dtype="float32"))
    assert torch.equal(got, next(fp32.parameters()))  # not the bf16 values upcast
    assert not torch.equal(got, got.to(torch.bfloat16).float())
    before = ctx.session
    _load_for_scoring(ctx)  # already float32: kept
    assert ctx.session is before
