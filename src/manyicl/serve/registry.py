"""Registered tasks on disk: ``registry.json``, inline task folders, and where folders may come from.

``state_dir/registry.json`` lists every registered task (its source folder and prompt settings) and is
replaced atomically on each change, so a server killed at any moment restarts with the tasks it had
answered for. Inline tasks (examples sent in the request) are written as ordinary task folders
(``task.yaml`` + ``train.jsonl``) under ``state_dir/tasks/`` and read back by the same loader as any
folder, so they are validated exactly like ``manyicl tasks validate`` validates folders. Files left by a
write that a kill cut short (temporary names starting with ``.``) and folders or caches no registry
entry refers to are removed at start.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from dataclasses import asdict, fields
from pathlib import Path

import yaml

from ..errors import Problem, TaskFormatError
from ..examples import text_problem
from ..fileio import atomic_dir, atomic_write_json
from ..tasks import Task, load_task_dir, name_problem, safe_path_component
from .config import TaskSettings
from .errors import Forbidden, Invalid, NotFound

log = logging.getLogger(__name__)

REGISTRY_VERSION = 1


def check_name(name: object, field: str = "name") -> str:
    """A task name that is safe in file names and URLs, or :class:`Invalid` naming the rule."""
    problem = name_problem(name)
    if problem:
        raise Invalid(problem, field)
    return str(name)


def resolve_under_roots(path: str, roots: list[str], field: str = "path") -> Path:
    """``path`` with links resolved, if it lies under one of ``roots`` (also resolved); else Forbidden."""
    if not roots:
        raise Forbidden(
            "this server registers task folders from no folder; start it with --allow-root DIR (or --tasks DIR), "
            "or send the examples inline",
            field,
        )
    if not isinstance(path, str) or not path.strip() or "\x00" in path:
        raise Invalid("must be a folder path", field)
    if text_problem(path):  # a lone surrogate: no file has that name, and no error message could show it
        raise Invalid(f"must be a folder path; {text_problem(path)}", field)
    real = Path(os.path.realpath(os.path.expanduser(path)))
    for root in roots:
        r = Path(os.path.realpath(os.path.expanduser(root)))
        if real == r or r in real.parents:
            return real
    raise Forbidden(
        f"{path} is not under an allowed root ({', '.join(roots)}); move the folder there or start the "
        "server with --allow-root for its parent",
        field,
    )


def settings_from(data: dict | None, defaults: TaskSettings, where: str = "settings") -> TaskSettings:
    """Per-task settings: ``defaults`` with the given keys replaced, validated."""
    from ..errors import Collector

    data = dict(data or {})
    known = {f.name for f in fields(TaskSettings)}
    c = Collector()
    for k in data:
        if k not in known:
            c.add(f"{where}.{k}", f"unknown setting; known: {', '.join(sorted(known))}")
    values = asdict(defaults) | {k: v for k, v in data.items() if k in known and v is not None}
    s = TaskSettings(**values)
    s.validate(where, c)
    if c:
        raise TaskFormatError(c.problems, title="invalid task settings")
    return s


class Registry:
    """``registry.json`` plus the inline task folders of one state folder."""

    def __init__(self, state_dir: Path):
        self.root = Path(state_dir)
        self.path = self.root / "registry.json"
        self.inline_root = self.root / "tasks"
        self.inline_root.mkdir(parents=True, exist_ok=True)
        self.entries: dict[str, dict] = {}

    # ---- the JSON file ----------------------------------------------------------------------

    def load(self) -> dict[str, dict]:
        if not self.path.exists():
            self.entries = {}
            return self.entries
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            entries = data["tasks"]
            if not isinstance(entries, dict):
                raise ValueError("tasks is not a mapping")
        except (OSError, ValueError, KeyError, TypeError) as e:
            # atomic writes make this unreachable short of a disk fault or a hand edit: keep the file aside
            aside = self.path.with_name(f"registry.json.unreadable-{int(time.time())}")
            os.replace(self.path, aside)
            log.error("%s is unreadable (%s); moved to %s, starting with no tasks", self.path, e, aside.name)
            entries = {}
        self.entries = {k: v for k, v in entries.items() if isinstance(v, dict) and not name_problem(k)}
        return self.entries

    def save(self) -> None:
        atomic_write_json(self.path, {"version": REGISTRY_VERSION, "tasks": self.entries})

    def put(self, name: str, entry: dict) -> None:
        self.entries[name] = entry
        self.save()

    def remove(self, name: str) -> dict:
        entry = self.entries.pop(name, None)
        if entry is None:
            raise NotFound(f"no task named {name!r} is registered (GET /v1/tasks lists them)", "name")
        self.save()
        return entry

    def colliding(self, name: str) -> str | None:
        """A registered task whose file names would equal ``name``'s (case, ':' vs '_'), if any."""
        key = safe_path_component(name).lower()
        return next((n for n in self.entries if n != name and safe_path_component(n).lower() == key), None)

    # ---- inline tasks -----------------------------------------------------------------------

    def write_inline(self, payload: dict, split: str) -> tuple[Path, Task]:
        """Write an inline task as a folder under ``tasks/`` and load it back (raising its problems).

        ``payload`` holds ``name``, ``category``, optional ``metric``/``labels``/``template``/
        ``description``, and ``examples`` (records with ``input``, ``output``, optional ``options``).
        """
        name = check_name(payload.get("name"))
        try:
            split_file = f"{safe_path_component(split)}.jsonl"
        except ValueError:
            raise Invalid(
                f"{split!r} cannot name the file an inline task's examples are written to; use a split "
                "name of letters, digits and . _ - such as 'train'",
                "settings.demo_split",
            ) from None
        meta = {
            k: payload.get(k) for k in ("name", "category", "metric", "labels", "template", "description")
        }
        meta = {k: v for k, v in meta.items() if v is not None}
        final = self.inline_root / f"{safe_path_component(name)}.{secrets.token_hex(4)}"
        try:
            with atomic_dir(final) as tmp:
                (tmp / "task.yaml").write_text(
                    yaml.safe_dump(meta, sort_keys=False, allow_unicode=True), encoding="utf-8"
                )
                # \u escapes: a lone surrogate in an example reaches the loader, which locates it
                lines = [json.dumps(r) for r in payload["examples"]]
                (tmp / split_file).write_text("\n".join(lines) + "\n", encoding="utf-8")
                try:
                    task = load_task_dir(tmp)
                except TaskFormatError as e:
                    raise TaskFormatError(
                        [self._inline_where(p, tmp) for p in e.problems], title="invalid inline task"
                    ) from None
        except OSError as e:
            raise Invalid(f"cannot write the task under {self.inline_root} ({e.strerror})") from None
        task.source = f"inline ({final.name})"
        return final, task

    @staticmethod
    def _inline_where(p: Problem, tmp: Path) -> Problem:
        """A problem found in the temporary folder, located in the request instead (``examples[i]``)."""
        import re

        where = p.where
        if where.startswith(str(tmp)):
            rest = where[len(str(tmp)) :].lstrip("/")
            m = re.fullmatch(r"[^/]+\.jsonl:(\d+)", rest)
            if m:
                where = f"examples[{int(m.group(1)) - 1}]"
            elif rest in ("", "task.yaml"):
                where = "task"
            else:
                where = "task/" + rest.split(":")[0].removesuffix(".jsonl")
        return Problem(where, p.message, p.field, p.level)

    def is_inline(self, entry: dict) -> bool:
        return entry.get("source") == "inline"

    def discard_folder(self, entry: dict) -> None:
        """Remove an inline task's folder (a folder task's files are the user's and stay)."""
        if self.is_inline(entry):
            p = Path(entry["path"])
            if p.parent == self.inline_root:
                shutil.rmtree(p, ignore_errors=True)

    # ---- start-up cleanup -------------------------------------------------------------------

    def cleanup(self, cache_root: Path) -> list[str]:
        """Remove what a killed write left: temporary files and folders (``.name.*``) and inline folders
        no entry refers to. Returns what was removed (for the log)."""
        removed = []
        used = {Path(e["path"]).name for e in self.entries.values() if self.is_inline(e)}
        for folder in (self.root, self.inline_root, Path(cache_root)):
            if not folder.exists():
                continue
            for p in folder.iterdir():
                stale = p.name.startswith(".") and p.name != ".manyicl.lock"
                orphan = folder == self.inline_root and p.is_dir() and p.name not in used
                if stale or orphan:
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                    removed.append(str(p.relative_to(self.root)))
        return removed
