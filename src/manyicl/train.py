"""Training workflow: ``train(cfg)`` fine-tunes a causal LM on packed many-shot windows.

A plain loop over optimizer steps. Accelerate only places the model and wraps it for the engine the
user launched (single process, DDP via torchrun, FSDP/DeepSpeed via ``accelerate launch``); the loop,
loss normalisation, data order and checkpoints are ours and visible here.

Loss: cross-entropy summed over supervised tokens, divided by the number of supervised tokens in the
whole optimizer step (all micro-batches, all processes), so gradient accumulation and data
parallelism give the same update as one big batch. Logits are computed only at supervised positions
(``logits_to_keep``), never for the whole window.

Exact resume: the data order is a pure function of (seed, step), and checkpoints hold the trainable
weights, optimizer, scheduler and RNG states, so a resumed run ends with the same weights.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import random
import resource
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .config import TrainConfig, dump_yaml, to_dict
from .data import TrainingData, build_training_data, load_tasks, stable_seed
from .errors import ConfigError, ManyICLError
from .fileio import atomic_dir, atomic_write_json, atomic_write_text, check_output_dir, exclusive_lock
from .memory import PeakMemory, training_guard
from .modeling import apply_lora, count_parameters, load_adapter, load_model
from .packing import Batch, Window, collate

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Loss
# --------------------------------------------------------------------------------------------


def supervised_loss_sum(model, batch: Batch, device) -> tuple[torch.Tensor, int]:
    """Sum of cross-entropy over the batch's supervised tokens, and their count.

    Restarting position ids make transformers build a block-diagonal causal mask (only when no KV
    cache is passed, hence ``use_cache=False``). Logits are computed only at positions that predict
    a supervised token: for one row exactly those; for several rows the union of their positions.
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
    out = model(
        input_ids=ids.to(device),
        position_ids=torch.as_tensor(batch.position_ids, dtype=torch.long).to(device),
        logits_to_keep=keep_t.to(device),
        use_cache=False,
    )
    logits = out.logits[0] if select is None else out.logits[select.to(device)]
    n = int(labels.numel())
    if n == 0:  # keep the graph connected so DDP sees every parameter used
        return out.logits.sum() * 0.0, 0
    return F.cross_entropy(logits.float(), labels.to(device), reduction="sum"), n


KL_TAG = "icl"
"""Sequences with this tag (``Sequence.tag``) get the KL-to-base term when ``optim.kl_to_base`` > 0."""


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


def _base_forward(model, ref_model, accelerator):
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


# --------------------------------------------------------------------------------------------
# Data order
# --------------------------------------------------------------------------------------------


class StepSchedule:
    """Which windows each process uses at each micro-step: a pure function of (seed, step).

    The global stream of window indices is a fresh permutation per epoch. Optimizer step ``s``
    consumes ``world * accum * micro`` consecutive entries; micro-step ``j`` of rank ``r`` takes
    entries ``(j * world + r) * micro ...``. Hence DDP on 2 processes and one process with twice
    the accumulation see the same windows in each step.
    """

    def __init__(self, n_windows: int, world: int, accum: int, micro: int, seed: int):
        self.n, self.world, self.accum, self.micro, self.seed = n_windows, world, accum, micro, seed

    @lru_cache(maxsize=4)  # noqa: B019 - a handful of epochs, lives as long as the run
    def _perm(self, epoch: int) -> np.ndarray:
        return np.random.default_rng(stable_seed(self.seed, "epoch", epoch)).permutation(self.n)

    def _index(self, g: int) -> int:
        return int(self._perm(g // self.n)[g % self.n])

    def step_indices(self, step: int) -> list[list[list[int]]]:
        """indices[rank][micro_step] -> window indices, for one optimizer step."""
        per_step = self.world * self.accum * self.micro
        base = step * per_step
        return [
            [
                [self._index(base + (j * self.world + r) * self.micro + b) for b in range(self.micro)]
                for j in range(self.accum)
            ]
            for r in range(self.world)
        ]


def lr_lambda(warmup: int, total: int, min_ratio: float):
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------

_RESUME_KEYS = ("model", "lora", "data", "optim")
_RESUME_TRAIN_KEYS = ("max_steps", "micro_batch_size", "grad_accum", "seed")


def _rng_state() -> dict:
    return {
        "python": base64.b64encode(json.dumps(random.getstate()).encode()).decode(),
        "numpy": json.loads(json.dumps(np.random.get_state(legacy=False), default=lambda o: o.tolist())),
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
        "cuda": [base64.b64encode(s.numpy().tobytes()).decode() for s in torch.cuda.get_rng_state_all()]
        if torch.cuda.is_available()
        else [],
    }


def _set_rng_state(state: dict) -> None:
    py = json.loads(base64.b64decode(state["python"]))
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = state["numpy"]
    np.random.set_state(np_state)
    torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(state["torch"])), dtype=torch.uint8))
    if torch.cuda.is_available() and state.get("cuda"):
        torch.cuda.set_rng_state_all(
            [torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8) for s in state["cuda"]]
        )


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_CKPT_FILES = ("trainable.safetensors", "optimizer.pt")


