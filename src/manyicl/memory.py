"""Memory: estimating a run's peak before it starts (and refusing what cannot fit), and measuring the
peak of one phase of work (RSS, and CUDA allocations on a GPU)."""

from __future__ import annotations

import threading
import time

import psutil
import torch

from .errors import ManyICLError

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
    mask_elements: int = 0,
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
        # packed rows get a dense block-diagonal mask (one byte per query x key pair): quadratic in the row
        "attention_mask_mb": mask_elements / mb,
        "overhead_mb": RUNTIME_OVERHEAD_MB,
    }
    parts["total_mb"] = sum(parts.values())
    return {k: round(v, 1) for k, v in parts.items()}


def attention_layout(model_config) -> list[int | None]:
    """Per layer: its sliding window, or None for full attention (all full when it cannot be read)."""
    try:
        from .kvwindow import attention_windows

        windows = attention_windows(model_config)
    except Exception:  # a stand-in config without layer types: plain full attention
        windows = []
    return windows or [None] * model_config.num_hidden_layers


def kv_cache_tokens(
    model_config, context_tokens: int, batch_tokens: int, sliding_history: bool = False
) -> int:
    """Token-layers a prompt cache holds at its peak (the prompt plus one batch of new tokens), the way
    manyicl's PromptCache keeps them: a full-attention layer every token, a sliding-window layer (window
    W) only the prompt's last W - 1 tokens plus the batch (all of them with ``sliding_history``)."""
    total = 0
    for w in attention_layout(model_config):
        kept = context_tokens if w is None or sliding_history else min(context_tokens, w - 1)
        total += kept + batch_tokens
    return total


def estimate_eval_mb(
    model_config,
    dtype: str,
    context_tokens: int,
    batch_tokens: int,
    sliding_history: bool = False,
    logits_rows: int | None = None,
) -> dict:
    """Weights + the prompt's KV cache + one batch of query/option tokens' activations and logits.

    The KV cache counts what PromptCache keeps (:func:`kv_cache_tokens`): on Gemma 3 270M at 32K
    tokens, 3 full layers hold all 32K tokens and 15 sliding layers 511 each, about a sixth of what 18
    full layers would. Attention (weights and the boolean mask) is that of a full layer, the largest.
    Logits (float32, and their log-softmax) are counted for ``logits_rows`` positions (default: every
    batch token); with Gemma's 262K vocabulary they are the largest part: 8 GB for 4,096 rows."""
    d = _model_dims(model_config)
    wb = _DTYPE_BYTES.get(dtype, 4)
    mb = 2**20
    kv_tokens = kv_cache_tokens(model_config, context_tokens, batch_tokens, sliding_history)
    kv = kv_tokens * 2 * d["kv_heads"] * d["head_dim"] * wb
    heads = getattr(model_config, "num_attention_heads", 1)
    attn = batch_tokens * (context_tokens + batch_tokens) * (heads * 4 + 1)
    parts = {
        "weights_mb": d["params"] * wb / mb,
        "kv_cache_mb": kv / mb,
        "attention_mb": attn / mb,
        "logits_mb": (batch_tokens if logits_rows is None else logits_rows) * d["vocab"] * 4 * 2 / mb,
        "overhead_mb": RUNTIME_OVERHEAD_MB,
    }
    parts["total_mb"] = sum(parts.values())
    return {k: round(v, 1) for k, v in parts.items()}


def available_mb(device: torch.device | str = "cpu") -> float:
    """Free memory on ``device`` now (MB)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free / 2**20
    free = psutil.virtual_memory().available
    limit = cgroup_free_bytes()
    return (min(free, limit) if limit is not None else free) / 2**20


def cgroup_free_bytes() -> int | None:
    """What the container's memory limit still allows (cgroup v2 or v1), or None without a limit: a
    machine's free memory overstates what a process in a limited container may take."""
    for limit_f, usage_f in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            raw = open(limit_f).read().strip()
            if raw == "max":
                return None
            limit, usage = int(raw), int(open(usage_f).read().strip())
        except (OSError, ValueError):
            continue
        if limit >= 1 << 60:  # v1 reports "no limit" as a huge number
            return None
        return max(limit - usage, 0)
    return None


