"""Examples and the checked reading of the text files they come from, shared by task folders
(:mod:`manyicl.tasks`) and raw-data sources (:mod:`manyicl.sources`).

Every reader records what is wrong in a :class:`~manyicl.errors.Collector` (file, line, field) instead of
raising, so that all problems of a load are reported together.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from .errors import Collector


@dataclass(frozen=True)
class Example:
    """One input -> output pair. ``options`` lists the answer choices when the task is multiple choice."""

    input: str
    output: str
    options: tuple[str, ...] = ()
    line: int = field(default=0, compare=False)
    """Line (or row) in the source file, for error messages; 0 when generated."""


_SURROGATE = re.compile("[\ud800-\udfff]")


def text_problem(s: str) -> str | None:
    """Why ``s`` cannot be used as text (a lone UTF-16 surrogate from a JSON ``\\u`` escape), or None."""
    m = _SURROGATE.search(s)
    if m is None:
        return None
    return (
        f"invalid text: lone surrogate {m.group()!r} at character {m.start() + 1} (half of a UTF-16 pair, "
        "usually a broken JSON \\u escape); it cannot be encoded as UTF-8: fix or remove the escape"
    )


def check_strings(obj: Any, where: str, c: Collector, key: str = "") -> None:
    """Report every string inside ``obj`` (nested lists and mappings) that is not valid text."""
    seen: set[int] = set()
    stack: list[tuple[Any, str]] = [(obj, key)]
    while stack:
        o, k = stack.pop()
        if isinstance(o, str):
            problem = text_problem(o)
            if problem:
                c.add(where, problem, k or None)
        elif isinstance(o, (dict, list)) and id(o) not in seen:  # YAML aliases may share or nest nodes
            seen.add(id(o))
            items = o.items() if isinstance(o, dict) else enumerate(o)
            for kk, v in items:
                if isinstance(kk, str) and text_problem(kk):
                    c.add(where, text_problem(kk) or "", f"{k}.{kk!r}" if k else repr(kk))
                stack.append((v, f"{k}.{kk}" if k else str(kk)))


def outside_problem(name: str) -> str | None:
    """Why a file name written in task.yaml would read outside its task folder, or None.

    Names are relative to the folder holding task.yaml: an absolute path, a drive, ``~`` or a ``..``
    component is refused (a task folder copied from elsewhere must not read ``/etc/...`` or ``~/.ssh``
    into prompts and messages). A symbolic link inside the folder is followed: whoever made the folder
    made the link."""
    p = name.strip()
    parts = re.split(r"[\\/]", p)
    if not (
        p.startswith("~")
        or PurePosixPath(p).is_absolute()
        or PureWindowsPath(p).drive
        or PureWindowsPath(p).is_absolute()
        or ".." in parts
    ):
        return None
    return (
        f"{name!r} is outside the task folder: files are named relative to the folder holding task.yaml "
        "(no absolute path, '~' or '..'); copy the file into the task folder, or put a symbolic link to it "
        "there and name the link"
    )


def regular_file_problem(path: Path) -> str | None:
    """Why ``path`` must not be read (a FIFO, socket or device would block or never end), or None; a
    missing file or a folder is left to the reader, which says so."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return (
        "is not a regular file (a pipe, socket or device: reading it could block or never end); give a file"
    )


def json_type(v: Any) -> str:
    return "null" if v is None else f"{type(v).__name__} {str(v)[:60]}"


def non_finite(v: Any) -> bool:
    return isinstance(v, float) and not math.isfinite(v)


def read_text_file(path: Path, c: Collector, what: str = "file") -> str | None:
    """The UTF-8 text of ``path``, or None after recording why it cannot be read (a pipe, socket or
    device is refused before it is opened)."""
    problem = regular_file_problem(path)
    if problem:
        c.add(str(path), problem)
        return None
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        c.add(str(path), f"is a folder, not a {what}; remove it or give the path of a file")
        return None
    except PermissionError as e:
        c.add(str(path), f"cannot read ({e.strerror}); check its permissions, e.g. chmod a+r {path}")
        return None
    except OSError as e:
        c.add(str(path), f"cannot read: {e.strerror or e}")
        return None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        c.add(f"{path}:{line}", f"not UTF-8 (byte {e.start}); re-save the file as UTF-8")
        return None


LINE_END = re.compile(r"\r\n|\r|\n")
"""A line end in a data file: \\n, \\r\\n or \\r (not the other characters that ``str.splitlines`` splits at)."""


def jsonl_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of each non-blank line. Lines end at '\\n', '\\r\\n' or '\\r' only: a JSON string
    may hold a raw U+2028 or U+0085, which ``str.splitlines`` would wrongly treat as a line end."""
    return [(i, ln) for i, ln in enumerate(LINE_END.split(text), 1) if ln.strip()]


def parse_json_line(line: str, where: str, c: Collector, hint: str = "") -> tuple[bool, Any]:
    """(True, value) for one JSON value, else (False, None) after recording why (never raises)."""
    try:
        return True, json.loads(line)
    except json.JSONDecodeError as e:
        c.add(where, f"malformed JSON ({e.msg} at column {e.colno}){hint}")
    except RecursionError:
        c.add(where, f"malformed JSON (nested too deeply to read){hint}")
    except ValueError as e:  # e.g. an integer of more than 4,300 digits
        c.add(where, f"malformed JSON ({str(e).split(':')[0]}){hint}")
    return False, None