def save_checkpoint(
    path: Path, model, optimizer, scheduler, step: int, cfg: TrainConfig, progress: dict | None = None
) -> None:
    """Everything needed to continue exactly: trainable weights, optimizer, scheduler, RNG, step, and the
    run's cumulative counters (``progress``: tokens, supervised tokens, wall time, last loss, data
    fingerprint). ``state.json`` holds a sha256 of each file, checked before a resume trusts it."""
    from safetensors.torch import save_file

    with atomic_dir(path) as tmp:
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        atomic_write_json(
            tmp / "state.json",
            {
                "step": step,
                "scheduler": scheduler.state_dict(),
                "rng": _rng_state(),
                "config": to_dict(cfg),
                "progress": progress or {},
                "sha256": {f: _sha256(tmp / f) for f in _CKPT_FILES},
            },
        )


def _checkpoint_dirs(output_dir: Path) -> list[Path]:
    """``checkpoints/step-NNNNNN`` folders, oldest first; anything else there (a user's ``.bak``, a
    half-written temp folder) is not a checkpoint."""
    import re

    pat = re.compile(r"^step-(\d+)$")
    found = [
        (int(m.group(1)), p) for p in (output_dir / "checkpoints").glob("step-*") if (m := pat.match(p.name))
    ]
    return [p for _, p in sorted(found)]


