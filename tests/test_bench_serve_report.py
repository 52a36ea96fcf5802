"""The serve benchmark's intervals and tables: computed from the saved latencies, so they can be re-derived."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("requests")

_spec = importlib.util.spec_from_file_location(
    "bench_serve", Path(__file__).parents[1] / "benchmarks" / "bench_serve.py"
)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _arm(lat, clients=1, index=None):
    lat = [float(x) for x in lat]
    return {
        "clients": clients,
        "requests": len(lat),
        "errors": [],
        "wall_s": sum(lat),
        "rps": len(lat) / sum(lat),
        "p50_s": float(np.median(lat)),
        "p50_ci_s": bench.median_ci(lat),
        "p99_s": max(lat),
        "latencies_s": lat,
        "request_index": list(range(len(lat))) if index is None else index,
    }


def test_median_interval_covers_the_median_and_narrows_with_more_requests():
    rng = np.random.default_rng(0)
    few = list(1.0 + 0.2 * rng.standard_normal(8))
    many = list(1.0 + 0.2 * rng.standard_normal(200))
    lo, hi = bench.median_ci(few)
    assert lo <= np.median(few) <= hi
    lo2, hi2 = bench.median_ci(many)
    assert hi2 - lo2 < hi - lo
    assert bench.median_ci([1.0]) is None


def test_paired_ratio_is_tight_when_both_arms_move_together():
    # per-input cost varies 10x, the speed-up is exactly 2x on every input: pairing removes the spread
    base = np.geomspace(0.1, 1.0, 40)
    slow, fast = _arm(2 * base), _arm(base)
    assert bench.paired(slow, fast)
    lo, hi = bench.ratio_ci(slow, fast)
    assert lo == pytest.approx(2.0) and hi == pytest.approx(2.0)
    # the same latencies but different requests: resampled apart, so the interval is wide
    shuffled = _arm(base, index=list(range(1, 41)))
    assert not bench.paired(slow, shuffled)
    lo, hi = bench.ratio_ci(slow, shuffled)
    assert lo < 1.8 and hi > 2.2


def test_report_shows_intervals_and_reads_old_results_without_latencies():
    rng = np.random.default_rng(1)
    b = _arm(0.5 + 0.05 * rng.random(16))
    k = _arm(0.25 + 0.05 * rng.random(16))
    s = _arm(1.0 + 0.05 * rng.random(16))
    pr = {
        "requests": 3,
        "p50_s": 9.0,
        "p50_ci_s": [8.5, 9.5],
        "latencies_s": [8.6, 9.0, 9.4],
        "prefill_s": 8.0,
        "cache_load_s": 0.03,
        "cache_mb": 10.0,
    }
    task = {
        "labels": 150,
        "shots": 64,
        "batched": [b],
        "batched_top_k": [k],
        "one_by_one": [s],
        "top_k": 1,
        "per_request_prompt": pr,
        "cold_first_request_s": 0.9,
    }
    text = bench.report({"model": "m", "server_start_s": 3.0, "tasks": {"clinc150": task}})
    lo, hi = bench.ratio_ci(b, k)
    assert f"[{lo:.1f}, {hi:.1f}]" in text  # the top_k speed-up's interval
    assert "| yes |" in text  # paired: same requests
    old = {key: v for key, v in b.items() if key not in ("latencies_s", "request_index", "p50_ci_s")}
    task_old = dict(task, batched=[old], batched_top_k=[], one_by_one=[])
    text_old = bench.report({"model": "m", "server_start_s": 3.0, "tasks": {"clinc150": task_old}})
    assert "0.5" in text_old and "[" not in text_old.split("\n")[4]


def test_throughput_interval_is_centred_on_the_measured_ratio():
    rng = np.random.default_rng(2)
    single = _arm(1.0 + 0.1 * rng.random(32), clients=8)
    batched = _arm(0.5 + 0.1 * rng.random(32), clients=8)
    single["rps"], batched["rps"] = 1.0, 2.5  # wall-time throughput, not what the latencies imply
    lo, hi = bench.throughput_ratio_ci(single, batched)
    assert lo < 2.5 < hi


def test_top_k_batching_table_reads_the_one_by_one_top_k_arm():
    rng = np.random.default_rng(3)
    b = _arm(0.5 + 0.05 * rng.random(16), clients=8)
    k = _arm(0.3 + 0.05 * rng.random(16), clients=8)
    s = _arm(1.0 + 0.05 * rng.random(16), clients=8)
    sk = _arm(0.6 + 0.05 * rng.random(16), clients=8)
    k["rps"], sk["rps"] = 3.0, 2.0
    pr = {"requests": 1, "p50_s": 9.0, "latencies_s": [9.0], "prefill_s": 8.0, "cache_load_s": 0.03}
    task = {
        "labels": 150,
        "shots": 64,
        "batched": [b],
        "batched_top_k": [k],
        "one_by_one": [s],
        "one_by_one_top_k": [sk],
        "top_k": 1,
        "per_request_prompt": pr,
    }
    text = bench.report({"model": "m", "server_start_s": 3.0, "tasks": {"clinc150": task}})
    row = next(line for line in text.splitlines() if line.startswith("| clinc150 (top_k=1) | 8 | 3.00 |"))
    lo, hi = bench.throughput_ratio_ci(sk, k)
    assert f"1.50x[{lo:.2f}, {hi:.2f}]" in row.replace(" [", "[")
    # results written before the arm existed have no such table
    text_old = bench.report(
        {"model": "m", "server_start_s": 3.0, "tasks": {"clinc150": dict(task, one_by_one_top_k=[])}}
    )
    assert "top_k one-by-one" not in text_old
