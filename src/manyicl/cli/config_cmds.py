"""`config list|show`: the shipped configs, and every field of a workflow with its documentation."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..config import (
    builtin_config_dir,
    describe,
    load_config,
)
from ..errors import ManyICLError
from .common import TABLE_WIDTH

log = logging.getLogger("manyicl")


def _workflow_classes() -> dict[str, type]:
    """Workflow name -> config class (``manyicl.config.WORKFLOWS``)."""
    from .. import config as C

    return {wf: getattr(C, cls_name) for cls_name, wf in C.WORKFLOWS.items()}


_WORKFLOW_CLASSES = _workflow_classes()


def _header_comment(text: str) -> str:
    """A shipped YAML's description: its leading comment lines (a ``workflow:`` line may come first)."""
    out = []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("#"):
            out.append(s.lstrip("#").strip())
        elif (not s or s.startswith("workflow:")) and not out:
            continue
        else:
            break
    return " ".join(x for x in out if x)


def config_class_for(path: Path) -> type:
    """The config class a YAML file is for: its ``workflow:`` key, else the first class that loads it."""
    from ..config import load_yaml_mapping

    data = load_yaml_mapping(path)
    declared = data.get("workflow")
    if declared in _WORKFLOW_CLASSES:
        return _WORKFLOW_CLASSES[declared]
    stem = path.stem.replace("_", "-")
    order = sorted(_WORKFLOW_CLASSES.items(), key=lambda kv: not stem.startswith(kv[0]))
    for _, cls in order:
        try:
            load_config(cls, path)
        except ManyICLError:
            continue
        return cls
    raise ManyICLError(
        f"{path} loads as none of the workflows ({', '.join(_WORKFLOW_CLASSES)}); "
        "add `workflow: NAME` to it and see the problems with `manyicl NAME " + str(path) + "`"
    )


def _wrap(text: str, width: int, indent: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, max(width - indent, 30)) or [""]


def cmd_config_list(a: argparse.Namespace) -> int:
    rows = []
    for p in sorted(builtin_config_dir().glob("*.yaml")):
        try:
            wf = next(k for k, v in _WORKFLOW_CLASSES.items() if v is config_class_for(p))
        except (ManyICLError, StopIteration):
            wf = "?"
        rows.append((p.stem, wf, _header_comment(p.read_text(encoding="utf-8"))))
    nw = max(len(r[0]) for r in rows) + 2
    ww = max(len("workflow"), *(len(r[1]) for r in rows)) + 2
    print(f"{'name':<{nw}}{'workflow':<{ww}}description")
    for name, wf, desc in rows:
        lines = _wrap(desc, TABLE_WIDTH, nw + ww)
        print(f"{name:<{nw}}{wf:<{ww}}{lines[0]}")
        for line in lines[1:]:
            print(" " * (nw + ww) + line)
    print()
    for line in _wrap(
        "`manyicl config show NAME` prints a config's resolved values; `manyicl config show WORKFLOW` "
        f"({', '.join(_WORKFLOW_CLASSES)}) every field of that workflow with its default and docs.",
        TABLE_WIDTH,
        0,
    ):
        print(line)
    return 0


def _run_line(wf: str, config: str | None) -> str:
    if wf == "quickstart":
        return "manyicl quickstart" + (f" --config {config}" if config else "") + " [key.sub=value ...]"
    return f"manyicl {wf} {config or 'CONFIG'} [key.sub=value ...]"


def cmd_config_show(a: argparse.Namespace) -> int:
    from ..config import dump_yaml, resolve_config_path

    name = a.name
    cls = _WORKFLOW_CLASSES.get(name) or _WORKFLOW_CLASSES.get(name.replace("_", "-"))
    if cls is not None:
        wf = next(k for k, v in _WORKFLOW_CLASSES.items() if v is cls)
        print(f"# `manyicl {wf}`: every field of {cls.__name__} with its default and documentation.")
        print(f"# Set them in a YAML file or as overrides: {_run_line(wf, None)}")
        if (builtin_config_dir() / f"{name}.yaml").exists():
            print(f"# ({name} is also a shipped config: `manyicl config show {name}.yaml` prints its values)")
        print(describe(cls))
        return 0
    try:
        path = resolve_config_path(name)
    except ManyICLError:
        shipped = ", ".join(sorted(q.stem for q in builtin_config_dir().glob("*.yaml")))
        raise ManyICLError(
            f"{name!r} is not a workflow ({', '.join(_WORKFLOW_CLASSES)}), a shipped config ({shipped}) or a "
            "config file"
        ) from None
    cls = config_class_for(path)
    wf = next(k for k, v in _WORKFLOW_CLASSES.items() if v is cls)
    cfg = load_config(cls, path)
    desc = _header_comment(path.read_text(encoding="utf-8"))
    for line in _wrap(desc, TABLE_WIDTH, 2) if desc else []:
        print(f"# {line}")
    shipped = path.resolve().parent == builtin_config_dir().resolve()
    shown = path.stem if shipped else str(path)
    print(f"# {'shipped config ' if shipped else ''}{shown}: every value resolved (defaults filled in)")
    print(f"# field docs: manyicl config show {wf}")
    print(f"# run it:     {_run_line(wf, shown)}")
    print(f"workflow: {wf}")
    print(dump_yaml(cfg).rstrip())
    return 0
