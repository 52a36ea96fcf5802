"""A finished training cell whose weights are gone is trained again while its adapter is still needed."""

from pathlib import Path

import pytest

from manyicl.cells import Cells
from manyicl.experiment import _train_cell


class Retrained(Exception):
    pass


class Ctx:
    """Just enough of the experiment context: any use of the config means training started."""

    def __init__(self, root: Path):
        self.cells = Cells(root)

    @property
    def cfg(self):
        raise Retrained


def _cell(tmp_path: Path, with_weights: bool) -> Ctx:
    final = tmp_path / "train" / "m" / "adapter"
    final.mkdir(parents=True)
    if with_weights:
        (final / "adapter_model.safetensors").write_bytes(b"x")
    ctx = Ctx(tmp_path)
    ctx.cells.put("train/m", {"final_dir": str(final), "summary": {}})
    return ctx


def test_cell_with_weights_is_reused(tmp_path):
    ctx = _cell(tmp_path, with_weights=True)
    got = _train_cell(ctx, "train/m", tmp_path / "train" / "m", None, [], "many_shot_all")
    assert got["final_dir"].endswith("adapter")


def test_cell_without_weights_is_trained_again(tmp_path):
    ctx = _cell(tmp_path, with_weights=False)
    with pytest.raises(Retrained):
        _train_cell(ctx, "train/m", tmp_path / "train" / "m", None, [], "many_shot_all")


def test_cell_no_longer_needed_is_kept_without_weights(tmp_path):
    ctx = _cell(tmp_path, with_weights=False)
    got = _train_cell(ctx, "train/m", tmp_path / "train" / "m", None, [], "task_level", needed=False)
    assert got["summary"] == {}
