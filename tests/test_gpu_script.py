"""scripts/gpu_paper_small.sh --tiny: the GPU recipe (every cell: methods, task-level FT, ablation,
perplexity, held-out CE, demos check) run end to end on CPU with the tiny model, as CI does."""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MANYICL_DATA", ROOT.parent / "shared" / "data"))


def _tiny(script: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(script), str(out), "--tiny"],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "MANYICL_DATA": str(DATA)},
    )


@pytest.mark.skipif(not (DATA / "rte").is_dir(), reason="needs the shared data (../shared/data)")
def test_gpu_paper_small_tiny_mode_runs_every_cell(tmp_path):
    out = tmp_path / "gpu"
    proc = _tiny(ROOT / "scripts" / "gpu_paper_small.sh", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "0 left" in proc.stdout
    data = json.loads((out / "results.json").read_text())
    assert {s["task"] for s in data["summary"]} == {"rte", "cb"}
    assert {c["verdict"] for c in data["claims"]} <= {
        "supported",
        "contradicted",
        "not significant",
        "not run",
    }
    assert (out / "predictions.jsonl.gz").stat().st_size > 0
    assert "## The paper's claims at this scale (computed)" in (out / "report.md").read_text()
    bad = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_paper_small.sh"), str(out), "--huge"], capture_output=True
    )
    assert bad.returncode == 2


@pytest.mark.skipif(
    not (DATA / "clinc150").is_dir() or not (DATA / "banking77").is_dir(),
    reason="needs the shared data (../shared/data)",
)
def test_gpu_long_context_tiny_mode_runs_every_cell(tmp_path):
    """scripts/gpu_long_context.sh --tiny: the 32K Gemma 3 recipe (mask-all meta-training at the window's
    limit, CLINC150 + Banking77 curves to max shots, base vs adapter) on a tiny random Gemma 3 whose
    sliding window (16) every prompt exceeds, so the exact sliding-window cache path is the one exercised."""
    out = tmp_path / "long"
    proc = _tiny(ROOT / "scripts" / "gpu_long_context.sh", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "0 left" in proc.stdout
    data = json.loads((out / "results.json").read_text())
    summary = data["summary"]
    assert {s["task"] for s in summary} == {"clinc150", "banking77"}
    assert {s["model"] for s in summary} >= {"no_ft", "many_shot_all"}
    assert (out / "train" / "many_shot_all" / "adapter" / "adapter_model.safetensors").exists()
    cfg = (out / "config.yaml").read_text()
    assert "tiny-random-gemma3" in cfg and "max_length: 512" in cfg
    assert "## The paper's claims at this scale (computed)" in (out / "report.md").read_text()
