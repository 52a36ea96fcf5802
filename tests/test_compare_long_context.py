"""The committed SmolLM2-vs-Gemma comparison is what the script computes from the committed predictions."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def test_the_committed_comparison_is_recomputed_exactly(tmp_path, load_file):
    mod = load_file("scripts/compare_long_context.py")
    assert mod.main(tmp_path / "cmp.md") == 0
    assert (tmp_path / "cmp.md").read_text() == (
        ROOT / "results/long_context/smollm2_vs_gemma3.md"
    ).read_text()


def test_runs_that_do_not_line_up_are_refused(load_file):
    mod = load_file("scripts/compare_long_context.py")
    a = {(0, 0): (1.0, "x", 5), (1, 0): (0.0, "y", 5)}
    with pytest.raises(SystemExit, match="different"):
        mod._aligned(a, {(0, 0): (1.0, "x", 5)}, "t")
    with pytest.raises(SystemExit, match="gold"):
        mod._aligned(a, {(0, 0): (1.0, "x", 5), (1, 0): (0.0, "z", 5)}, "t")
    x, y = mod._aligned(a, {(0, 0): (0.0, "x", 5), (1, 0): (0.0, "y", 5)}, "t")
    assert x.tolist() == [[1.0], [0.0]] and y.tolist() == [[0.0], [0.0]]
