import json

import numpy as np
import torch

from manyicl.config import EvalConfig, load_config
from manyicl.evaluate import evaluate, prepare_task, shot_plan

from conftest import toy_task


def _cfg(tmp_path, *extra):
    return load_config(
        EvalConfig,
        None,
        [
            f"output_dir={tmp_path}",
            "model.name_or_path=tiny-random-llama",
            "model.dtype=float32",
            "max_length=400",
            "shots=[0,1,2,64,max]",
            "seeds=[0,1]",
            "max_queries=6",
            "progress=false",
            *extra,
        ],
    )


def test_eval_writes_reports_and_a_nested_shot_curve(tmp_path, tok, model):
    cfg = _cfg(tmp_path, "save_prompt_caches=true")
    res = evaluate(cfg, model=model, tokenizer=tok, tasks=[toy_task(60)])
    for f in ("results.json", "results.csv", "report.md", "plots/toy.png", "config.yaml"):
        assert (tmp_path / f).exists(), f
    rows = res.rows
    assert {r["seed"] for r in rows} == {0, 1}
    for seed in (0, 1):
        mine = sorted((r for r in rows if r["seed"] == seed), key=lambda r: r["shots"])
        assert [r["shots_requested"] for r in mine][:3] == ["0", "1", "2"]
        assert "64" not in {r["shots_requested"] for r in mine}  # does not fit: dropped, not clamped
        mx = next(r for r in mine if r["shots_requested"] == "max")
        assert mx["shots"] == mx["max_shots_fit"] > 2
        toks = [r["prompt_tokens"] for r in mine]
        assert toks == sorted(toks)
        assert mx["prompt_tokens"] <= cfg.max_length
    (s,) = res.summary
    assert s["best"] == max(c["mean"] for c in s["curve"])
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["summary"][0]["task"] == "toy"
    assert res.cache_timing and res.cache_timing[0]["load_s"] > 0
    assert "Table 4" in (tmp_path / "report.md").read_text()


def test_eval_accuracy_equals_scoring_by_full_recomputation(tmp_path, tok, model):
    """The cached, batched, trie-based path picks the same options as naive full forward passes."""
    cfg = _cfg(tmp_path, "shots=[3]", "seeds=[0]")
    task = toy_task(60)
    res = evaluate(cfg, model=model, tokenizer=tok, tasks=[task])
    (row,) = res.rows
    pt = prepare_task(task, tok, cfg)
    order, plan, _ = shot_plan(pt, cfg, 0)
    prompt = pt.demos.header.tolist()
    for i in order[:3]:
        prompt += pt.demos.example_ids(int(i))[0].tolist()
    correct = 0
    for q in pt.queries:
        lls = []
        for o in q.option_ids:
            ids = prompt + q.ids + o
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
            start = len(prompt) + len(q.ids)
            lls.append(sum(float(logp[t - 1, ids[t]]) for t in range(start, len(ids))))
        correct += q.options[int(np.argmax(lls))] == q.example.output
    assert row["score"] == correct / len(pt.queries)


def test_eval_compares_base_and_adapter_and_restores_the_base(tmp_path, tok):
    from manyicl.config import TrainConfig
    from manyicl.data import build_training_data
    from manyicl.modeling import tiny_model
    from manyicl.train import prepare_model, train

    tcfg = load_config(
        TrainConfig,
        "tiny",
        [f"output_dir={tmp_path / 'train'}", "progress=false", "train.max_steps=2", "train.save_every=0"],
    )
    m, t = prepare_model(tcfg)
    tres = train(tcfg, data=build_training_data([toy_task(60)], t, tcfg.data), model=m, tokenizer=t)
    base = tiny_model(len(tok)).eval()
    cfg = _cfg(tmp_path / "eval", "shots=[0,2]", "seeds=[0]")
    cfg.adapters = {"base": None, "tuned": str(tres.final_dir), "base_again": None}
    res = evaluate(cfg, model=base, tokenizer=tok, tasks=[toy_task(60)])
    by = {(r["model"], r["shots"]): r["score"] for r in res.rows}
    assert {m for m, _ in by} == {"base", "tuned", "base_again"}
    assert all(by[("base", k)] == by[("base_again", k)] for k in (0, 2))


def test_best_max_table_bolds_the_winner_only():
    from manyicl.report import best_max_table

    def s(model, task, best, at_max):
        return {"model": model, "task": task, "best": best, "at_max": at_max}

    table = best_max_table(
        [s("a", "t1", 0.5, 0.4), s("b", "t1", 0.7, 0.6), s("a", "t2", 0.3, 0.3), s("b", "t2", 0.3, 0.3)]
    )
    assert "**0.700 / 0.600**" in table and "**0.500" not in table
    assert "**" not in table.splitlines()[2].split("|")[3]  # a tie on t2: no winner
    only_b = best_max_table(
        [s("a", "t1", 0.9, 0.9), s("b", "t1", 0.7, 0.6), s("c", "t1", 0.1, 0.1)], bold_among=["b", "c"]
    )
    assert "**0.700 / 0.600**" in only_b and "**0.900" not in only_b
