"""Training checkpoints: trainable weights, optimizer, scheduler and RNG states, written atomically with
their sha256, so a resumed run continues exactly (a torn or mismatched checkpoint is refused or
skipped, never loaded), plus the final adapter or model folder.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from .config import TrainConfig, to_dict
from .data import TrainingData
from .errors import ConfigError, ManyICLError
from .fileio import atomic_dir, atomic_write_json

log = logging.getLogger(__name__)


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


def checkpoint_dirs(output_dir: Path) -> list[Path]:
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
    for p in reversed(checkpoint_dirs(output_dir)):
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
    for path in reversed(checkpoint_dirs(output_dir)):
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


def prune_checkpoints(output_dir: Path, keep: int) -> None:
    ckpts = checkpoint_dirs(output_dir)
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