def budget_mb(device: torch.device | str = "cpu") -> float:
    """What this process may hold in all on ``device``: free memory plus what it already holds there.

    The estimates cover the whole process (weights, runtime overhead), so what is already loaded counts
    on both sides: RSS on CPU, the caching allocator's reserved memory on CUDA."""
    device = torch.device(device)
    held = torch.cuda.memory_reserved(device) if device.type == "cuda" else psutil.Process().memory_info().rss
    return available_mb(device) + held / 2**20


HEADROOM = 0.9
"""An estimate fits when it is at most this share of the budget (the estimates are rough)."""


class MemoryGuardError(ManyICLError):
    """A run that would not fit in memory, refused before any long work."""


def refuse_unless_fits(
    estimate: dict,
    device,
    what: str,
    candidates: list[tuple[str, dict]],
    allow_key: str,
    allow: bool,
    budget: float | None = None,
) -> dict:
    """Check ``estimate`` against the device's budget; refuse with the ``candidates`` that fit.

    ``candidates`` are (settings to change, estimate with them) pairs; the message lists those that fit.
    Returns the estimate with ``budget_mb`` and ``fits`` added (for the run's summary)."""
    import logging

    budget = budget_mb(device) if budget is None else budget
    fits = estimate["total_mb"] <= HEADROOM * budget
    out = estimate | {"budget_mb": round(budget, 1), "fits": fits}
    if fits:
        return out
    parts = ", ".join(f"{k[:-3]} {v:,.0f}" for k, v in estimate.items() if k != "total_mb")
    need = (
        f"{what} needs about {estimate['total_mb']:,.0f} MB ({parts}); {device} has {budget:,.0f} MB for it"
    )
    if allow:
        logging.getLogger(__name__).warning("%s; going on because %s=true", need, allow_key)
        return out
    ok = [
        f"{change} (~{est['total_mb']:,.0f} MB)"
        for change, est in candidates
        if est["total_mb"] <= HEADROOM * budget
    ]
    fix = (
        "Settings that would fit: " + "; ".join(ok)
        if ok
        else "No setting tried here fits ("
        + "; ".join(f"{c}: ~{e['total_mb']:,.0f} MB" for c, e in candidates)
        + "): use a smaller model or a device with more memory"
    )
    raise MemoryGuardError(f"{need}. {fix}. To run anyway, set {allow_key}=true.")


def _logit_rows(supervised: int, chunk: int) -> int:
    """Positions whose logits exist at once: every supervised one, or one chunk of them (0: unchunked)."""
    return min(supervised, chunk) if chunk else supervised


