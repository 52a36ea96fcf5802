"""The optimisation kernel every training workflow shares (``train``, ``icl-preserve``, ``distill``).

:class:`Optimization` owns AdamW, the warm-up + cosine schedule, gradient clipping and accumulation;
:func:`run_steps` is the step loop. A workflow brings only what differs: a ``loss_fn(model, micro_batch)
-> Loss`` and a ``batches(step) -> StepBatch`` giving each optimizer step's micro-batches, plus hooks
for what happens after a step (metrics, validation, early stopping) and for checkpoints.

Normalisation: each micro-batch's loss is a *sum* over its targets; the step divides by the targets of
the whole step (``StepBatch.targets``: every micro-batch, every process), so accumulation and data
parallelism give the update of one big batch. A workflow whose loss is a mean per example (distill)
counts one target per example, which makes the step's loss the mean over the step's examples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from .config import OptimConfig


def lr_lambda(warmup: int, total: int, min_ratio: float):
    """LR multiplier at a step: linear warm-up over ``warmup`` steps, then cosine down to ``min_ratio``."""

    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


class Loss(NamedTuple):
    """What a loss function returns for one micro-batch (sums over its targets, not means)."""

    objective: torch.Tensor
    """Differentiated: the loss plus any regulariser."""
    reported: torch.Tensor
    """The step's reported loss adds these (the objective without regularisers)."""
    stats: torch.Tensor | None = None
    """Extra sums to add over micro-batches and processes (e.g. KL sum and KL positions), or None."""


LossFn = Callable[[Any, Any], Loss]


@dataclass
class StepBatch:
    """One optimizer step's work for this process."""

    micro: list
    """This process's micro-batches, in order (gradients are accumulated over them)."""
    targets: int
    """The normaliser: targets in the whole step (every micro-batch, every process)."""
    tokens: int = 0
    """Tokens in the whole step (for throughput metrics only)."""


@dataclass
class StepResult:
    """What one optimizer step did (every process holds the same values)."""

    done: int
    """Steps done after this one (1-based)."""
    loss: float
    """Reported loss summed over the step (all processes) / targets."""
    lr: float
    """The learning rate this step used."""
    grad_norm: float
    """Gradient norm before clipping (NaN when clipping is off)."""
    targets: int
    tokens: int
    stats: list[float] | None
    """``Loss.stats`` summed over the step's micro-batches and processes."""


class SingleProcess:
    """The Accelerate calls the kernel makes, for one process without Accelerate (distill's students):
    plain ``backward``, ``clip_grad_norm_``, no gradient sync to skip, nothing to reduce."""

    num_processes = 1

    def prepare(self, model, optimizer):
        return model, optimizer

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def no_sync(self, model):
        return nullcontext()

    def clip_grad_norm_(self, params, max_norm: float) -> torch.Tensor:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    def reduce(self, t: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        return t


class Optimization:
    """AdamW + LR schedule + clipping over ``params`` for ``total_steps`` steps, per ``optim``.

    Create it on the bare model (a checkpoint loads into :attr:`optimizer` and :attr:`scheduler`), then
    :meth:`prepare` it with the engine (an ``accelerate.Accelerator``, or :class:`SingleProcess`)."""

    def __init__(self, params: Iterable[torch.nn.Parameter], optim: OptimConfig, total_steps: int):
        self.params = list(params)
        self.max_grad_norm = optim.max_grad_norm
        self.optimizer = torch.optim.AdamW(
            self.params,
            lr=optim.lr,
            betas=tuple(optim.betas),
            eps=optim.eps,
            weight_decay=optim.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(optim.warmup_steps, total_steps, optim.min_lr_ratio)
        )
        self.engine: Any = SingleProcess()

    def prepare(self, engine, model):
        """Hand the model and optimizer to ``engine`` (device placement, DDP wrapping); returns the model
        to train. The scheduler keeps driving the same optimizer."""
        model, self.optimizer = engine.prepare(model, self.optimizer)
        self.engine = engine
        return model

    def step(self, model, batch: StepBatch, loss_fn: LossFn, done: int) -> StepResult:
        """Accumulate gradients over the batch's micro-batches, clip, update, advance the schedule."""
        eng = self.engine
        world = eng.num_processes
        loss_acc = stats_acc = None
        last = len(batch.micro) - 1
        for j, micro in enumerate(batch.micro):
            with nullcontext() if j == last else eng.no_sync(model):  # sync gradients once per step
                loss = loss_fn(model, micro)
                # DDP averages gradients over processes; scale by world so the result is sum / targets
                eng.backward(loss.objective * world / max(batch.targets, 1))
            r = loss.reported.detach()
            loss_acc = r if loss_acc is None else loss_acc + r
            if loss.stats is not None:
                stats_acc = loss.stats if stats_acc is None else stats_acc + loss.stats
        if self.max_grad_norm > 0:
            grad_norm = float(eng.clip_grad_norm_(self.params, self.max_grad_norm))
        else:
            grad_norm = float("nan")
        lr_used = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss_global = float(eng.reduce(loss_acc, reduction="sum")) / max(batch.targets, 1)
        stats = eng.reduce(stats_acc, reduction="sum").tolist() if stats_acc is not None else None
        return StepResult(done, loss_global, lr_used, grad_norm, batch.targets, batch.tokens, stats)


def run_steps(
    opt: Optimization,
    model,
    loss_fn: LossFn,
    batches: Callable[[int], StepBatch],
    start: int,
    end: int,
    after_step: Callable[[StepResult], bool | None] | None = None,
    checkpoint: Callable[[int], None] | None = None,
    save_every: int = 0,
    total: int | None = None,
) -> tuple[StepResult | None, bool]:
    """Optimizer steps ``start .. end - 1``; returns (the last step's result, whether a hook stopped it).

    ``after_step(result)`` runs after each step (metrics, validation); a true result stops the loop there, before
    any checkpoint of that step. ``checkpoint(done)`` is called every ``save_every`` steps and at ``end``,
    except at ``total`` (the run's last step: the caller saves the final weights there)."""
    total = end if total is None else total
    result = None
    for step in range(start, end):
        result = opt.step(model, batches(step), loss_fn, step + 1)
        if after_step is not None and after_step(result):
            return result, True
        done = result.done
        if (
            checkpoint is not None
            and done < total
            and ((save_every and done % save_every == 0) or done == end)
        ):
            checkpoint(done)
    return result, False
