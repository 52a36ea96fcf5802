"""Data and task subcommands: `data stats|show`, `tasks list|show|validate|split`, `synth export`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ..config import (
    DataConfig,
    TrainConfig,
)
from ..errors import ManyICLError
from .common import _config

log = logging.getLogger("manyicl")


def _data_config(a: argparse.Namespace) -> tuple[TrainConfig, DataConfig]:
    cfg = _config(a, TrainConfig)
    return cfg, cfg.data


def cmd_data_stats(a: argparse.Namespace) -> int:
    cfg, dcfg = _data_config(a)
    from ..data import build_training_data, format_stats, load_tasks
    from ..modeling import load_tokenizer

    tok = load_tokenizer(cfg.model)
    build = build_training_data(load_tasks(dcfg.tasks), tok, dcfg)
    if a.json:
        print(json.dumps(build.stats.to_dict(), indent=2))
    else:
        print(format_stats(build.stats, per_task=not a.brief))
    return 0


def _why_not_loaded(name: str, src, key: str) -> tuple[str, list[str], str] | None:
    """Why task (or family) ``name`` is not among the tasks ``src`` selects: (reason, the overrides that
    select it, the task name to ask for), or None when no source of ``src`` has it at all."""
    from dataclasses import replace

    from ..data import load_tasks
    from ..synthetic import FAMILIES

    fam, _, num = name.rpartition("_")
    if src.synthetic and fam in FAMILIES and num.isdigit() and int(num) >= src.synthetic_instances:
        fix = [f"{key}.synthetic_instances={int(num) + 1}"]
        side = "held_out" if FAMILIES[fam].held_out else "held_in"
        if src.split not in ("all", side):
            fix.append(f"{key}.split={side}")
        return (
            f"{name!r} is instance {num} of the synthetic family {fam!r}, and this config builds "
            f"{src.synthetic_instances} instance(s) per family ({key}.synthetic_instances)",
            fix,
            name,
        )
    try:
        every = load_tasks(replace(src, split="all", include=[], exclude=[]))
    except ManyICLError:
        return None
    hits = [t for t in every if t.name == name] or [t for t in every if t.family == name]
    if not hits:
        return None
    t = hits[0]
    what = f"the family {name!r}" if t.name != name else f"the task {name!r}"
    names = {t.name, t.family, t.category}
    if src.include and not names & set(src.include):
        return f"{what} is not in {key}.include ({', '.join(src.include)})", [f"{key}.include=[]"], t.name
    if src.exclude and names & set(src.exclude):
        return f"{what} is in {key}.exclude ({', '.join(src.exclude)})", [f"{key}.exclude=[]"], t.name
    if t.family in FAMILIES:
        held_out = FAMILIES[t.family].held_out
        side, other = ("held-out", "held_out") if held_out else ("held-in", "held_in")
        kind = (
            f"is a {side} synthetic family (its instances are {t.family}_0, {t.family}_1, ...)"
            if t.name != name
            else f"is an instance of the {side} synthetic family {t.family!r}"
        )
        use = "reserved for evaluation, so" if held_out else "a training family, but"
        return (
            f"{name!r} {kind}: {use} not in this build, which takes the {src.split.replace('_', '-')} side "
            f"({key}.split={src.split})",
            [f"{key}.split={other}"],
            t.name,
        )
    return (
        f"{what} is not on the {src.split.replace('_', '-')} side of the {src.scheme} split "
        f"({key}.split={src.split})",
        [f"{key}.split=all"],
        t.name,
    )


def _close_names(name: str, tasks) -> str:
    import difflib

    pool = sorted({t.name for t in tasks} | {t.family for t in tasks})
    close = difflib.get_close_matches(name, pool, n=3, cutoff=0.6)
    return f" Did you mean {', '.join(close)}?" if close else ""


def cmd_data_show(a: argparse.Namespace) -> int:
    import shlex

    cfg, dcfg = _data_config(a)
    from ..data import build_training_data, load_tasks
    from ..modeling import load_tokenizer

    tasks = load_tasks(dcfg.tasks)
    if a.task:
        tasks = [t for t in tasks if t.name == a.task or t.family == a.task][:1]
        if not tasks:
            why = _why_not_loaded(a.task, dcfg.tasks, "data.tasks")
            if why is None:
                raise ManyICLError(
                    f"no task or family named {a.task!r} in this config's tasks "
                    f"(data.tasks).{_close_names(a.task, load_tasks(dcfg.tasks))} See `manyicl tasks list` "
                    "(and --dirs for your own folders)"
                )
            reason, fix, name = why
            cmdline = shlex.join(["manyicl", "data", "show", *a.args, "--task", name, *fix])
            raise ManyICLError(f"{reason}. Show it with:\n  {cmdline}")
    tok = load_tokenizer(cfg.model)
    dcfg.sequences_per_task = 1
    build = build_training_data(tasks[:1], tok, dcfg)
    seq = build.sequences[0]
    print(
        f"# task {seq.task}: {seq.n_examples} examples, {len(seq)} tokens, {int(seq.loss_mask.sum())} supervised"
    )
    print("# supervised tokens are shown in [[...]]\n")
    out, run, cur = [], [], None
    for tid, m in zip(seq.ids.tolist(), seq.loss_mask.tolist()):
        if cur is not None and m != cur:
            text = tok.decode(run)
            out.append(f"[[{text}]]" if cur else text)
            run = []
        run.append(tid)
        cur = m
    if run:
        text = tok.decode(run)
        out.append(f"[[{text}]]" if cur else text)
    full = "".join(out)
    print(full if a.chars <= 0 else full[: a.chars] + ("\n..." if len(full) > a.chars else ""))
    return 0


def _task_universe(a: argparse.Namespace):
    """(tasks, role of each task name) for the tasks commands: synthetic + shared + folders."""
    from ..config import TaskSourceConfig
    from ..data import load_tasks
    from ..synthetic import FAMILIES

    roles: dict[str, str] = {}
    want_shared = not a.no_shared and (a.data or _shared_available())
    src = TaskSourceConfig(
        synthetic=not a.no_synthetic,
        shared=bool(want_shared),
        data_dir=a.data,
        scheme="all",
        split="all",
        dirs=list(getattr(a, "dirs", None) or []),
    )
    if not (src.synthetic or src.shared or src.dirs):
        raise ManyICLError(
            "nothing to list: no shared data found and --no-synthetic given; pass --data DIR or --dirs"
        )
    tasks = load_tasks(src)
    if want_shared:
        from ..data import shared_data_dir
        from ..splits import resolve_split

        split = resolve_split(a.scheme, shared_data_dir(src))
        roles.update({n: split.role(n) for n in split.train + split.test + list(split.excluded)})
    for t in tasks:
        if t.family in FAMILIES:
            roles[t.name] = "held-out" if FAMILIES[t.family].held_out else "held-in"
        roles.setdefault(t.name, "-")
    return tasks, roles


def _shared_available() -> bool:
    from ..realdata import default_data_dir

    return default_data_dir() is not None


def cmd_tasks_list(a: argparse.Namespace) -> int:
    tasks, roles = _task_universe(a)
    if a.json:
        print(json.dumps([_task_summary(t) | {"role": roles.get(t.name, "-")} for t in tasks], indent=2))
        return 0
    print(f"{'task':<40}{'category':<9}{'metric':<15}{a.scheme + ' role':<14}{'labels':>7}  sizes")
    for t in tasks:
        sizes = " ".join(f"{k}={len(v)}" for k, v in t.splits.items())
        print(
            f"{t.name:<40}{t.category:<9}{t.metric:<15}{roles.get(t.name, '-'):<14}{len(t.labels):>7}  {sizes}"
        )
    print(f"\n{len(tasks)} tasks")
    return 0


def _task_summary(t) -> dict:
    return {
        "name": t.name,
        "family": t.family,
        "category": t.category,
        "metric": t.metric,
        "labels": list(t.labels),
        "splits": {k: len(v) for k, v in t.splits.items()},
        "notes": list(t.notes),
    }


def _no_task_message(a: argparse.Namespace, tasks) -> str:
    """``tasks show NAME`` found nothing: say where it looked and how to include a folder."""
    import shlex

    looked = [
        x
        for x, on in (
            ("the synthetic suite", not a.no_synthetic),
            ("the shared datasets", bool(a.data or (not a.no_shared and _shared_available()))),
            (f"the folders {', '.join(a.dirs or [])}", bool(a.dirs)),
        )
        if on
    ]
    msg = f"no task named {a.name!r} in {', '.join(looked) or 'no sources'}.{_close_names(a.name, tasks)}"
    local = [d for d in (Path(a.name), Path("tasks") / a.name) if (d / "task.yaml").exists()]
    if local:
        cmd = shlex.join(["manyicl", "tasks", "show", a.name, "--dirs", str(local[0])])
        return f"{msg} The folder {local[0]} holds a task.yaml: include it with\n  {cmd}"
    if not a.dirs:
        return (
            f"{msg} A task in a folder of your own is only seen with --dirs: "
            f"`manyicl tasks show {shlex.quote(a.name)} --dirs FOLDER` (the task folder, or a folder of them)"
        )
    return f"{msg} See `manyicl tasks list --dirs {' '.join(a.dirs)}`"


def within_task_overlap(task, train_split: str = "train", test_split: str = "test") -> dict | None:
    """Test inputs of ``task`` that also occur in its own training split (normalised text), and how many
    of those carry a different label there. None when the task lacks one of the splits."""
    from ..overlap import normalize_text, train_test_duplicates

    if not (task.has_split(train_split) and task.has_split(test_split)):
        return None
    dup = train_test_duplicates(task, train_split, test_split)
    labels: dict[str, set[str]] = {}
    for e in task.split(train_split):
        key = normalize_text(e.input)
        if key in dup:
            labels.setdefault(key, set()).add(e.output)
    test = task.split(test_split)
    hits = [e for e in test if normalize_text(e.input) in dup]
    conflict = [e for e in hits if e.output not in labels.get(normalize_text(e.input), set())]
    return {
        "train_split": train_split,
        "test_split": test_split,
        "test": len(test),
        "duplicates": len(hits),
        "different_label": len(conflict),
        "samples": [e.input[:60] for e in (conflict or hits)[:2]],
    }


def overlap_text(o: dict) -> str:
    if not o["duplicates"]:
        return f"{o['test_split']}/{o['train_split']} overlap: no {o['test_split']} input occurs in {o['train_split']}"
    txt = (
        f"{o['test_split']}/{o['train_split']} overlap: {o['duplicates']} of {o['test']} {o['test_split']} inputs "
        f"also occur in {o['train_split']} (normalised text), {o['different_label']} of them with a different "
        f"label there; evaluation drops them (dedup), e.g. {o['samples'][0]!r}"
    )
    return txt


def cmd_tasks_show(a: argparse.Namespace) -> int:
    from collections import Counter

    import numpy as np

    from ..config import ModelConfig
    from ..modeling import load_tokenizer
    from ..templates import tokenize_task

    tasks, roles = _task_universe(a)
    match = [t for t in tasks if t.name == a.name] or [t for t in tasks if a.name in t.name]
    if not match:
        raise ManyICLError(_no_task_message(a, tasks))
    t = match[0]
    print(f"{t.name}  [{t.category}, metric {t.metric}, {roles.get(t.name, '-')} in the {a.scheme} split]")
    if t.description:
        print(f"  {t.description[:300]}")
    if t.source:
        print(f"  source: {t.source}")
    for n in t.notes:
        print(f"  note: {n}")
    print("  splits: " + ", ".join(f"{k}={len(v)}" for k, v in t.splits.items()))
    overlap = within_task_overlap(t)
    if overlap is not None:
        print(f"  {overlap_text(overlap)}")
    first = next(iter(t.splits))
    counts = Counter(e.output for e in t.splits[first])
    if t.category in ("cls", "nli") or t.labels:
        lo, hi = min(counts.values()), max(counts.values())
        print(f"  labels ({len(t.labels) or len(counts)}), balance in {first}: min {lo}, max {hi}")
        print(
            "    "
            + ", ".join(f"{k} ({v})" for k, v in counts.most_common(12))
            + (" ..." if len(counts) > 12 else "")
        )
    tok = load_tokenizer(ModelConfig(name_or_path=a.model))
    tokenized = tokenize_task(t, tok, first, a.max_length, "truncate_input")
    lengths = tokenized.lengths
    budget = a.max_length - len(tokenized.header)
    print(
        f"  tokens per example ({a.model}): mean {np.mean(lengths):.1f}, max {int(np.max(lengths))}; "
        f"header {len(tokenized.header)}"
    )
    print(
        f"  shots that fit in {a.max_length} tokens: about {int(budget // max(np.mean(lengths), 1))} (mean length)"
    )
    ex = t.splits[first][0]
    print("\n  one rendered example (target in [[...]]):")
    print(
        "    "
        + (t.template.header_text() + t.template.query_text(ex.input)).replace("\n", "\n    ")
        + "[["
        + t.template.target_text(ex.output)
        + "]]"
    )
    return 0


def _print_errors(errors, limit: int) -> None:
    """Errors grouped by file in first-seen order: the first ``limit`` of each (0: all), then a count."""
    import re

    by_file: dict[str, list] = {}
    for p in errors:
        by_file.setdefault(re.sub(r":\d+$", "", p.where), []).append(p)
    for f, ps in by_file.items():
        shown = ps if limit <= 0 else ps[:limit]
        for p in shown:
            print(f"ERROR {p}", file=sys.stderr)
        if len(ps) > len(shown):
            print(
                f"ERROR {f}: ... and {len(ps) - len(shown)} more errors in this file (--max-errors 0 shows all)",
                file=sys.stderr,
            )


def cmd_tasks_validate(a: argparse.Namespace) -> int:
    from ..errors import Collector, ProblemsError
    from ..tasks import check_quality, load_task_dirs_collecting, validate_task

    c = Collector()
    tasks = []
    if a.dirs:
        tasks += load_task_dirs_collecting(a.dirs, c)
    if a.all:
        a.no_synthetic = False
        a.no_shared = False
        a.scheme = "all"
        dirs, a.dirs = a.dirs, []
        try:
            more, _ = _task_universe(a)
            tasks += more
        except ProblemsError as e:
            c.problems.extend(e.problems)
        a.dirs = dirs
    if not a.dirs and not a.all:
        raise ManyICLError(
            "name task folders to validate, or --all for the synthetic suite and the shared data"
        )
    for t in tasks:
        validate_task(t, c)
        check_quality(t, c)
        o = within_task_overlap(t)
        if o and o["duplicates"]:
            c.warn(t.source or t.name, overlap_text(o))
    for t in tasks:
        print(f"ok  {t.name}: " + ", ".join(f"{k}={len(v)}" for k, v in t.splits.items()))
    for p in c.warnings:
        print(f"  {p}")
    _print_errors(c.errors, a.max_errors)
    print(f"\n{len(tasks)} tasks loaded, {len(c.errors)} errors, {len(c.warnings)} warnings")
    if c.errors or (a.strict and c.warnings):
        return 2
    return 0


def cmd_tasks_split(a: argparse.Namespace) -> int:
    from ..config import TaskSourceConfig
    from ..data import shared_data_dir
    from ..realdata import load_shared_tasks
    from ..splits import TaskSplit, find_overlaps, resolve_split
    from ..tasks import load_task_dirs

    folders = load_task_dirs(a.dirs) if a.dirs else []
    if a.no_shared and not folders:
        raise ManyICLError("--no-shared leaves nothing to split: name your task folders with --dirs")
    d = None
    if not a.no_shared:
        try:
            d = shared_data_dir(TaskSourceConfig(data_dir=a.data))
        except ManyICLError:
            if not folders or a.data:
                raise
    split = resolve_split(a.scheme, d) if d is not None else TaskSplit(a.scheme, [], [])
    out: dict = {
        "scheme": split.scheme,
        "train": split.train,
        "test": split.test,
        "missing": split.missing,
        "excluded": split.excluded,
        "folders": [t.name for t in folders],
    }
    if a.check_overlap:
        train = (load_shared_tasks(d, split.train) if d is not None else []) + folders
        test = (load_shared_tasks(d, split.test) if d is not None else []) + folders
        ov = find_overlaps(train, test, a.train_split, a.test_split)
        out["overlaps"] = [o for o in ov if o["train_task"] != o["test_task"]]
        out["within_task"] = [
            {"task": t.name, **o} for t in folders if (o := within_task_overlap(t, "train", a.test_split))
        ]
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    if d is not None:
        print(f"scheme {split.scheme}: {len(split.train)} training tasks, {len(split.test)} test tasks")
        print("test:  " + ", ".join(split.test))
        print("train: " + ", ".join(split.train))
    if folders:
        print(
            f"your folders ({len(folders)} tasks, used for training and evaluation alike): "
            + ", ".join(t.name for t in folders)
        )
    if split.excluded:
        print("excluded from training:")
        for n, why in split.excluded.items():
            print(f"  {n}: {why}")
    if split.missing:
        print(
            f"named by the scheme but absent here ({len(split.missing)}, skipped): "
            + ", ".join(split.missing)
        )
    if a.check_overlap:
        ov = out["overlaps"]
        if not ov:
            print(
                f"overlap check: no test example ({a.test_split}) occurs in any other training task "
                f"({a.train_split})"
            )
        for o in ov:
            tag = {"exact": "OVERLAP", "near": "NEAR-OVERLAP", "short": "short match (likely coincidence)"}[
                o["kind"]
            ]
            print(f"{tag}: {o['count']} of {o['test_task']} in {o['train_task']}, e.g. {o['samples'][0]!r}")
        for o in out["within_task"]:
            if o["duplicates"]:
                print(f"within {o['task']}: {overlap_text(o)}")
        leaks = [o for o in ov if o["kind"] != "short"]
        print(
            f"overlap check: {len(leaks)} leaking task pairs, {len(ov) - len(leaks)} short coincidental matches"
            + (
                f", {sum(bool(o['duplicates']) for o in out['within_task'])} folder tasks with train/test "
                "duplicates"
                if folders
                else ""
            )
        )
        return 2 if leaks else 0
    return 0


def cmd_synth_export(a: argparse.Namespace) -> int:
    from ..synthetic import synthetic_suite
    from ..tasks import write_task_dir

    tasks = synthetic_suite(
        seed=a.seed, instances=a.instances, train_size=a.train_size, test_size=a.test_size, split=a.split
    )
    for t in tasks:
        write_task_dir(t, Path(a.out) / t.name)
    print(f"wrote {len(tasks)} task folders to {a.out}")
    return 0