def checkpoint_problem(path: Path) -> str | None:
    """Why a checkpoint cannot be trusted (missing/truncated files, checksum mismatch), or None."""
    try:
        state = json.loads((path / "state.json").read_text())
    except FileNotFoundError:
        return "no state.json"
    except (ValueError, UnicodeDecodeError) as e:
        return f"state.json unreadable ({e})"
    if not isinstance(state, dict) or "step" not in state:
        return "state.json incomplete"
    for f in _CKPT_FILES:
        if not (path / f).is_file():
            return f"{f} missing"
    sums = state.get("sha256")
    if sums:
        for f in _CKPT_FILES:
            if sums.get(f) != _sha256(path / f):
                return f"{f} does not match its checksum (damaged)"
    return None


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest checkpoint that passes its checks; damaged newer ones are reported and skipped."""
    for p in reversed(_checkpoint_dirs(output_dir)):
        problem = checkpoint_problem(p)
        if problem is None:
            return p
        log.warning("checkpoint %s is damaged (%s); falling back to an older one", p, problem)
    return None


def _with_defaults(saved, default):
    """``saved`` with keys added since it was written filled in from ``default`` (recursively)."""
    if not isinstance(saved, dict) or not isinstance(default, dict):
        return saved
    return {k: _with_defaults(saved[k], default.get(k)) if k in saved else v for k, v in default.items()} | {
        k: v for k, v in saved.items() if k not in default
    }


def _config_drift(saved: dict, cfg: TrainConfig) -> list[str]:
    now = to_dict(cfg)
    saved = _with_defaults(saved, to_dict(TrainConfig()))  # a field added later is not a change
    diffs = [k for k in _RESUME_KEYS if saved.get(k) != now.get(k)]
    diffs += [
        f"train.{k}" for k in _RESUME_TRAIN_KEYS if saved.get("train", {}).get(k) != now["train"].get(k)
    ]
    return diffs


def data_fingerprint(data: TrainingData) -> str:
    """A hash of the training windows (token ids and loss masks, in order): a resume on other task data
    would silently train on a mix."""
    import hashlib

    h = hashlib.sha256()
    for w in data.windows:
        for sq in w.sequences:
            h.update(np.ascontiguousarray(sq.ids, dtype=np.int64).tobytes())
            h.update(np.packbits(sq.loss_mask).tobytes())
    return h.hexdigest()[:16]


def resume_from(output_dir: Path, model, optimizer, scheduler, cfg: TrainConfig, fingerprint: str):
    """Load the newest checkpoint that is intact and loads; a damaged one is reported and the previous
    one used. Returns (step, progress) or (0, {}) when there is none."""
    for path in reversed(_checkpoint_dirs(output_dir)):
        problem = checkpoint_problem(path)
        if problem is None:
            try:
                step = load_checkpoint(path, model, optimizer, scheduler, cfg, fingerprint)
                state = json.loads((path / "state.json").read_text())
                log.info("resumed from %s (step %d)", path, step)
                return step, state.get("progress") or {}
            except (ConfigError, ManyICLError):
                raise
            except Exception as e:  # a truncated tensor file, an optimizer state of another shape, ...
                problem = f"does not load ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        log.warning("checkpoint %s is damaged (%s); falling back to an older one", path, problem)
    return 0, {}


def load_checkpoint(path: Path, model, optimizer, scheduler, cfg: TrainConfig, fingerprint: str = "") -> int:
    from safetensors.torch import load_file

    state = json.loads((path / "state.json").read_text())
    saved_fp = (state.get("progress") or {}).get("data_fingerprint")
    if fingerprint and saved_fp and saved_fp != fingerprint:
        raise ConfigError.single(
            "resume",
            f"the training data changed since checkpoint {path} (task files or build settings differ); "
            "resuming would train on a mix. Restore the data, or start a new output_dir",
        )
    drift = _config_drift(state["config"], cfg)
    if drift:
        raise ConfigError.single(
            "resume",
            f"checkpoint {path} was made with different settings for {', '.join(drift)}; "
            "resume with the same config, or start a new output_dir",
        )
    weights = load_file(str(path / "trainable.safetensors"))
    params = dict(model.named_parameters())
    missing = [n for n in weights if n not in params]
    if missing:
        raise ManyICLError(f"checkpoint {path} has weights this model lacks: {missing[:3]}")
    with torch.no_grad():
        for n, w in weights.items():
            params[n].copy_(w.to(params[n].device, params[n].dtype))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu"))
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return int(state["step"])


def _prune_checkpoints(output_dir: Path, keep: int) -> None:
    ckpts = _checkpoint_dirs(output_dir)
    for p in ckpts[:-keep]:
        shutil.rmtree(p, ignore_errors=True)


def save_final(model, tokenizer, out: Path, lora: bool, state_dict: dict | None = None) -> Path:
    """The PEFT adapter (LoRA) or full model, in safetensors, loadable with standard tools.

    ``state_dict`` is the full (gathered) state dict under FSDP/DeepSpeed, where the live
    parameters are shards.
    """
    target = out / ("adapter" if lora else "model")
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
        if not lora:
            tokenizer.save_pretrained(tmp)
    return target


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    output_dir: Path
    final_dir: Path
    summary: dict


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prepare_model(cfg: TrainConfig, base=None, tokenizer=None):
    """Base model + trainable part (new LoRA, a LoRA adapter to continue, or all weights).

    ``base``/``tokenizer`` reuse an already loaded base model (LoRA wraps it in place; ``unload()``
    on the result gives the untouched base back).
    """
    if base is None:
        base, tokenizer = load_model(replace(cfg.model, adapter=None))
    model = base
    torch.manual_seed(cfg.train.seed)  # LoRA init
    if cfg.lora.enabled:
        model = (
            load_adapter(model, cfg.model.adapter, trainable=True)
            if cfg.model.adapter
            else apply_lora(model, cfg.lora)
        )
    else:
        model.requires_grad_(True)
    if cfg.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    return model, tokenizer


@torch.no_grad()
def validation_loss(model, windows: list[Window], device, layout: str = "row") -> float:
    """Mean cross-entropy per supervised token over ``windows`` (the training objective, no update)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for w in windows:
        loss_sum, n = supervised_loss_sum(model, collate([w], layout), device)
        total += float(loss_sum)
        count += int(n)
    if was_training:
        model.train()
    return total / max(count, 1)


