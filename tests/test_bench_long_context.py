"""The long-context benchmark end to end on the tiny random models (``--tiny``), and its report section."""

from __future__ import annotations

import json

import pytest


def _run(tmp_path, monkeypatch, load_file, args: list[str]) -> dict:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "long_context.json"
    assert load_file("benchmarks/bench_long_context.py").main(["--tiny", *args, "--out", str(out)]) == 0
    return json.loads(out.read_text())


def _check_rows(res: dict, queries: int) -> None:
    assert res["tiny"] and res["task"]["labels"] == 150
    assert all(m["status"] == "ok" for m in res["models"])
    for r in res["rows"]:
        assert r["shots"] >= 1 and 0 < r["prompt_tokens"] <= r["context"]
        assert r["prefill_s"] > 0 and r["prefill_tokens_per_s"] > 0 and r["prefill_runs"] == 1
        assert r["options"] == 150 and r["queries_run"] == queries
        for arm in ("score_all", "best_options"):
            a = r[arm]
            assert len(a["per_query_s"]) == a["n"] == queries
            lo, hi = a["ci95_s"]
            assert lo <= a["mean_s"] <= hi
        assert r["agreement"] == 1.0
        assert all(q["pred_all"] == q["pred_best"] and q["top_lp_diff"] < 1e-3 for q in r["queries"])
        assert r["cache"]["file_mb"] > 0 and r["cache"]["loaded_max_abs_diff"] < 1e-4
        if r["model"] == "tiny-random-gemma3":  # the prompt runs past the 16-token sliding window
            assert r["sliding_window"] == 16 and r["prompt_tokens"] > 16
    lm_rows = [r for r in res["rows"] if "lmeval_style" in r]
    assert bool(lm_rows) == res["lmeval_reached"]
    for r in lm_rows:
        lm = r["lmeval_style"]
        assert r["shots"] >= res["settings"]["lmeval_shots"]
        assert lm["extrapolated"] is True and lm["forward_runs"] == 1 and lm["n_options"] == 150
        assert lm["s_per_query"] == pytest.approx(lm["n_options"] * lm["forward_s"])
        assert (
            lm["forward_vs_cached_abs_diff"] < 1e-3
        )  # the uncached pass scores the option as the cache does
        lo, hi = lm["ratio_vs_score_all_ci95"]
        assert lo <= lm["ratio_vs_score_all"] <= hi


def test_one_tiny_level_and_the_run_py_section_render_from_the_json(tmp_path, monkeypatch, capsys, load_file):
    res = _run(
        tmp_path,
        monkeypatch,
        load_file,
        ["--models", "tiny-random-gemma3", "--contexts", "512", "--queries", "2"],
    )
    assert [(r["model"], r["context"]) for r in res["rows"]] == [("tiny-random-gemma3", 512)]
    _check_rows(res, 2)
    assert res["lmeval_reached"]
    assert "(extrapolated)" in capsys.readouterr().out
    # benchmarks/run.py renders section f. from the loaded JSON alone
    run = load_file("benchmarks/run.py")
    section = "\n".join(run.long_context_section(res))
    assert section.startswith("## f. Long context: prefill and per-query cost at 2K/8K/32K")
    assert "| tiny-random-gemma3 | 512 |" in section and "(extrapolated)" in section
    assert "long_context" in run.STEPS
    # no configuration at the threshold: the section says so instead of a table
    res["settings"]["lmeval_shots"] = 1000
    del res["rows"][0]["lmeval_style"]
    assert "No configuration's prompt reached 1,000 shots" in "\n".join(run.long_context_section(res))


@pytest.mark.slow
def test_the_whole_tiny_run(tmp_path, monkeypatch, load_file):
    res = _run(tmp_path, monkeypatch, load_file, ["--queries", "3"])
    assert [(r["model"], r["context"]) for r in res["rows"]] == [
        ("tiny-random-llama", 256),
        ("tiny-random-llama", 512),
        ("tiny-random-gemma3", 256),
        ("tiny-random-gemma3", 512),
    ]
    _check_rows(res, 3)
    assert res["lmeval_reached"]
