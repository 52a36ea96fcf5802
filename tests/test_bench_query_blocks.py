"""The query-blocks benchmark on a tiny random model, and its RESULTS.md section."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).parents[1] / "benchmarks"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_blocks_and_whole_agree_and_blocks_bound_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "qb.json"
    args = ["--tiny", "--models", "tiny-random-llama", "--queries", "20", "--repeats", "1", "--out", str(out)]
    assert _module("bench_query_blocks").main(args) == 0
    res = json.loads(out.read_text())
    (row,) = res["rows"]
    whole, blocks = row["arms"]["whole"], row["arms"]["blocks"]
    assert whole["block"] == 20 and blocks["block"] == row["token_budget"] // 64
    assert row["same_predictions"] and len(row["speedup_per_repeat"]) == 1
    assert "(1 pair)" in _module("bench_query_blocks").report(res)
    assert len(whole["run_s"]) == len(blocks["run_s"]) == 1
    # the whole call keeps every query's tokens; a block keeps only its own
    assert blocks["max_cached_after_prompt"] < whole["max_cached_after_prompt"] <= row["tokens_fed"]
    section = "\n".join(_module("run").query_blocks_section(res))
    assert section.startswith("## g. Option search") and "| tiny-random-llama | 512 |" in section
    assert "blocks" in _module("run").STEPS
    # --append adds a second model's rows to the same file (measured on the same machine)
    more = ["--tiny", "--models", "tiny-random-gemma3", "--queries", "4", "--repeats", "1", "--append"]
    assert _module("bench_query_blocks").main([*more, "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["model"] for r in rows] == ["tiny-random-llama", "tiny-random-gemma3"]
