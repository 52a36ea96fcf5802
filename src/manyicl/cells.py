"""Resumable work on disk: each finished piece of a study (a training run, an evaluation) is one JSON cell.

``cells/<key>.json`` holds a finished cell, saved atomically and never redone; ``cells/<key>.running`` marks a
cell a process is working on, naming that process and its start time so that a stale lock (the process died,
or its PID now belongs to another process) reads as interrupted. :meth:`Cells.run` is the one way a
workflow does a cell (``experiment``, ``distill`` and ``icl-preserve``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from .fileio import atomic_write_json

log = logging.getLogger(__name__)


class Cells:
    """Finished work on disk: ``cells/<key>.json``; ``<key>.running`` while a process works on it."""

    def __init__(self, root: Path):
        self.root = root / "cells"

    def _json(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def _lock(self, key: str) -> Path:
        return self.root / f"{key}.running"

    def get(self, key: str) -> dict | None:
        """The finished cell, or None. A cell file that does not parse (torn by a crash or edited) is set
        aside as ``<key>.json.corrupt`` and its work redone, never trusted and never fatal."""
        import json

        p = self._json(key)
        if not p.exists():
            return None
        try:
            value = json.loads(p.read_text(encoding="utf-8"))
            if not isinstance(value, dict):
                raise ValueError("not a JSON object")
            return value
        except (ValueError, UnicodeDecodeError) as e:
            log.warning("cell %s is unreadable (%s); set aside as %s.corrupt and redone", key, e, p.name)
            os.replace(p, p.with_name(p.name + ".corrupt"))
            return None

    def recorded_wall_s(self) -> tuple[float, int, int]:
        """(seconds, cells that record their wall time, finished cells): what the finished cells cost,
        summed over the runs that made them."""
        total, timed, n = 0.0, 0, 0
        for p in sorted(self.root.rglob("*.json")) if self.root.exists() else []:
            try:
                value = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            n += 1
            if isinstance(value, dict) and isinstance(value.get("cell_wall_s"), int | float):
                secs = float(value["cell_wall_s"])
                # a resumed training: the cell timed only the run that finished it, training's own clock
                # (summary.wall_s) every run (long_context: 1,621 s recorded for an 11,048 s training)
                own = (
                    value.get("summary", {}).get("wall_s") if isinstance(value.get("summary"), dict) else None
                )
                if isinstance(own, int | float) and own > secs:
                    secs = float(own)
                total, timed = total + secs, timed + 1
        return total, timed, n

    def put(self, key: str, value: dict) -> None:
        atomic_write_json(self._json(key), value)

    def state(self, key: str) -> str:
        path = self._json(key)
        if path.exists():
            try:
                done = isinstance(json.loads(path.read_text(encoding="utf-8")), dict)
            except (OSError, ValueError):
                done = False  # torn by a kill
            return "done" if done else "interrupted"  # as get() reads it: set aside and redone
        lock = self._lock(key)
        if lock.exists():
            try:
                return "running" if _lock_holder_alive(lock.read_text()) else "interrupted"
            except (OSError, ValueError):  # unreadable, or not text
                return "interrupted"
        return "todo"

    @contextmanager
    def working(self, key: str):
        lock = self._lock(key)
        lock.parent.mkdir(parents=True, exist_ok=True)
        lock.write_text(f"{os.getpid()} {_process_start(os.getpid()):.2f}\n")
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)

    def run(self, key: str, fn: Callable[[], dict], valid: Callable[[dict], bool] | None = None) -> dict:
        """The finished cell ``key``, or ``fn()`` computed under :meth:`working` and saved with :meth:`put`.

        A finished cell that ``valid`` rejects (e.g. one made for another count) is computed again and
        replaced. If ``fn`` raises, nothing is saved and the lock goes: the cell is left to do (never
        half-finished) and the error propagates. Logs ``finished <key> in N s`` for each cell it computes
        (nothing for one already done)."""
        got = self.get(key)
        if got is None or (valid is not None and not valid(got)):
            t0 = time.perf_counter()
            with self.working(key):
                got = fn()
                # the cell's own wall time, so a report can say what a study cost (cells may run in parts)
                got = {**got, "cell_wall_s": round(time.perf_counter() - t0, 1)}
                self.put(key, got)
            log.info("finished %s in %.0f s", key, got["cell_wall_s"])
        return got


def _process_start(pid: int) -> float:
    import psutil

    return psutil.Process(pid).create_time()


def _lock_holder_alive(text: str) -> bool:
    """A lock names its process and that process's start time, so a stale lock whose PID now belongs to
    an unrelated process is not mistaken for a running cell."""
    try:
        pid_s, start_s = text.split()[:2]
        pid, start = int(pid_s), float(start_s)
    except ValueError:
        return False
    try:
        return abs(_process_start(pid) - start) < 1.0
    except Exception:  # psutil.NoSuchProcess, AccessDenied, ...
        return False
