"""The query-blocks benchmark on a tiny random model, and its RESULTS.md section."""

from __future__ import annotations

import json


def test_blocks_and_whole_agree_and_blocks_bound_the_cache(tmp_path, monkeypatch, load_file):
    bench, run = load_file("benchmarks/bench_query_blocks.py"), load_file("benchmarks/run.py")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "qb.json"
    args = ["--tiny", "--models", "tiny-random-llama", "--queries", "20", "--repeats", "1", "--out", str(out)]
    assert bench.main(args) == 0
    res = json.loads(out.read_text())
    (row,) = res["rows"]
    whole, blocks = row["arms"]["whole"], row["arms"]["blocks"]
    assert whole["block"] == 20 and blocks["block"] == row["token_budget"] // 64
    assert row["same_predictions"] and len(row["speedup_per_repeat"]) == 1
    assert "(1 pair)" in bench.report(res)
    assert len(whole["run_s"]) == len(blocks["run_s"]) == 1
    # the whole call keeps every query's tokens; a block keeps only its own
    assert blocks["max_cached_after_prompt"] < whole["max_cached_after_prompt"] <= row["tokens_fed"]
    section = "\n".join(run.query_blocks_section(res))
    assert section.startswith("## g. Option search") and "| tiny-random-llama | 512 |" in section
    assert "blocks" in run.STEPS
    # --append adds a second model's rows to the same file (measured on the same machine)
    more = ["--tiny", "--models", "tiny-random-gemma3", "--queries", "4", "--repeats", "1", "--append"]
    assert bench.main([*more, "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["model"] for r in rows] == ["tiny-random-llama", "tiny-random-gemma3"]