def training_guard(
    model, cfg, windows, device, reference_model: bool = False, allow: bool = False, loss_chunk: int = 0
) -> dict:
    """Estimate a training run's peak from its config and built windows; refuse it if it cannot fit.

    ``cfg`` is a TrainConfig, ``windows`` the packed training windows; ``reference_model`` adds a frozen
    copy of the weights (KL to the base with full fine-tuning); ``loss_chunk`` > 0: the cross-entropy
    is chunked (``losses.supervised_loss_sum``), so logits exist for at most that many positions.
    Returns the estimate (MB, with the budget)."""
    from .losses import output_head

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    mc = base.config
    dtype = str(next(base.parameters()).dtype).removeprefix("torch.")
    longest = max(len(w) for w in windows)
    sup = max(w.supervised_tokens for w in windows)
    mbs, ga = cfg.train.micro_batch_size, cfg.train.grad_accum
    d = _model_dims(mc)
    targets = list(cfg.lora.target_modules)
    lora_params = cfg.lora.r * 2 * d["hidden"] * len(targets) * d["layers"]  # ~ r * (in + out) per module
    if cfg.lora.enabled:
        lora_params = sum(p.numel() for p in model.parameters() if p.requires_grad) or lora_params
    chunk = loss_chunk if loss_chunk > 0 and output_head(model) is not None else 0

    def est(
        dtype=dtype, mbs=mbs, ckpt=cfg.train.gradient_checkpointing, length=longest, lora=cfg.lora.enabled
    ):
        length = min(length, longest)
        rows_layout = cfg.train.layout == "rows" or (
            cfg.train.layout == "auto" and str(device).startswith("cuda")
        )
        mask = mbs * length**2 if rows_layout else (mbs * length) ** 2
        e = estimate_training_mb(
            mc,
            dtype,
            mbs * length,
            _logit_rows(int(mbs * sup * length / longest), chunk),
            targets if lora else None,
            lora_params,
            ckpt,
            mask,
        )
        if reference_model and not lora:
            e["reference_model_mb"] = e["weights_mb"]
            e["total_mb"] = round(e["total_mb"] + e["weights_mb"], 1)
        return e

    cands: list[tuple[str, dict]] = []
    if mbs > 1:
        cands.append((f"train.micro_batch_size=1 train.grad_accum={ga * mbs} (same step size)", est(mbs=1)))
    if not cfg.train.gradient_checkpointing:
        cands.append(("train.gradient_checkpointing=true (~30% slower)", est(ckpt=True)))
    if not cfg.lora.enabled:
        cands.append(("lora.enabled=true", est(lora=True)))
    if dtype == "float32":
        cands.append(("model.dtype=bfloat16", est(dtype="bfloat16")))
    for div in (2, 4, 8):
        if longest // div >= 128:
            # windows never exceed the longest one: suggesting max_length // div above it changes nothing
            cands.append(
                (f"data.max_length={min(cfg.data.max_length, longest) // div}", est(length=longest // div))
            )
    if len(cands) > 1:
        every = dict(mbs=1, ckpt=True, lora=True, dtype="bfloat16" if dtype == "float32" else dtype)
        cands.append(("all of the above but max_length", est(**every)))
    return refuse_unless_fits(
        est(),
        device,
        "training",
        cands,
        "train.allow_memory_overrun",
        allow or cfg.train.allow_memory_overrun,
    )


def eval_guard(model, cfg, batch_tokens: int, device) -> dict:
    """Estimate an evaluation's peak (weights, the longest prompt's KV cache, one scoring batch) and
    refuse it if it cannot fit. ``cfg`` is an EvalConfig."""
    mc = model.config
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    step = max(batch_tokens, min(cfg.scoring.prefill_chunk, cfg.max_length))
    positions = getattr(mc, "max_position_embeddings", None)
    if positions and cfg.max_length > positions:
        import logging

        logging.getLogger(__name__).warning(
            "max_length=%d exceeds the model's %d positions (Gemma 3 270M: 32768, SmolLM2: 8192): "
            "prompts past them are outside what the model was trained on",
            cfg.max_length,
            positions,
        )

    # prefill chunks keep one logit row; scoring batches keep at most one per batch token
    def est(length=cfg.max_length, step=step, dtype=dtype, rows=batch_tokens):
        return estimate_eval_mb(mc, dtype, length, step, logits_rows=rows)

    cands = []
    for div in (2, 4):
        if step // div >= 256:
            cands.append(
                (
                    f"scoring.batch_tokens={batch_tokens // div} scoring.prefill_chunk={step // div}",
                    est(step=step // div, rows=batch_tokens // div),
                )
            )
    for div in (2, 4):
        if cfg.max_length // div >= 256:
            cands.append(
                (f"max_length={cfg.max_length // div} (fewer shots fit)", est(length=cfg.max_length // div))
            )
    if dtype == "float32":
        cands.append(("model.dtype=bfloat16", est(dtype="bfloat16")))
    return refuse_unless_fits(
        est(), device, "evaluation", cands, "allow_memory_overrun", cfg.allow_memory_overrun
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

    def start(self) -> PeakMemory:
        return self.__enter__()

    def stop(self) -> None:
        self.__exit__(None, None, None)

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
