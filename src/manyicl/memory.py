"""Measuring peak memory of one phase of work (RSS, and CUDA allocations on a GPU)."""

from __future__ import annotations

import threading
import time

import psutil
import torch

_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

# Activation bytes kept for backward, per token, per layer, per hidden unit. Calibrated on this
# project's CPU measurements with SmolLM2-135M at 1K-2K tokens (LOG.md, 2026-11-22): LoRA on q/v
# without dropout ~62, LoRA on all 7 projections with dropout ~160; full fine-tuning stores about
# what all-projection LoRA does without the dropout masks and fp32 casts.
ACT_BYTES_PER_UNIT = {"lora_attn": 64.0, "lora_all": 160.0, "full": 110.0}
RUNTIME_OVERHEAD_MB = 700.0  # Python, torch, tokenizer, data


def _model_dims(config) -> dict:
    h = config.hidden_size
    layers = config.num_hidden_layers
    vocab = config.vocab_size
    inter = getattr(config, "intermediate_size", 4 * h)
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", heads) or heads
    head_dim = getattr(config, "head_dim", None) or h // heads
    per_layer = 2 * h * heads * head_dim + 2 * h * kv * head_dim + 3 * h * inter
    emb = vocab * h * (1 if getattr(config, "tie_word_embeddings", False) else 2)
    return {
        "hidden": h,
        "layers": layers,
        "vocab": vocab,
        "kv_heads": kv,
        "head_dim": head_dim,
        "params": per_layer * layers + emb,
    }


def estimate_training_mb(
    model_config,
    dtype: str,
    tokens_per_microbatch: int,
    supervised_per_microbatch: int,
    lora_targets: list[str] | None,
    lora_params: int,
    gradient_checkpointing: bool,
) -> dict:
    """Rough peak memory of training, broken down, in MB.

    weights + trainable state (weights, grads, two AdamW moments) + stored activations + logits at the
    supervised positions (float32 logits, their softmax and gradient) + a fixed runtime overhead.
    """
    d = _model_dims(model_config)
    wb = _DTYPE_BYTES.get(dtype, 4)
    weights = d["params"] * wb
    if lora_targets is None:  # full fine-tuning: grads + AdamW moments in the weight dtype
        state = d["params"] * wb * 3
        kind = "full"
    else:
        state = lora_params * 4 * 4
        attn_only = set(lora_targets) <= {"q_proj", "k_proj", "v_proj", "o_proj"}
        kind = "lora_attn" if attn_only else "lora_all"
    per_token_layer = d["hidden"] * ACT_BYTES_PER_UNIT[kind] * (wb / 2)
    if gradient_checkpointing:  # layer inputs kept, one layer recomputed at a time
        acts = (
            tokens_per_microbatch * d["hidden"] * wb * d["layers"] + tokens_per_microbatch * per_token_layer
        )
    else:
        acts = tokens_per_microbatch * per_token_layer * d["layers"]
    logits = supervised_per_microbatch * d["vocab"] * 4 * 3
    mb = 2**20
    parts = {
        "weights_mb": weights / mb,
        "trainable_state_mb": state / mb,
        "activations_mb": acts / mb,
        "logits_mb": logits / mb,
        "overhead_mb": RUNTIME_OVERHEAD_MB,
    }
    parts["total_mb"] = sum(parts.values())
    return {k: round(v, 1) for k, v in parts.items()}


def estimate_eval_mb(model_config, dtype: str, context_tokens: int, batch_tokens: int) -> dict:
    """Weights + the prompt's KV cache + one batch of query/option tokens' activations and logits."""
    d = _model_dims(model_config)
    wb = _DTYPE_BYTES.get(dtype, 4)
    mb = 2**20
    kv = (context_tokens + batch_tokens) * d["layers"] * 2 * d["kv_heads"] * d["head_dim"] * wb
    attn = (
        batch_tokens * (context_tokens + batch_tokens) * getattr(model_config, "num_attention_heads", 1) * 4
    )
    parts = {
        "weights_mb": d["params"] * wb / mb,
        "kv_cache_mb": kv / mb,
        "attention_mb": attn / mb,
        "logits_mb": batch_tokens * d["vocab"] * 4 * 2 / mb,
        "overhead_mb": RUNTIME_OVERHEAD_MB,
    }
    parts["total_mb"] = sum(parts.values())
    return {k: round(v, 1) for k, v in parts.items()}


def available_mb(device: torch.device | str = "cpu") -> float:
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free / 2**20
    return psutil.virtual_memory().available / 2**20


def check_fits(estimate: dict, device, what: str, fixes: list[str], allow: bool) -> None:
    """Refuse (with the settings that would fit) when the estimate exceeds 90% of available memory."""
    from .errors import ManyICLError

    avail = available_mb(device)
    if estimate["total_mb"] <= 0.9 * avail or allow:
        return
    parts = ", ".join(f"{k[:-3]} {v:,.0f}" for k, v in estimate.items() if k != "total_mb")
    raise ManyICLError(
        f"{what} needs about {estimate['total_mb']:,.0f} MB ({parts}) but only {avail:,.0f} MB are free on "
        f"{device}. To fit: {'; '.join(fixes)}. To try anyway, set {'train.' if 'train' in what else ''}allow_memory_overrun=true."
    )


class PeakMemory:
    """Context manager: peak resident memory (RSS, sampled every ``interval`` s) and peak CUDA
    allocation during the block. ``getrusage`` cannot do this: its maximum covers the whole process
    lifetime, so a second phase would inherit the first one's peak."""

    def __init__(self, interval: float = 0.01):
        self.interval = interval
        self.start_rss_mb = 0.0
        self.peak_rss_mb = 0.0
        self.cuda_peak_mb: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc = psutil.Process()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_rss_mb = max(self.peak_rss_mb, self._proc.memory_info().rss / 2**20)
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self.start_rss_mb = self.peak_rss_mb = self._proc.memory_info().rss / 2**20
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_rss_mb = max(self.peak_rss_mb, self._proc.memory_info().rss / 2**20)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            self.cuda_peak_mb = torch.cuda.max_memory_allocated() / 2**20

    @property
    def delta_rss_mb(self) -> float:
        """Peak RSS above what the process held when the block started."""
        return self.peak_rss_mb - self.start_rss_mb

    def as_dict(self) -> dict:
        return {
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "delta_rss_mb": round(self.delta_rss_mb, 1),
            "cuda_peak_mb": None if self.cuda_peak_mb is None else round(self.cuda_peak_mb, 1),
        }
