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

import json
import logging
import math
import random
import resource
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .checkpoints import (  # noqa: F401 - latest_checkpoint, load_checkpoint re-exported
    checkpoint_dirs,
    data_fingerprint,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    resume_from,
    save_checkpoint,
    save_final,
    trainable_state,
)
from .config import TrainConfig, dump_yaml
from .data import TrainingData, build_training_data, load_tasks, stable_seed
from .errors import ManyICLError
from .fileio import atomic_write_json, atomic_write_text, check_output_dir, exclusive_lock
from .losses import KL_TAG, make_base_forward, supervised_loss_and_kl, supervised_loss_sum
from .memory import PeakMemory, training_guard
from .modeling import apply_lora, count_parameters, load_adapter, load_model, resolve_dtype
from .optimize import Loss, LossFn, Optimization, StepBatch, StepResult, run_steps
from .packing import Window, collate

log = logging.getLogger(__name__)


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
def validation_loss(model, windows: list[Window], device, layout: str = "row", chunk: int = 0) -> float:
    """Mean cross-entropy per supervised token over ``windows`` (the training objective, no update);
    ``chunk`` as in :func:`supervised_loss_sum`."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for w in windows:
        loss_sum, n = supervised_loss_sum(model, collate([w], layout), device, chunk)
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
    with exclusive_lock(out, "training") if is_main else nullcontext():
        if is_main:  # under the lock: the stale files it removes cannot be another live run's
            _check_previous_run(out, cfg)
        return _train(cfg, accelerator, out, data, model, tokenizer, ref_model, val_data)


def _check_previous_run(out: Path, cfg: TrainConfig) -> None:
    """Refuse to start over an earlier run (unless resume or overwrite): its checkpoints would outrank
    ours and be kept, its metrics be mixed with ours."""
    from .runs import RunFolder, nonempty_file

    folder = RunFolder(
        out,
        "training",
        {
            "checkpoints": lambda p: bool(checkpoint_dirs(p.parent)),
            "metrics.jsonl": nonempty_file,
            "adapter": Path.is_dir,
            "model": Path.is_dir,
        },
        owned=("checkpoints", "adapter", "model", "tensorboard", "metrics.jsonl", "train_summary.json"),
        resume_hint="--resume",
        partial=(".adapter.*", ".model.*", "checkpoints/.step-*", ".*.tmp"),
    )
    folder.clean_partial()  # we hold the folder's lock: nobody else is writing
    folder.claim(cfg.resume, cfg.overwrite)


def _train(cfg, accelerator, out, data, model, tokenizer, ref_model, val_data) -> TrainResult:
    """Set up (model, data, memory guard, resume), run the shared step loop, save the result."""
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
    ref_model = _reference_model(cfg, data, model, ref_model)
    sharded = accelerator.distributed_type.name in ("FSDP", "DEEPSPEED")
    mem_est = None if sharded else _memory_estimate(model, cfg, data, accelerator, ref_model)
    if sharded:  # the estimate is for one unsharded replica
        log.info("memory guard: skipped under %s (sharded state)", accelerator.distributed_type.name)
    if cfg.train.epochs:
        per_step = world * cfg.train.grad_accum * cfg.train.micro_batch_size
        steps = max(1, math.ceil(cfg.train.epochs * len(data.windows) / per_step))
        cfg = replace(cfg, train=replace(cfg.train, max_steps=steps))
    model.train()
    n_trainable, n_total = count_parameters(model)
    opt = Optimization((p for p in model.parameters() if p.requires_grad), cfg.optim, cfg.train.max_steps)
    start, prev = 0, {}
    fingerprint = data_fingerprint(data)
    if cfg.resume:
        start, prev = resume_from(out, model, opt.optimizer, opt.scheduler, cfg, fingerprint)
        if not start:
            log.info("resume: no usable checkpoint in %s yet, starting from step 0", out / "checkpoints")
    model = opt.prepare(accelerator, model)
    device = accelerator.device
    layout = cfg.train.layout if cfg.train.layout != "auto" else ("rows" if device.type == "cuda" else "row")
    loss_fn = _window_loss(cfg, model, ref_model, accelerator, layout)
    sched = StepSchedule(
        len(data.windows), world, cfg.train.grad_accum, cfg.train.micro_batch_size, cfg.train.seed
    )

    def batches(step: int) -> StepBatch:
        idx = sched.step_indices(step)
        every = [data.windows[i] for r in idx for micro in r for i in micro]
        return StepBatch(
            [[data.windows[i] for i in micro] for micro in idx[rank]],
            targets=sum(w.supervised_tokens for w in every),
            tokens=sum(len(w) for w in every),
        )

    if is_main:
        atomic_write_text(out / "config.yaml", dump_yaml(cfg))
        atomic_write_json(out / "data_stats.json", data.stats.to_dict())
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
    end = cfg.train.max_steps
    if cfg.train.stop_after_steps:
        end = min(end, start + cfg.train.stop_after_steps)
    dtype = resolve_dtype(cfg.model.dtype, cfg.model.device)  # what `auto` is on this machine
    mon = _Monitor(cfg, out, accelerator, start, prev, fingerprint, val_data, layout, dtype)
    mon.begin(model)

    def checkpoint(done: int) -> None:
        accelerator.wait_for_everyone()
        if is_main:
            path = out / "checkpoints" / f"step-{done:06d}"
            unwrapped = accelerator.unwrap_model(model)
            save_checkpoint(path, unwrapped, opt.optimizer, opt.scheduler, done, cfg, mon.progress())
            prune_checkpoints(out, cfg.train.keep_checkpoints)

    _, stopped_early = run_steps(
        opt,
        model,
        loss_fn,
        batches,
        start,
        end,
        after_step=lambda r: mon.after_step(r, model),
        checkpoint=checkpoint,
        save_every=cfg.train.save_every,
        total=cfg.train.max_steps,
    )
    mon.close()
    accelerator.wait_for_everyone()
    if end < cfg.train.max_steps and not stopped_early:
        log.info("stopped after step %d of %d; continue with --resume", end, cfg.train.max_steps)
        return TrainResult(out, out / "checkpoints" / f"step-{end:06d}", {})
    unwrapped = accelerator.unwrap_model(model)
    mon.restore_best(unwrapped)
    final_dir = out / ("adapter" if cfg.lora.enabled else "model")
    summary = {
        "steps": cfg.train.max_steps,
        "resumed_from_step": start,
        "processes": world,
        **mon.summary(),
        "trainable_params": n_trainable,
        "total_params": n_total,
        # what `auto` became on the machine(s) that trained (CPUs differ: native bf16 or not), per part
        **mon.dtype_summary(),
        "peak_rss_mb": peak_rss_mb(),
        # the estimate made before training (memory guard) next to the peak measured while it ran
        "memory": {"estimate": mem_est, "measured": mon.mem.as_dict()},
        "build": data.stats.totals(),
    }
    summary |= mon.validation_summary() | mon.kl_summary()
    if torch.cuda.is_available():
        summary["cuda_max_memory_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    full_state = accelerator.get_state_dict(model) if sharded else None  # a collective: every rank calls it
    if is_main:
        save_final(unwrapped, tokenizer, out, cfg.lora.enabled, state_dict=full_state)
        if cfg.train.save_every:
            n = cfg.train.max_steps
            save_checkpoint(
                out / "checkpoints" / f"step-{n:06d}",
                unwrapped,
                opt.optimizer,
                opt.scheduler,
                n,
                cfg,
                mon.progress(),
            )
            prune_checkpoints(out, cfg.train.keep_checkpoints)
        atomic_write_json(out / "train_summary.json", summary)
        mon.close_tensorboard()
        log.info(
            "saved %s (loss %.4f, %.0f tokens/s)", final_dir, mon.last_loss, summary["tokens_per_s"] or 0
        )
    accelerator.wait_for_everyone()
    return TrainResult(out, final_dir, summary)


def _reference_model(cfg: TrainConfig, data: TrainingData, model, ref_model):
    """The frozen base the KL-to-base term compares with (None: off, or LoRA's adapter-disabled base)."""
    kl_w = cfg.optim.kl_to_base
    if not kl_w:
        return None
    if not any(s.tag == KL_TAG for w in data.windows for s in w.sequences):
        log.warning("optim.kl_to_base=%g but no training sequence is tagged %r: the term is 0", kl_w, KL_TAG)
    if not cfg.lora.enabled and ref_model is None:
        import copy

        ref_model = copy.deepcopy(model)
    if ref_model is not None:
        ref_model.eval().requires_grad_(False)
    return ref_model


def loss_chunk(cfg: TrainConfig, world: int) -> int:
    """Supervised positions per chunk of the cross-entropy (0: all at once): chunked in one process
    only (a DDP/FSDP wrapper's forward must run) and not with the KL term (it needs every distribution)."""
    return cfg.train.loss_chunk_tokens if world == 1 and not cfg.optim.kl_to_base else 0


def _memory_estimate(model, cfg: TrainConfig, data: TrainingData, accelerator, ref_model) -> dict:
    """The memory guard (refuses a run that would not fit) and its estimate, logged."""
    mem_est = training_guard(
        model,
        cfg,
        data.windows,
        accelerator.device,
        reference_model=cfg.optim.kl_to_base > 0 and ref_model is not None,
        loss_chunk=loss_chunk(cfg, accelerator.num_processes),
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
    return mem_est


def _window_loss(cfg: TrainConfig, model, ref_model, accelerator, layout: str) -> LossFn:
    """The loss of a micro-batch of windows: summed cross-entropy, plus ``optim.kl_to_base`` x KL(base ||
    model) on the tagged windows when that is on (stats: KL sum, KL positions)."""
    device = accelerator.device
    kl_w = cfg.optim.kl_to_base
    if not kl_w:
        chunk = loss_chunk(cfg, accelerator.num_processes)

        def plain(model, windows: list[Window]) -> Loss:
            loss_sum, _ = supervised_loss_sum(model, collate(windows, layout), device, chunk)
            return Loss(loss_sum, loss_sum)

        return plain
    if ref_model is not None:
        ref_model.to(device)
    base_forward = make_base_forward(model, ref_model, accelerator)

    def with_kl(model, windows: list[Window]) -> Loss:
        batch = collate(windows, layout, tag=KL_TAG)
        loss_sum, _, kl_sum, n_kl = supervised_loss_and_kl(model, batch, device, base_forward)
        stats = torch.stack([kl_sum.detach().float(), torch.tensor(float(n_kl), device=device)])
        return Loss(loss_sum + kl_w * kl_sum, loss_sum, stats)

    return with_kl


class _Monitor:
    """What a training run records around the shared step loop: metrics.jsonl, TensorBoard, the progress
    bar, whole-run counters (over every resume), validation with early stopping, and the KL statistics."""

    def __init__(
        self,
        cfg: TrainConfig,
        out: Path,
        accelerator,
        start: int,
        prev: dict,
        fingerprint,
        val_data,
        layout,
        dtype: str,
    ):
        from tqdm.auto import tqdm

        self.cfg, self.acc, self.is_main = cfg, accelerator, accelerator.is_main_process
        self.metrics_path = out / "metrics.jsonl"
        if self.is_main:
            kept = []
            if start and self.metrics_path.exists():
                text = self.metrics_path.read_text(errors="replace")
                kept = [ln for ln in text.splitlines() if _step_of(ln) <= start]
            atomic_write_text(self.metrics_path, "".join(ln + "\n" for ln in kept))
        self.tb = _tensorboard(out) if self.is_main else None
        self.bar = tqdm(
            total=cfg.train.max_steps,
            initial=start,
            disable=not (self.is_main and cfg.progress),
            desc="train",
            unit="step",
        )
        self.start, self.fingerprint, self.layout = start, fingerprint, layout
        self.t0 = time.perf_counter()
        self.mem = PeakMemory(interval=0.05).start()
        self.tokens_seen = self.sup_seen = 0
        self.last_loss = float(prev.get("last_loss", float("nan")))
        self.prev_tokens, self.prev_sup, self.prev_wall = (
            int(prev.get(k, 0)) for k in ("tokens", "supervised_tokens", "wall_ms")
        )
        # [first step, dtype] per part of the run: a resume on another machine may resolve `auto` otherwise
        # (a checkpoint made before they were recorded: its steps ran in an unknown dtype)
        self.dtypes = [list(x) for x in prev.get("dtype_segments", [[1, None if start else dtype]])]
        if self.dtypes[-1][1] != dtype:
            if self.is_main and self.dtypes[-1][1] is not None:
                log.warning(
                    "resume: steps %d-%d ran in %s, this machine continues in %s (model.dtype=%s); set "
                    "model.dtype explicitly to keep one precision across machines",
                    self.dtypes[-1][0], start, self.dtypes[-1][1], dtype, cfg.model.dtype,
                )  # fmt: skip
            self.dtypes.append([start + 1, dtype])
        self.kl_w = cfg.optim.kl_to_base
        self.last_kl = None
        self.kl_run = torch.zeros(2, dtype=torch.float64)  # KL sum and positions over this invocation
        self.val_windows = val_data.windows if val_data is not None and val_data.windows else []
        self.val_every = cfg.train.eval_every if self.val_windows else 0
        self.val_curve: list[tuple[int, float]] = []
        self.best_val, self.best_step, self.best_state, self.stale = float("inf"), None, None, 0
        self.stopped_early = False
        self.val_s = 0.0  # validation time, kept out of tokens/s
        self.wall: float | None = None  # set when the loop ends

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0 - self.val_s

    def progress(self) -> dict:
        """Counters of the whole run, over every resume (what the cost tables report)."""
        elapsed = self.wall if self.wall is not None else self.elapsed()
        return {
            "tokens": self.prev_tokens + self.tokens_seen,
            "supervised_tokens": self.prev_sup + self.sup_seen,
            "wall_ms": self.prev_wall + int(1000 * elapsed),
            "last_loss": self.last_loss,
            "data_fingerprint": self.fingerprint,
            "dtype_segments": self.dtypes,
        }

    def dtype_summary(self) -> dict:
        """``dtype`` (one name, or each part's with its steps when a resume changed it) and the parts."""
        if len(self.dtypes) == 1:
            return {"dtype": self.dtypes[0][1], "dtype_segments": self.dtypes}
        ends = [s for s, _ in self.dtypes[1:]] + [self.cfg.train.max_steps + 1]
        text = " + ".join(
            f"{d or 'not recorded'} (steps {s}-{e - 1})" for (s, d), e in zip(self.dtypes, ends, strict=True)
        )
        return {"dtype": text, "dtype_segments": self.dtypes}

    def _write(self, rec: dict) -> None:
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(rec) + "\n")

    def _validate(self, model) -> float:
        tv = time.perf_counter()
        v = validation_loss(
            model,
            self.val_windows,
            self.acc.device,
            self.layout,
            loss_chunk(self.cfg, self.acc.num_processes),
        )
        self.val_s += time.perf_counter() - tv
        return v

    def begin(self, model) -> None:
        """The step-0 validation loss of a fresh run."""
        if self.val_every and self.is_main and self.start == 0:
            v0 = self._validate(model)
            self.val_curve.append((0, v0))
            self._write({"step": 0, "val_loss": round(v0, 6)})

    def after_step(self, r: StepResult, model) -> bool:
        """Count, log and validate one step; True: stop early (validation stopped improving)."""
        cfg, done = self.cfg, r.done
        self.last_loss = r.loss
        step_kl = None
        if self.kl_w:
            kl_tot, kl_n = r.stats
            step_kl = kl_tot / kl_n if kl_n else None  # None: no tagged window in this step
            if kl_n:
                self.last_kl = step_kl
                self.kl_run += torch.tensor([kl_tot, kl_n], dtype=torch.float64)
        self.tokens_seen += r.tokens
        self.sup_seen += r.targets
        elapsed = self.elapsed()
        if self.is_main and (done % cfg.train.log_every == 0 or done == cfg.train.max_steps):
            rec = {
                "step": done,
                "loss": round(r.loss, 6),
                "lr": r.lr,
                "grad_norm": r.grad_norm,
                "tokens": r.tokens,
                "supervised_tokens": r.targets,
                "tokens_per_s": self.tokens_seen / elapsed,
                "elapsed_s": elapsed,
            }
            if self.kl_w:
                rec["kl"] = step_kl  # mean KL(base || model) per tagged supervised token (nats)
                rec["kl_tokens"] = int(kl_n)
            self._write(rec)
            if self.tb is not None:
                for k in ("loss", "lr", "tokens_per_s", "grad_norm"):
                    self.tb.add_scalar(f"train/{k}", rec[k], done)
        self.bar.set_postfix(loss=f"{r.loss:.4f}", tok_s=f"{self.tokens_seen / elapsed:,.0f}")
        self.bar.update(1)
        if self.val_every and (done % self.val_every == 0 or done == cfg.train.max_steps):
            return self._validation_step(done, self.acc.unwrap_model(model))
        return False

    def _validation_step(self, done: int, unwrapped) -> bool:
        patience = self.cfg.train.early_stopping_patience
        v = self._validate(unwrapped)
        self.val_curve.append((done, v))
        if self.is_main:
            self._write({"step": done, "val_loss": round(v, 6)})
        if v < self.best_val - 1e-6:
            self.best_val, self.best_step, self.stale = v, done, 0
            if patience:
                self.best_state = {k: t.detach().clone() for k, t in trainable_state(unwrapped).items()}
        else:
            self.stale += 1
        if patience and self.stale >= patience:
            log.info(
                "early stop at step %d: validation loss best at step %d (%.4f)",
                done,
                self.best_step,
                self.best_val,
            )
            self.stopped_early = True
        return self.stopped_early

    def close(self) -> None:
        self.bar.close()
        self.wall = self.elapsed()
        self.mem.stop()

    def restore_best(self, unwrapped) -> None:
        """Early stopping keeps the weights of the best validation loss."""
        if self.best_state is not None:
            with torch.no_grad():
                named = dict(unwrapped.named_parameters())
                for k, t in self.best_state.items():
                    named[k].copy_(t)

    def summary(self) -> dict:
        """Whole-run counters: a resumed run adds what its checkpoint had counted."""
        tokens, wall = self.prev_tokens + self.tokens_seen, self.prev_wall / 1000 + self.wall
        return {
            "final_loss": self.last_loss,
            "tokens_processed": tokens,
            "supervised_tokens": self.prev_sup + self.sup_seen,
            "wall_s": wall,
            "tokens_per_s": tokens / wall if self.wall or self.prev_wall else None,
        }

    def validation_summary(self) -> dict:
        if not self.val_every:
            return {}
        return {
            "val_curve": [{"step": a, "val_loss": b} for a, b in self.val_curve],
            "best_val_step": self.best_step,
            "best_val_loss": self.best_val if self.best_step is not None else None,
            "stopped_early": self.stopped_early,
            "validation_s": self.val_s,
            "steps_run": self.val_curve[-1][0] if self.val_curve else self.cfg.train.max_steps,
        }

    def kl_summary(self) -> dict:
        if not self.kl_w:
            return {}
        return {
            "kl_to_base": self.kl_w,
            "final_kl": self.last_kl,  # of the last step with tagged windows
            "mean_kl": float(self.kl_run[0] / self.kl_run[1]) if self.kl_run[1] else None,
            "kl_tokens": int(self.kl_run[1]),
        }

    def close_tensorboard(self) -> None:
        if self.tb is not None:
            self.tb.close()


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
