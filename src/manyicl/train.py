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
from .modeling import apply_lora, count_parameters, load_adapter, load_model
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


def lr_lambda(warmup: int, total: int, min_ratio: float):
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


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
        base_forward = make_base_forward(model, ref_model, accelerator)
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
                prune_checkpoints(out, cfg.train.keep_checkpoints)
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
            prune_checkpoints(out, cfg.train.keep_checkpoints)
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
