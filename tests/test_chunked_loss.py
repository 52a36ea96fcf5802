"""Chunked cross-entropy (``train.loss_chunk_tokens``) == all logits at once: the same loss and the same
LoRA gradients, for one row and for padded rows, for Llama and for a softcapped Gemma 3 (sliding window
shorter than the sequences); and the memory guard counts only one chunk's logits."""

import numpy as np
import pytest
import torch

from manyicl.config import LoraConfig, TrainConfig
from manyicl.losses import output_head, supervised_loss_sum
from manyicl.memory import training_guard
from manyicl.modeling import apply_lora, tiny_gemma3, tiny_model
from manyicl.packing import TrainingSequence, Window, collate

VOCAB = 300


def _seq(n: int, seed: int) -> TrainingSequence:
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, VOCAB, n).astype(np.int64)
    mask = np.zeros(n, dtype=bool)
    mask[n // 4 :] = rng.random(n - n // 4) < 0.8  # many supervised tokens, with gaps
    return TrainingSequence(ids, mask, "t", [n], 0, 1)


WINDOWS = [Window([_seq(60, 1), _seq(45, 2)]), Window([_seq(70, 3)])]


def _lora(model):
    torch.manual_seed(0)
    m = apply_lora(model, LoraConfig(r=4, alpha=8, dropout=0.0))
    for name, p in m.named_parameters():  # LoRA B starts at zero: make the adapter matter
        if "lora_B" in name:
            p.data.normal_(0, 0.5)
    return m


def _loss_and_grads(model, batch, chunk):
    model.zero_grad()
    loss, n = supervised_loss_sum(model, batch, "cpu", chunk)
    loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}
    return loss.item(), n, grads


def _models():
    gemma = tiny_gemma3(VOCAB, sliding_window=16)
    gemma.config.final_logit_softcapping = 0.7  # small enough that forgetting it changes the loss
    return {"llama": tiny_model(VOCAB), "gemma3": gemma}


@pytest.mark.parametrize("name", ["llama", "gemma3"])
@pytest.mark.parametrize("layout", ["row", "rows"])
def test_chunked_loss_and_gradients_equal_unchunked(name, layout):
    model = _lora(_models()[name])
    assert output_head(model) is not None
    batch = collate(WINDOWS if layout == "rows" else WINDOWS[:1], layout)
    full, n_full, g_full = _loss_and_grads(model, batch, 0)
    chunked, n, g = _loss_and_grads(model, batch, 7)  # 7 does not divide the positions
    assert n == n_full > 7 * 3
    assert chunked == pytest.approx(full, rel=1e-5)
    assert g.keys() == g_full.keys() and g
    for k in g:  # float32 sums in another order: equal to ~1e-6 of each gradient's scale
        assert (g[k] - g_full[k]).abs().max() <= 1e-5 * g_full[k].abs().max() + 1e-7, k


def test_model_outside_the_known_families_computes_all_logits():
    model = tiny_model(VOCAB)
    model.config.model_type = "some_new_family"  # its logits might not be head(hidden)
    assert output_head(model) is None
    batch = collate(WINDOWS[:1], "row")
    with torch.no_grad():
        assert float(supervised_loss_sum(model, batch, "cpu", 7)[0]) == pytest.approx(
            float(supervised_loss_sum(model, batch, "cpu", 0)[0]), rel=1e-6
        )


def test_memory_guard_counts_one_chunk_of_logits():
    model = _lora(tiny_model(20_000))  # a vocabulary whose logits show in MB
    cfg = TrainConfig()
    windows = [WINDOWS[0]]
    whole = training_guard(model, cfg, windows, "cpu")["logits_mb"]
    chunked = training_guard(model, cfg, windows, "cpu", loss_chunk=8)["logits_mb"]
    sup = WINDOWS[0].supervised_tokens
    assert chunked == pytest.approx(whole * 8 / sup, rel=0.05)
