"""Run folders: one policy for every workflow that writes into an ``output_dir``.

A folder may already hold an earlier run of the same workflow (killed, finished, or made with other
settings). Every workflow decides the same way, so a user learns it once:

* nothing there: start;
* an earlier run and ``resume``: continue it, refused when its recorded settings differ from ours
  (its finished parts would be reported as numbers these settings did not produce);
* an earlier run and ``overwrite``: delete what the workflow owns there, then start;
* an earlier run and neither: refuse, naming both fixes and the alternative (another folder).

:class:`RunFolder` holds that policy and the folder's lock; :class:`PointStore` keeps an evaluation's
finished curve points in one. Training and the experiment use the same class with their own artifacts.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .fileio import atomic_write_json, atomic_write_text, exclusive_lock

log = logging.getLogger(__name__)

Predicate = Callable[[Path], bool]


def nonempty_file(p: Path) -> bool:
    return p.is_file() and p.stat().st_size > 0


def exists(p: Path) -> bool:
    return p.exists()


def _flatten(d: dict, prefix: str = "", keep_whole: Sequence[str] = ()) -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key not in keep_whole:
            out.update(_flatten(v, key + ".", keep_whole))
        else:
            out[key] = v
    return out


def settings_drift(
    old: dict, new: dict, ignore: Sequence[str] = (), keep_whole: Sequence[str] = ()
) -> list[str]:
    """Settings that differ between the run that made a folder's results and this one, as
    ``"key: old -> new"`` (keys in ``ignore``, progress bars, and keys the older run did not have are
    taken as unchanged; dicts named in ``keep_whole`` compare as one value)."""
    a, b = _flatten(old, keep_whole=keep_whole), _flatten(new, keep_whole=keep_whole)
    drift = []
    for k, v in b.items():
        if k in ignore or k.endswith("progress") or k not in a:
            continue
        if a[k] != v:
            drift.append(f"{k}: {a[k]!r} -> {v!r}")
    return drift


def describe_drift(drift: list[str], limit: int = 6) -> str:
    more = f"; and {len(drift) - limit} more" if len(drift) > limit else ""
    return "; ".join(drift[:limit]) + more


def has_cells(path: Path) -> bool:
    """A ``cells/`` folder holding at least one finished cell (the artifact of experiment, distill and
    icl-preserve runs)."""
    return path.is_dir() and any(path.rglob("*.json"))


@dataclass
class RunFolder:
    """An output folder and what an earlier run of ``kind`` leaves in it."""

    path: Path
    kind: str
    """What runs here ("training", "evaluation", "experiment"): named in messages and in the lock."""
    artifacts: dict[str, Predicate]
    """Name (relative to ``path``) -> whether it shows an earlier run."""
    owned: tuple[str, ...] = ()
    """What ``overwrite`` deletes (relative paths; folders or files)."""
    resume_hint: str = "resume=true"
    """How the user continues the earlier run (a key=value or a CLI flag)."""
    partial: tuple[str, ...] = field(default_factory=tuple)
    """Glob patterns of half-written temp files a killed run leaves; removed under the lock."""

    def previous(self) -> list[str]:
        """The artifacts of an earlier run that are present, in declaration order."""
        return [name for name, present in self.artifacts.items() if present(self.path / name)]

    @contextmanager
    def lock(self) -> Iterator[RunFolder]:
        """Hold the folder for the block: a second process on it is refused with the holder's PID."""
        with exclusive_lock(self.path, self.kind):
            yield self

    def saved_drift(self, drift: Callable[[dict], list[str]]) -> list[str]:
        """What changed since the earlier run in this folder (``drift(saved config.yaml)``); [] when the
        folder holds no earlier run, ``["config.yaml unreadable"]`` when its config cannot be read."""
        prev = self.path / "config.yaml"
        if not (self.previous() and prev.exists()):
            return []
        from .fileio import load_yaml

        try:
            old = load_yaml(prev.read_text(encoding="utf-8")) or {}
        except Exception:
            old = None
        return drift(old) if isinstance(old, dict) else ["config.yaml unreadable"]

    @contextmanager
    def started(self, cfg):
        """The run prologue every workflow shares: hold the lock, resolve ``output_dir`` to this folder and
        write ``config.yaml``; yields that config. Called after the settings check (``claim``)."""
        import dataclasses

        from .configio import dump_yaml

        with self.lock():
            cfg = dataclasses.replace(cfg, output_dir=str(self.path))
            atomic_write_text(self.path / "config.yaml", dump_yaml(cfg))
            yield cfg

    def clean_partial(self) -> None:
        """Delete half-written temp files of a killed run (call it holding the lock: nobody else writes)."""
        for pattern in self.partial:
            for stale in self.path.glob(pattern):
                shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)

    def claim(
        self, resume: bool, overwrite: bool, drift: list[str] | None = None, drift_field: str = "resume"
    ) -> list[str]:
        """Apply the policy; returns the earlier run's artifacts that were found (and kept, or deleted).

        ``drift`` lists settings that differ from the earlier run (None: unknown or not checked). With
        ``resume`` a drift is refused; with ``overwrite`` the earlier run is deleted whatever it was."""
        found = self.previous()
        if not found:
            return found
        if overwrite:
            log.warning("overwrite=true: replacing the %s in %s (%s)", self.kind, self.path, ", ".join(found))
            for name in self.owned:
                p = self.path / name
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            return found
        if not resume:
            raise ConfigError.single(
                "output_dir",
                f"{self.path} already holds {_a(self.kind)} run ({', '.join(found)}); continue it with "
                f"{self.resume_hint}, replace it with overwrite=true, or choose another output_dir",
            )
        if drift:
            raise ConfigError.single(
                drift_field,
                f"{self.path} holds {_a(self.kind)} run made with other settings ({describe_drift(drift)}); "
                "reusing it would report numbers these settings did not produce: "
                f"{'resume with the same settings' if drift_field == 'resume' else 'restore those settings'}, "
                "set overwrite=true to discard it, or choose another output_dir",
            )
        return found


