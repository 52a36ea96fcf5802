import json

import numpy as np
import pytest
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
        # 0 shots has no demonstrations: scored once, with the first seed
        assert [r["shots_requested"] for r in mine][:3] == (
            ["0", "1", "2"] if seed == 0 else ["1", "2", "max"]
        )
        assert "64" not in {r["shots_requested"] for r in mine}  # does not fit: dropped, not clamped
        mx = next(r for r in mine if r["shots_requested"] == "max")
        assert mx["shots"] == mx["max_shots_fit"] > 2
        toks = [r["prompt_tokens"] for r in mine]
        assert toks == sorted(toks)
        assert mx["prompt_tokens"] <= cfg.max_length
    (s,) = res.summary
    # "best" is the test score at the shot count with the best DEV score, not a max over test points
    chosen = max(s["curve"], key=lambda c: (c["dev_mean"], -c["shots"]))
    assert s["best"] == chosen["mean"] and s["best_shots"] == chosen["shots"]
    for c in s["curve"]:
        assert c["lo"] <= c["mean"] <= c["hi"]
        assert (c["std"] is None) == (c["seeds"] < 2)  # one seed is never shown as +- 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["summary"][0]["task"] == "toy"
    assert res.cache_timing and res.cache_timing[0]["load_s"] > 0
    report = (tmp_path / "report.md").read_text()
    assert "95%" in report and "majority" in report
    preds = [json.loads(x) for x in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == sum(r["n_queries"] + r["n_dev"] for r in rows)
    assert {"model", "task", "seed", "shots", "query", "gold", "prediction", "score", "correct"} <= set(
        preds[0]
    )
    for r in rows:  # every row's score is the mean of its saved test predictions
        mine = [
            p["score"]
            for p in preds
            if p["seed"] == r["seed"]
            and p["shots_requested"] == r["shots_requested"]
            and p["split"] == "test"
        ]
        assert len(mine) == r["n_queries"] and abs(np.mean(mine) - r["score"]) < 1e-12


def test_eval_accuracy_equals_scoring_by_full_recomputation(tmp_path, tok, model):
    """The cached, batched, trie-based path picks the same options as naive full forward passes."""
    cfg = _cfg(tmp_path, "shots=[3]", "seeds=[0]")
    task = toy_task(60)
    res = evaluate(cfg, model=model, tokenizer=tok, tasks=[task])
    (row,) = res.rows
    pt = prepare_task(task, tok, cfg)
    plan, _ = shot_plan(pt, cfg, 0)
    prompt = pt.demos.header.tolist()
    for i in plan["3"]:
        prompt += pt.demos.example_ids(int(i))[0].tolist()
    correct = 0
    for q in pt.queries[: pt.n_test]:
        lls = []
        for o in q.option_ids:
            ids = prompt + q.ids + o
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
            start = len(prompt) + len(q.ids)
            lls.append(sum(float(logp[t - 1, ids[t]]) for t in range(start, len(ids))))
        correct += q.options[int(np.argmax(lls))] == q.example.output
    assert row["score"] == correct / pt.n_test


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


def test_best_max_table_marks_no_winner():
    """Bold winners inside the noise misled readers: significance is the paired tests' job."""
    from manyicl.report import best_max_table

    def s(model, task, best, at_max):
        return {"model": model, "task": task, "best": best, "at_max": at_max}

    table = best_max_table([s("a", "t1", 0.5, 0.4), s("b", "t1", 0.7, 0.6)])
    assert "0.700 / 0.600" in table and "**" not in table


def test_every_shot_count_is_its_own_balanced_draw(tmp_path, tok):
    """Each k-shot prompt holds balanced labels in random order; a small prompt is not the (unbalanced)
    prefix of the shuffled max-shot prompt."""
    from collections import Counter

    cfg = _cfg(tmp_path, "shots=[3,6,max]", "seeds=[0,1,2]")
    pt = prepare_task(toy_task(90), tok, cfg)
    prefix_equal = 0
    for seed in (0, 1, 2):
        plan, n_fit = shot_plan(pt, cfg, seed)
        assert len(plan["max"]) == n_fit
        for label in ("3", "6"):
            labs = Counter(pt.demos.label_ids[plan[label]].tolist())
            assert max(labs.values()) - min(labs.get(c, 0) for c in range(3)) <= 1
            prefix_equal += np.array_equal(plan[label], plan["max"][: len(plan[label])])
    assert prefix_equal < 3


def test_train_test_duplicates_are_dropped_and_counted(tmp_path, tok, model):
    from manyicl.tasks import Example

    task = toy_task(60)
    dup = task.splits["train"][5]
    task.splits["test"] = task.splits["test"] + [Example("  " + dup.input.upper() + " ", dup.output)]
    cfg = _cfg(tmp_path, "shots=[0,2]", "seeds=[0]", "max_queries=100", "dev_queries=0")
    pt = prepare_task(task, tok, cfg)
    assert pt.duplicates == {"inputs": 1, "queries_dropped": 1, "demos_dropped": 1}
    assert all(q.example.input.strip().lower() != dup.input.lower() for q in pt.queries)
    assert len(pt.demos.query) == 59
    res = evaluate(cfg, model=model, tokenizer=tok, tasks=[task])
    assert "occur in both the demo and the eval split" in (tmp_path / "report.md").read_text()
    assert res.tasks[0]["duplicates"]["queries_dropped"] == 1


def test_scoring_defaults_to_float32_on_cpu_and_restores_the_model(tmp_path, tok):
    from manyicl.modeling import tiny_model

    m = tiny_model(len(tok)).eval().to(torch.bfloat16)
    cfg = _cfg(tmp_path, "shots=[0,2]", "seeds=[0]", "model.dtype=bfloat16")
    res = evaluate(cfg, model=m, tokenizer=tok, tasks=[toy_task(60)])
    assert res.scoring_dtype == "float32"
    assert next(m.parameters()).dtype == torch.bfloat16
    assert "scoring in float32" in (tmp_path / "report.md").read_text()


def test_per_query_demos_draw_fresh_prompts(tmp_path, tok, model):
    cfg = _cfg(tmp_path, "shots=[0,3]", "seeds=[0]", "demos=per_query", "dev_queries=2")
    res = evaluate(cfg, model=model, tokenizer=tok, tasks=[toy_task(60)])
    fixed = evaluate(
        _cfg(tmp_path / "fixed", "shots=[0,3]", "seeds=[0]", "dev_queries=2"),
        model=model,
        tokenizer=tok,
        tasks=[toy_task(60)],
    )
    by = {r["shots"]: r for r in res.rows}
    assert by[0]["score"] == {r["shots"]: r for r in fixed.rows}[0]["score"]  # no demos: identical
    assert by[3]["prefill_s"] > 0 and by[3]["demos"] == "per_query"
    from manyicl.evaluate import per_query_demos

    pt = prepare_task(toy_task(60), tok, cfg)
    draws = {tuple(per_query_demos(pt, cfg, 0, 3, q).tolist()) for q in range(len(pt.queries))}
    assert len(draws) > 1


def test_an_interrupted_evaluation_resumes_its_finished_points(tmp_path, tok, model, monkeypatch):
    import manyicl.evaluate as ev
    from manyicl.errors import ConfigError

    cfg = _cfg(tmp_path / "a", "shots=[0,2,max]", "seeds=[0,1]")
    full = evaluate(cfg, model=model, tokenizer=tok, tasks=[toy_task(60)])

    real, calls = ev.score_queries, {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # Ctrl-C / a kill in the middle of the curve
        return real(*a, **k)

    monkeypatch.setattr(ev, "score_queries", flaky)
    cfg_b = _cfg(tmp_path / "b", "shots=[0,2,max]", "seeds=[0,1]")
    with pytest.raises(KeyboardInterrupt):
        evaluate(cfg_b, model=model, tokenizer=tok, tasks=[toy_task(60)])
    assert len(list((tmp_path / "b" / "points").rglob("*.json"))) == 3 + 1  # 3 points + settings
    with pytest.raises(ConfigError, match="resume=true"):
        evaluate(cfg_b, model=model, tokenizer=tok, tasks=[toy_task(60)])
    calls["n"] = -100
    cfg_b.resume = True
    res = evaluate(cfg_b, model=model, tokenizer=tok, tasks=[toy_task(60)])
    assert calls["n"] == -100 + 2  # only the two missing points were scored
    key = lambda r: (r["seed"], r["shots_requested"])  # noqa: E731
    assert sorted((key(r), r["score"]) for r in res.rows) == sorted((key(r), r["score"]) for r in full.rows)
    assert len(res.predictions) == len(full.predictions)
    other = _cfg(tmp_path / "b", "shots=[0,2,max]", "seeds=[0,1]", "max_queries=4", "resume=true")
    with pytest.raises(ConfigError, match="other settings") as e:
        evaluate(other, model=model, tokenizer=tok, tasks=[toy_task(60)])
    assert "max_queries" in str(e.value)  # the refusal names what changed
    other.resume, other.overwrite = False, True
    res = evaluate(other, model=model, tokenizer=tok, tasks=[toy_task(60)])
    assert all(r["n_queries"] == 4 for r in res.rows)


def test_a_refused_evaluation_leaves_nothing_behind(tmp_path, tok, model, monkeypatch):
    import manyicl.evaluate as ev
    from manyicl.errors import ManyICLError

    def refuse(*a, **k):
        raise ManyICLError("evaluation needs about 999 MB")

    monkeypatch.setattr(ev, "eval_guard", refuse)
    with pytest.raises(ManyICLError):
        evaluate(_cfg(tmp_path), model=model, tokenizer=tok, tasks=[toy_task(60)])
    assert not (tmp_path / "config.yaml").exists() and not (tmp_path / "points").exists()


def test_an_adapter_changes_the_scores_and_the_base_comes_back(tmp_path, tok):
    """Guards the mutation 'evaluate never loads (or never unloads) the adapter'."""
    from manyicl.config import LoraConfig
    from manyicl.modeling import apply_lora, tiny_model

    peft_model = apply_lora(tiny_model(len(tok)), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 2.0)  # a strong, non-zero adapter
    peft_model.save_pretrained(tmp_path / "adapter")
    base = tiny_model(len(tok)).eval()
    cfg = _cfg(tmp_path / "eval", "shots=[0,2]", "seeds=[0]", "max_queries=10")
    cfg.adapters = {"base": None, "tuned": str(tmp_path / "adapter"), "base_again": None}
    res = evaluate(cfg, model=base, tokenizer=tok, tasks=[toy_task(60)])
    pred = {}
    for p in res.predictions:
        pred.setdefault(p["model"], []).append((p["shots"], p["query"], p["split"], p["option_scores"]))
    assert pred["base"] == pred["base_again"]  # the base model is restored after the adapter
    assert pred["tuned"] != pred["base"]  # the adapter was really used
    assert not any("lora" in n for n, _ in base.named_parameters())


def test_a_damaged_adapter_is_refused_before_anything_is_written(tmp_path, tok, model):
    """The refusal names adapters.LABEL, leaves no points/settings.json, and the fixed rerun is not
    taken for a resume of the refused one."""
    from manyicl.config import LoraConfig
    from manyicl.errors import ConfigError
    from manyicl.modeling import apply_lora, tiny_model

    apply_lora(tiny_model(len(tok)), LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(
        tmp_path / "ad"
    )
    w = tmp_path / "ad" / "adapter_model.safetensors"
    good = w.read_bytes()
    w.write_bytes(good[:64])  # a copy cut short
    cfg = _cfg(tmp_path / "eval", "shots=[0]", "seeds=[0]", "max_queries=3")
    cfg.adapters = {"base": None, "tuned": str(tmp_path / "ad")}
    with pytest.raises(ConfigError, match=r"adapters\.tuned.*unreadable"):
        evaluate(cfg, model=model, tokenizer=tok, tasks=[toy_task(60)])
    assert sorted(x.name for x in (tmp_path / "eval").iterdir()) == [".manyicl.lock"]
    w.write_bytes(good)
    res = evaluate(cfg, model=model, tokenizer=tok, tasks=[toy_task(60)])
    assert {r["model"] for r in res.rows} == {"base", "tuned"}


def test_truncated_queries_are_counted_and_warned_about(tmp_path, tok, model, caplog):
    from manyicl.tasks import Example

    task = toy_task(60)
    task.splits["test"] = task.splits["test"][:4] + [Example("word " * 300, "red")]
    cfg = _cfg(tmp_path, "shots=[0]", "seeds=[0]", "max_queries=5", "dev_queries=0")
    with caplog.at_level("WARNING", logger="manyicl.shots"):
        res = evaluate(cfg, model=model, tokenizer=tok, tasks=[task])
    assert res.tasks[0]["truncated_queries"] == 1 and res.summary[0]["truncated_queries"] == 1
    assert "toy: 1 of 5 queries cut" in caplog.text
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["tasks"][0]["truncated_queries"] == 1


def _overlong_folder(tmp_path, test_lines: list[str]):
    from manyicl.tasks import load_task_dir

    d = tmp_path / "long_query"
    d.mkdir()
    (d / "task.yaml").write_text("category: cls\nlabels: [a, b]\n")
    train = [json.dumps({"input": f"short {i}", "output": "ab"[i % 2]}) for i in range(8)]
    (d / "train.jsonl").write_text("\n".join(train) + "\n")
    (d / "test.jsonl").write_text("\n".join(test_lines) + "\n")
    return d, load_task_dir(d)


def test_an_overlong_query_is_named_by_its_file_and_line(tmp_path, tok):
    """on_overlong=error names the query's file:line (line 3: the first test line, a copy of a train
    input, is dropped as a duplicate, so the query is the second one evaluated), and eval's own key."""
    from manyicl.errors import ManyICLError

    lines = [
        json.dumps({"input": "short 0", "output": "a"}),
        json.dumps({"input": "q 1", "output": "b"}),
        json.dumps({"input": "word " * 200, "output": "a"}),
    ]
    d, task = _overlong_folder(tmp_path, lines)
    cfg = _cfg(tmp_path, "max_length=128", "on_overlong=error", "dev_queries=0", "shots=[0]")
    with pytest.raises(ManyICLError) as e:
        prepare_task(task, tok, cfg)
    assert str(e.value) == (
        f"{d / 'test.jsonl'}:3: a test query of task long_query does not fit in half of max_length 128 "
        "(64 tokens for query + answer); set on_overlong to skip or truncate_input, or raise max_length"
    )


def test_an_overlong_generated_query_is_named_by_task_split_and_index(tmp_path, tok):
    from manyicl.errors import ManyICLError
    from manyicl.tasks import Example

    task = toy_task(60)
    task.splits["test"] = task.splits["test"][:4] + [Example("word " * 300, "red")]
    cfg = _cfg(tmp_path, "max_length=256", "on_overlong=error", "dev_queries=0", "max_queries=5")
    with pytest.raises(ManyICLError, match=r"^toy/test example 5: a test query of task toy does not fit"):
        prepare_task(task, tok, cfg)


def test_an_overlong_demonstration_names_eval_keys_and_half_the_window(tmp_path, tok):
    """Eval's demonstrations get half the window: the message says so and names eval's ``on_overlong``
    (not training's ``data.on_overlong``), with the demo file and line."""
    from manyicl.tasks import load_task_dir
    from manyicl.templates import OverlongExampleError

    d, task = _overlong_folder(tmp_path, [json.dumps({"input": "q 1", "output": "b"})])
    with (d / "train.jsonl").open("a") as f:
        f.write(json.dumps({"input": "word " * 200, "output": "a"}) + "\n")
    task = load_task_dir(d)
    cfg = _cfg(tmp_path, "max_length=128", "on_overlong=error", "dev_queries=0", "shots=[0]")
    with pytest.raises(OverlongExampleError) as e:
        prepare_task(task, tok, cfg)
    msg = str(e.value)
    assert f"{d / 'train.jsonl'}:9" in msg and "> 64 (half of max_length 128, for a demonstration)" in msg
    assert "set on_overlong to skip" in msg and "data.on_overlong" not in msg


def test_top_k_scoring_gives_the_same_predictions_and_scores(tmp_path, tok, model):
    """scoring.top_k prunes the option search: every prediction, row score and the k best option scores
    equal scoring every option; only the pruned options' scores are missing (null)."""
    labels = (  # byte tokens: a trie of ~90 nodes, more than one search round takes at once
        "crimson apple", "crimson wine", "azure sky", "azure whale", "emerald grass",
        "emerald tea", "golden sun", "golden fish", "silver moon", "silver coin", "x",
    )  # fmt: skip
    task = toy_task(70, labels=labels)
    full = evaluate(_cfg(tmp_path / "all"), model=model, tokenizer=tok, tasks=[task])
    top = evaluate(_cfg(tmp_path / "top", "scoring.top_k=1"), model=model, tokenizer=tok, tasks=[task])
    assert [r["score"] for r in top.rows] == [r["score"] for r in full.rows]
    assert len(top.predictions) == len(full.predictions)
    pruned = 0
    for a, b in zip(full.predictions, top.predictions):
        assert b["prediction"] == a["prediction"] and b["correct"] == a["correct"]
        sa, sb = a["option_scores"], b["option_scores"]
        best = int(np.argmax(sa))
        assert sb[best] == pytest.approx(sa[best], abs=2e-4)
        pruned += sum(v is None for v in sb)
    assert pruned > 0  # the search did cut options
    saved = [json.loads(x) for x in (tmp_path / "top" / "predictions.jsonl").read_text().splitlines()]
    assert any(None in p["option_scores"] for p in saved)


def test_top_k_must_be_positive(tmp_path):
    from manyicl.errors import ConfigError

    with pytest.raises(ConfigError, match="scoring.top_k"):
        _cfg(tmp_path, "scoring.top_k=0")
