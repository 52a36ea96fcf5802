"""Training losses: cross-entropy over supervised tokens only, the optional KL to the frozen base,
and the distillation loss (a teacher's answer distribution mixed with the gold answer).

The loss is a *sum* with its token count, so the caller divides by the supervised tokens of the whole
optimizer step (all micro-batches, all processes): accumulation and data parallelism then give the
update of one big batch. Logits are computed only at supervised positions (``logits_to_keep``).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ManyICLError
from .packing import Batch

log = logging.getLogger(__name__)


# Model families whose logits are exactly ``head(decoder(...).last_hidden_state)``, softcapped where the
# config says so: for them the cross-entropy can be computed chunk by chunk from the hidden states.
_LOGITS_ARE_HEAD = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text")


def output_head(model):
    """``(decoder, head, softcap)`` of a causal LM (or a PEFT model around one) whose logits are the
    output head applied to the decoder's last hidden state, else None (chunked cross-entropy then
    falls back to computing all logits at once)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(getattr(base, "config", None), "model_type", None) not in _LOGITS_ARE_HEAD:
        return None
    try:
        decoder, head = base.get_decoder(), base.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    if decoder is None or head is None or decoder is base:
        return None
    return decoder, head, getattr(base.config, "final_logit_softcapping", None)


def _chunk_ce(head, softcap):
    def ce(hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = head(hidden)
        if softcap is not None:
            logits = torch.tanh(logits / softcap) * softcap
        return F.cross_entropy(logits.float(), labels, reduction="sum")

    return ce


def supervised_loss_sum(model, batch: Batch, device, chunk: int = 0) -> tuple[torch.Tensor, int]:
    """Sum of cross-entropy over the batch's supervised tokens, and their count.

    Restarting position ids make transformers build a block-diagonal causal mask (only when no KV
    cache is passed, hence ``use_cache=False``). Logits are computed only at positions that predict
    a supervised token: for one row exactly those; for several rows the union of their positions.

    With ``chunk`` > 0 and more supervised positions than that (and a model :func:`output_head`
    knows), the loss is summed over chunks of ``chunk`` positions, each chunk's logits recomputed in
    backward: the [positions x vocab] float32 logits, their softmax and gradient (12 bytes per
    position per word: 22 GB for 7,000 positions of Gemma 3's 262K words) never exist at once. Only
    for a model called directly in one process: under DDP/FSDP the wrapper's forward must run.
    """
    ids = torch.as_tensor(batch.input_ids, dtype=torch.long)
    pred = batch.loss_mask[:, 1:]  # the logit at p predicts token p + 1
    if ids.shape[0] == 1:
        keep = np.flatnonzero(pred[0])
        select = None
    else:
        keep = np.flatnonzero(pred.any(0))
        select = torch.as_tensor(pred[:, keep])
    keep_t = torch.as_tensor(keep, dtype=torch.long)
    labels = ids[:, keep_t + 1]
    labels = labels[0] if select is None else labels[select]
    n = int(labels.numel())
    parts = output_head(model) if 0 < chunk < n else None
    if parts is not None:
        from torch.utils.checkpoint import checkpoint

        decoder, head, softcap = parts
        hidden = decoder(
            input_ids=ids.to(device),
            position_ids=torch.as_tensor(batch.position_ids, dtype=torch.long).to(device),
            use_cache=False,
        ).last_hidden_state[:, keep_t.to(device)]
        hidden = hidden[0] if select is None else hidden[select.to(device)]
        labels = labels.to(device)
        ce = _chunk_ce(head, softcap)
        total = sum(
            checkpoint(ce, hidden[i : i + chunk], labels[i : i + chunk], use_reentrant=False)
            for i in range(0, n, chunk)
        )
        return total, n
    out = model(
        input_ids=ids.to(device),
        position_ids=torch.as_tensor(batch.position_ids, dtype=torch.long).to(device),
        logits_to_keep=keep_t.to(device),
        use_cache=False,
    )
    logits = out.logits[0] if select is None else out.logits[select.to(device)]
    if n == 0:  # keep the graph connected so DDP sees every parameter used
        return out.logits.sum() * 0.0, 0
    return F.cross_entropy(logits.float(), labels.to(device), reduction="sum"), n


KL_TAG = "icl"
"""Sequences with this tag (``TrainingSequence.tag``) get the KL-to-base term when ``optim.kl_to_base`` > 0."""


def supervised_loss_and_kl(
    model, batch: Batch, device, base_forward
) -> tuple[torch.Tensor, int, torch.Tensor, int]:
    """Like :func:`supervised_loss_sum`, plus the summed KL(base || model) over ``batch.tag_mask``.

    ``batch.tag_mask`` marks the supervised tokens of the tagged (ICL-format) sequences; at the position
    predicting each of them, the full next-token distributions of the base and of the model are compared.
    One forward pass of the model serves both terms; ``base_forward(**kwargs)`` runs the base model
    (under ``torch.no_grad``) on the same inputs with ``logits_to_keep`` set to the tagged positions only.
    Returns (cross-entropy sum, supervised tokens, KL sum, KL positions).
    """
    ids = torch.as_tensor(batch.input_ids, dtype=torch.long)
    pos_t = torch.as_tensor(batch.position_ids, dtype=torch.long)
    pred = batch.loss_mask[:, 1:]
    keep = np.flatnonzero(pred.any(0))
    select = pred[:, keep]
    keep_t = torch.as_tensor(keep, dtype=torch.long)
    labels = ids[:, keep_t + 1][torch.as_tensor(select)]
    out = model(
        input_ids=ids.to(device),
        position_ids=pos_t.to(device),
        logits_to_keep=keep_t.to(device),
        use_cache=False,
    )
    n = int(labels.numel())
    if n == 0:
        zero = out.logits.sum() * 0.0
        return zero, 0, zero.detach(), 0
    logits = out.logits[torch.as_tensor(select).to(device)]
    ce = F.cross_entropy(logits.float(), labels.to(device), reduction="sum")
    tag_pred = batch.tag_mask[:, 1:] if batch.tag_mask is not None else np.zeros_like(pred)
    kl_keep = np.flatnonzero(tag_pred.any(0))
    if len(kl_keep) == 0:
        return ce, n, torch.zeros((), device=device), 0
    kl_select = torch.as_tensor(tag_pred[:, kl_keep]).to(device)
    with torch.no_grad():
        base_out = base_forward(
            input_ids=ids.to(device),
            position_ids=pos_t.to(device),
            logits_to_keep=torch.as_tensor(kl_keep, dtype=torch.long).to(device),
            use_cache=False,
        )
        base_logp = torch.log_softmax(base_out.logits[kl_select].float(), dim=-1)
    where = torch.as_tensor(np.searchsorted(keep, kl_keep), dtype=torch.long).to(device)
    model_logp = torch.log_softmax(out.logits[:, where][kl_select].float(), dim=-1)
    kl = F.kl_div(
        model_logp, base_logp, log_target=True, reduction="sum"
    )  # sum p_base (log p_base - log p_model)
    return ce, n, kl, int(kl_select.sum())


def make_base_forward(model, ref_model, accelerator):
    """The base model's forward for the KL term: a frozen reference copy, or the LoRA model with its
    adapter disabled."""
    if ref_model is not None:
        return ref_model

    unwrapped = accelerator.unwrap_model(model)
    if not hasattr(unwrapped, "disable_adapter"):
        raise ManyICLError("optim.kl_to_base with full fine-tuning needs a reference model (ref_model)")

    def forward(**kw):
        with unwrapped.disable_adapter():
            return unwrapped(**kw)

    return forward


def distillation_loss(
    student,
    ids: list[int],
    positions: list[int],
    gold: list[int],
    teacher_logp: torch.Tensor | None,
    *,
    alpha: float,
    temperature: float,
    kl: str,
    verbalizer: tuple[int, list[int]],
    device,
) -> torch.Tensor:
    """``alpha * T^2 * KL(teacher || student) + (1 - alpha) * CE(gold)`` at the answer ``positions``.

    The student sees ``ids`` alone; ``teacher_logp`` (the teacher's log-probs at the same positions,
    computed with its demonstrations in the prompt) is None for plain fine-tuning, which leaves the mean
    cross-entropy. ``kl="verbalizer"`` compares only the two answer tokens at the position where the
    verbalizers differ (``verbalizer = (position, [token ids])``), renormalised over the two; ``"full"``
    compares the whole vocabulary at every answer position (mean over positions).
    """
    x = torch.tensor([ids], device=device)
    pos = torch.tensor(positions, device=device)
    logits = student(input_ids=x, logits_to_keep=pos, use_cache=False).logits[0].float()
    ce = F.cross_entropy(logits, torch.tensor(gold, device=device))
    if teacher_logp is None or alpha == 0:
        return ce
    T = temperature
    t_logp = teacher_logp.to(device)
    if kl == "verbalizer":  # the answer token where yes/no differ, renormalised over the two
        j, tok_ids = verbalizer
        s = F.log_softmax(logits[j, tok_ids] / T, -1)
        t = F.log_softmax(t_logp[j, tok_ids] / T, -1)
    else:
        s = F.log_softmax(logits / T, -1)
        t = F.log_softmax(t_logp / T, -1)
    div = F.kl_div(s, t, log_target=True, reduction="batchmean" if s.dim() > 1 else "sum") * T * T
    return alpha * div + (1 - alpha) * ce