def train(
    cfg: TrainConfig,
    data: TrainingData | None = None,
    model=None,
    tokenizer=None,
    ref_model=None,
    val_data: TrainingData | None = None,
) -> TrainResult:
    """Fine-tune per ``cfg``. ``data``/``model``/``tokenizer`` may be passed in to reuse them.

    ``val_data``: validation windows, scored every ``train.eval_every`` steps (and used for early
    stopping with ``train.early_stopping_patience``).

    ``ref_model`` is the frozen base for ``optim.kl_to_base`` with full fine-tuning; when it is needed and
    not given, a copy of ``model`` is taken before training (and before loading a checkpoint)."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    is_main = accelerator.is_main_process
    out = check_output_dir(cfg.output_dir)
    cfg = replace(cfg, output_dir=str(out))
    if is_main:
        _check_previous_run(out, cfg)
    with exclusive_lock(out, "training") if is_main else nullcontext():
        return _train(cfg, accelerator, out, data, model, tokenizer, ref_model, val_data)


def _check_previous_run(out: Path, cfg: TrainConfig) -> None:
    """Refuse to start over an earlier run (unless resume or overwrite): its checkpoints would outrank
    ours and be kept, its metrics be mixed with ours."""
    found = [
        n for n, present in (
            ("checkpoints", bool(_checkpoint_dirs(out))),
            ("metrics.jsonl", (out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").stat().st_size > 0),
            ("adapter", (out / "adapter").is_dir()),
            ("model", (out / "model").is_dir()),
        ) if present
    ]  # fmt: skip
    for stale in [
        *out.glob(".adapter.*"),
        *out.glob(".model.*"),
        *(out / "checkpoints").glob(".step-*"),
        *out.glob(".*.tmp"),
    ]:
        # half-written temp files of a killed run (we hold the folder's lock: nobody else is writing)
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    if not found or cfg.resume:
        return
    if cfg.overwrite:
        log.warning("overwrite=true: replacing the run in %s (%s)", out, ", ".join(found))
        for n in ("checkpoints", "adapter", "model", "tensorboard"):
            shutil.rmtree(out / n, ignore_errors=True)
        for n in ("metrics.jsonl", "train_summary.json"):
            (out / n).unlink(missing_ok=True)
        return
    raise ConfigError.single(
        "output_dir",
        f"{out} already holds a training run ({', '.join(found)}); continue it with --resume, replace it with "
        "overwrite=true, or choose another output_dir",
    )


def _train(cfg, accelerator, out, data, model, tokenizer, ref_model, val_data) -> TrainResult:
    from tqdm.auto import tqdm

    world, rank, is_main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    random.seed(cfg.train.seed)
    np.random.seed(cfg.train.seed)
    tasks = load_tasks(cfg.data.tasks) if data is None else None  # bad task data fails before the model loads
    if model is None:
        model, tokenizer = prepare_model(cfg)
    if data is None:
        data = build_training_data(tasks, tokenizer, cfg.data)
    if not data.windows:
        raise ManyICLError("the build has no training windows: check data.tasks and data.train_split")
    kl_w = cfg.optim.kl_to_base
    if kl_w:
        if not any(s.tag == KL_TAG for w in data.windows for s in w.sequences):
            log.warning(
                "optim.kl_to_base=%g but no training sequence is tagged %r: the term is 0", kl_w, KL_TAG
            )
        if not cfg.lora.enabled and ref_model is None:
            import copy

            ref_model = copy.deepcopy(model)
        if ref_model is not None:
            ref_model.eval().requires_grad_(False)
    else:
        ref_model = None
    sharded = accelerator.distributed_type.name in ("FSDP", "DEEPSPEED")
    if sharded:  # the estimate is for one unsharded replica
        mem_est = None
        log.info("memory guard: skipped under %s (sharded state)", accelerator.distributed_type.name)
    else:
        mem_est = training_guard(
            model, cfg, data.windows, accelerator.device, reference_model=kl_w > 0 and ref_model is not None
        )
        log.info(
            "memory estimate: %.0f MB of %.0f MB budget (%s)",
            mem_est["total_mb"],
            mem_est["budget_mb"],
            ", ".join(
                f"{k[:-3]} {v:.0f}"
                for k, v in mem_est.items()
                if k.endswith("_mb") and k not in ("total_mb", "budget_mb")
            ),
        )
    if cfg.train.epochs:
        per_step = world * cfg.train.grad_accum * cfg.train.micro_batch_size
        steps = max(1, math.ceil(cfg.train.epochs * len(data.windows) / per_step))
        cfg = replace(cfg, train=replace(cfg.train, max_steps=steps))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    n_trainable, n_total = count_parameters(model)
    optimizer = torch.optim.AdamW(
        params,
        lr=cfg.optim.lr,
        betas=tuple(cfg.optim.betas),
        eps=cfg.optim.eps,
        weight_decay=cfg.optim.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(cfg.optim.warmup_steps, cfg.train.max_steps, cfg.optim.min_lr_ratio)
    )
    start, prev = 0, {}
    fingerprint = data_fingerprint(data)
    if cfg.resume:
        start, prev = resume_from(out, model, optimizer, scheduler, cfg, fingerprint)
        if not start:
            log.info("resume: no usable checkpoint in %s yet, starting from step 0", out / "checkpoints")
    model, optimizer = accelerator.prepare(model, optimizer)
    device = accelerator.device
    base_forward = None
    if kl_w:
        if ref_model is not None:
            ref_model.to(device)
        base_forward = _base_forward(model, ref_model, accelerator)
    layout = cfg.train.layout if cfg.train.layout != "auto" else ("rows" if device.type == "cuda" else "row")
    sched = StepSchedule(
        len(data.windows), world, cfg.train.grad_accum, cfg.train.micro_batch_size, cfg.train.seed
    )

    metrics_path = out / "metrics.jsonl"
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", dump_yaml(cfg))
        atomic_write_json(out / "data_stats.json", data.stats.to_dict())
        kept = []
        if start and metrics_path.exists():
            kept = [
                ln for ln in metrics_path.read_text(errors="replace").splitlines() if _step_of(ln) <= start
            ]
        atomic_write_text(metrics_path, "".join(ln + "\n" for ln in kept))
    tb = _tensorboard(out) if is_main else None
    log.info(
        "training %s: %d windows, %s trainable of %s params, %d steps x %d processes x %d accum x %d windows",
        cfg.model.name_or_path,
        len(data.windows),
        f"{n_trainable:,}",
        f"{n_total:,}",
        cfg.train.max_steps,
        world,
        cfg.train.grad_accum,
        cfg.train.micro_batch_size,
    )

    bar = tqdm(
        total=cfg.train.max_steps,
        initial=start,
        disable=not (is_main and cfg.progress),
        desc="train",
        unit="step",
    )
    t0 = time.perf_counter()
    mem = PeakMemory(interval=0.05).start()
    tokens_seen = sup_seen = 0
    last_loss = float(prev.get("last_loss", float("nan")))
    prev_tokens, prev_sup, prev_wall = (
        int(prev.get(k, 0)) for k in ("tokens", "supervised_tokens", "wall_ms")
    )

    def progress(elapsed_s: float) -> dict:
        """Counters of the whole run, over every resume (what the cost tables report)."""
        return {
            "tokens": prev_tokens + tokens_seen,
            "supervised_tokens": prev_sup + sup_seen,
            "wall_ms": prev_wall + int(1000 * elapsed_s),
            "last_loss": last_loss,
            "data_fingerprint": fingerprint,
        }

    last_kl = None
    kl_run = torch.zeros(2, dtype=torch.float64)  # KL sum and positions over this invocation
    end = cfg.train.max_steps
    if cfg.train.stop_after_steps:
        end = min(end, start + cfg.train.stop_after_steps)
    val_every = cfg.train.eval_every if val_data is not None and val_data.windows else 0
    val_curve: list[tuple[int, float]] = []
    best_val, best_step, best_state, stale = float("inf"), None, None, 0
    stopped_early = False
    val_s = 0.0  # validation time, kept out of tokens/s
    if val_every and is_main and start == 0:
        tv = time.perf_counter()
        v0 = validation_loss(model, val_data.windows, device, layout)
        val_s += time.perf_counter() - tv
        val_curve.append((0, v0))
        with metrics_path.open("a") as f:
            f.write(json.dumps({"step": 0, "val_loss": round(v0, 6)}) + "\n")
    for step in range(start, end):
        idx = sched.step_indices(step)
        step_windows: list[list[Window]] = [[data.windows[i] for i in micro] for r in idx for micro in r]
        total_sup = sum(w.supervised_tokens for ws in step_windows for w in ws)
        step_tokens = sum(len(w) for ws in step_windows for w in ws)
        loss_acc = torch.zeros((), device=device)
        kl_acc = torch.zeros(2, device=device)  # KL sum, KL positions
        for j, micro in enumerate(idx[rank]):
            sync = j == cfg.train.grad_accum - 1
            if not kl_w:
                batch = collate([data.windows[i] for i in micro], layout)
                with nullcontext() if sync else accelerator.no_sync(model):
                    loss_sum, _ = supervised_loss_sum(model, batch, device)
                    # DDP averages gradients over processes; scale by world so the result is sum / total_sup.
                    accelerator.backward(loss_sum * world / max(total_sup, 1))
            else:
                batch = collate([data.windows[i] for i in micro], layout, tag=KL_TAG)
                with nullcontext() if sync else accelerator.no_sync(model):
                    loss_sum, _, kl_sum, n_kl = supervised_loss_and_kl(model, batch, device, base_forward)
                    accelerator.backward((loss_sum + kl_w * kl_sum) * world / max(total_sup, 1))
                kl_acc += torch.stack([kl_sum.detach().float(), torch.tensor(float(n_kl), device=device)])
            loss_acc += loss_sum.detach()
        if cfg.optim.max_grad_norm > 0:
            grad_norm = float(accelerator.clip_grad_norm_(params, cfg.optim.max_grad_norm))
        else:
            grad_norm = float("nan")
        lr_used = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss_global = float(accelerator.reduce(loss_acc, reduction="sum")) / max(total_sup, 1)
        last_loss = loss_global
        if kl_w:
            kl_tot, kl_n = accelerator.reduce(kl_acc, reduction="sum").tolist()
            step_kl = kl_tot / kl_n if kl_n else None  # None: no tagged window in this step
            if kl_n:
                last_kl = step_kl
                kl_run += torch.tensor([kl_tot, kl_n], dtype=torch.float64)
        tokens_seen += step_tokens
        sup_seen += total_sup
        elapsed = time.perf_counter() - t0 - val_s
        done = step + 1
        if is_main and (done % cfg.train.log_every == 0 or done == cfg.train.max_steps):
            rec = {
                "step": done,
                "loss": round(loss_global, 6),
                "lr": lr_used,
                "grad_norm": grad_norm,
                "tokens": step_tokens,
                "supervised_tokens": total_sup,
                "tokens_per_s": tokens_seen / elapsed,
                "elapsed_s": elapsed,
            }
            if kl_w:
                rec["kl"] = step_kl  # mean KL(base || model) per tagged supervised token (nats)
                rec["kl_tokens"] = int(kl_n)
            with metrics_path.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            if tb is not None:
                for k in ("loss", "lr", "tokens_per_s", "grad_norm"):
                    tb.add_scalar(f"train/{k}", rec[k], done)
        bar.set_postfix(loss=f"{loss_global:.4f}", tok_s=f"{tokens_seen / elapsed:,.0f}")
        bar.update(1)
        if val_every and (done % val_every == 0 or done == cfg.train.max_steps):
            tv = time.perf_counter()
            v = validation_loss(accelerator.unwrap_model(model), val_data.windows, device, layout)
            val_s += time.perf_counter() - tv
            val_curve.append((done, v))
            if is_main:
                with metrics_path.open("a") as f:
                    f.write(json.dumps({"step": done, "val_loss": round(v, 6)}) + "\n")
            if v < best_val - 1e-6:
                best_val, best_step, stale = v, done, 0
                if cfg.train.early_stopping_patience:
                    best_state = {
                        k: t.detach().clone()
                        for k, t in trainable_state(accelerator.unwrap_model(model)).items()
                    }
            else:
                stale += 1
            if cfg.train.early_stopping_patience and stale >= cfg.train.early_stopping_patience:
                log.info(
                    "early stop at step %d: validation loss best at step %d (%.4f)", done, best_step, best_val
                )
                stopped_early = True
                break
        if done < cfg.train.max_steps and (
            (cfg.train.save_every and done % cfg.train.save_every == 0) or done == end
        ):
            accelerator.wait_for_everyone()
            if is_main:
                save_checkpoint(
                    out / "checkpoints" / f"step-{done:06d}",
                    accelerator.unwrap_model(model),
                    optimizer,
                    scheduler,
                    done,
                    cfg,
                    progress(time.perf_counter() - t0 - val_s),
                )
                _prune_checkpoints(out, cfg.train.keep_checkpoints)
    bar.close()
    elapsed = time.perf_counter() - t0 - val_s
    mem.stop()
    accelerator.wait_for_everyone()
    if end < cfg.train.max_steps and not stopped_early:
        log.info("stopped after step %d of %d; continue with --resume", end, cfg.train.max_steps)
        return TrainResult(out, out / "checkpoints" / f"step-{end:06d}", {})
    unwrapped = accelerator.unwrap_model(model)
    if best_state is not None:  # early stopping keeps the weights of the best validation loss
        with torch.no_grad():
            named = dict(unwrapped.named_parameters())
            for k, t in best_state.items():
                named[k].copy_(t)
    final_dir = out / ("adapter" if cfg.lora.enabled else "model")
    summary = {
        "steps": cfg.train.max_steps,
        "resumed_from_step": start,
        "processes": world,
        "final_loss": last_loss,
        # whole-run counters: a resumed run adds what its checkpoint had counted
        "tokens_processed": prev_tokens + tokens_seen,
        "supervised_tokens": prev_sup + sup_seen,
        "wall_s": prev_wall / 1000 + elapsed,
        "tokens_per_s": (prev_tokens + tokens_seen) / (prev_wall / 1000 + elapsed)
        if elapsed or prev_wall
        else None,
        "trainable_params": n_trainable,
        "total_params": n_total,
        "peak_rss_mb": peak_rss_mb(),
        # the estimate made before training (memory guard) next to the peak measured while it ran
        "memory": {"estimate": mem_est, "measured": mem.as_dict()},
        "build": data.stats.totals(),
    }
    if val_every:
        summary["val_curve"] = [{"step": a, "val_loss": b} for a, b in val_curve]
        summary["best_val_step"] = best_step
        summary["best_val_loss"] = best_val if best_step is not None else None
        summary["stopped_early"] = stopped_early
        summary["validation_s"] = val_s
        summary["steps_run"] = val_curve[-1][0] if val_curve else cfg.train.max_steps
    if kl_w:
        summary["kl_to_base"] = kl_w
        summary["final_kl"] = last_kl  # of the last step with tagged windows
        summary["mean_kl"] = float(kl_run[0] / kl_run[1]) if kl_run[1] else None
        summary["kl_tokens"] = int(kl_run[1])
    if torch.cuda.is_available():
        summary["cuda_max_memory_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    full_state = accelerator.get_state_dict(model) if sharded else None  # a collective: every rank calls it
    if is_main:
        save_final(unwrapped, tokenizer, out, cfg.lora.enabled, state_dict=full_state)
        if cfg.train.save_every:
            save_checkpoint(
                out / "checkpoints" / f"step-{cfg.train.max_steps:06d}",
                unwrapped,
                optimizer,
                scheduler,
                cfg.train.max_steps,
                cfg,
                progress(elapsed),
            )
            _prune_checkpoints(out, cfg.train.keep_checkpoints)
        atomic_write_json(out / "train_summary.json", summary)
        if tb is not None:
            tb.close()
        log.info("saved %s (loss %.4f, %.0f tokens/s)", final_dir, last_loss, summary["tokens_per_s"] or 0)
    accelerator.wait_for_everyone()
    return TrainResult(out, final_dir, summary)


def _step_of(line: str) -> float:
    """The step of a metrics line; a torn or foreign line (a crash mid-write) counts as after every step,
    so a resume drops it instead of failing on it."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return float("inf")


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(out / "tensorboard"))