def _a(kind: str) -> str:
    return f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind}"


# --------------------------------------------------------------------------------------------
# An evaluation's finished curve points
# --------------------------------------------------------------------------------------------

EVAL_IGNORED = {"output_dir", "progress", "plots", "resume", "overwrite", "allow_memory_overrun"}
"""Evaluation settings that do not change any number (a resume may differ in them)."""


class PointStore:
    """Finished curve points of an evaluation (``points/<model>/<task>/<seed>_<shots>.json``: the row
    and its predictions), so a killed or interrupted evaluation continues with ``resume=true`` instead
    of starting over. A folder holding another evaluation is refused unless resumed with the same
    settings or ``overwrite=true``."""

    def __init__(self, out: Path, cfg):
        from .config import to_dict
        from .data import stable_seed

        self.root = out / "points"
        self.settings = {k: v for k, v in to_dict(cfg).items() if k not in EVAL_IGNORED}
        self.fingerprint = stable_seed(json.dumps(self.settings, sort_keys=True, default=str))
        self.meta = self.root / "settings.json"
        self.folder = RunFolder(
            out,
            "evaluation",
            {"results.json": exists, "points": exists},
            owned=("points", "results.json", "results.csv", "report.md", "predictions.jsonl"),
        )
        self.folder.claim(cfg.resume, cfg.overwrite, self._drift() if cfg.resume else None)
        self.out, self.cfg = out, cfg

    def _drift(self) -> list[str] | None:
        if not self.meta.exists():
            return None
        try:
            old = json.loads(self.meta.read_text())
        except ValueError:
            return None  # torn by a kill before any point was written: nothing to protect
        if old.get("fingerprint") == self.fingerprint:
            return []
        if isinstance(old.get("settings"), dict):
            return settings_drift(old["settings"], _jsonable(self.settings)) or ["settings fingerprint"]
        return ["settings fingerprint"]

    def begin(self) -> None:
        """Record the settings (after the memory guard passed: a refused run leaves nothing behind)."""
        from .config import dump_yaml
        from .fileio import atomic_write_text

        atomic_write_json(self.meta, {"fingerprint": self.fingerprint, "settings": _jsonable(self.settings)})
        atomic_write_text(self.out / "config.yaml", dump_yaml(self.cfg))

    def _path(self, model: str, task: str, seed: int, shots: str) -> Path:
        from .tasks import safe_path_component

        return self.root / safe_path_component(model) / safe_path_component(task) / f"{seed}_{shots}.json"

    def get(self, model: str, task: str, seed: int, shots: str) -> dict | None:
        p = self._path(model, task, seed, shots)
        try:
            return json.loads(p.read_text()) if p.exists() else None
        except ValueError:  # torn by a kill: redo the point
            return None

    def put(self, model: str, task: str, seed: int, shots: str, row: dict, preds: list[dict]) -> None:
        atomic_write_json(self._path(model, task, seed, shots), {"row": row, "predictions": preds})


def _jsonable(d: dict) -> dict:
    return json.loads(json.dumps(d, sort_keys=True, default=str))


def study_folder(
    out: Path, kind: str, owned: tuple[str, ...], drift: Callable[[dict], list[str]], overwrite: bool
) -> RunFolder:
    """The folder of a resumable study (experiment, distill, icl-preserve): finished cells made with the
    same settings are kept (the study continues cell by cell); cells made with other settings
    (``drift(saved config)``) are refused, or discarded with ``overwrite``. Returns the folder, whose
    lock the study holds while it works."""
    folder = RunFolder(out, kind, {"cells": has_cells}, owned=owned)
    changed = folder.saved_drift(drift)
    if changed:
        folder.claim(resume=True, overwrite=overwrite, drift=changed, drift_field="output_dir")
    return folder
