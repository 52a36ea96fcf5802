"""Within-task train/test duplicates: a test query whose input also occurs in the demonstration pool
(after normalising case and white space) measures memory, not in-context learning. Public test sets
have them (CLINC150 19 of 4,500 test inputs, Banking77 25, GoEmotions 109)."""

from __future__ import annotations

from dataclasses import replace

from .tasks import Task


def normalize_text(text: str) -> str:
    """Case and white space folded: the duplicates a tokenizer would treat as (nearly) the same text."""
    return " ".join(text.lower().split())


def train_test_duplicates(task: Task, train_split: str, test_split: str) -> set[str]:
    """Normalised inputs that occur in both splits."""
    if not (task.has_split(train_split) and task.has_split(test_split)):
        return set()
    train = {normalize_text(e.input) for e in task.split(train_split)}
    return {k for k in (normalize_text(e.input) for e in task.split(test_split)) if k in train}


def drop_train_test_duplicates(task: Task, train_split: str, test_split: str) -> tuple[Task, dict]:
    """The task without the duplicated inputs in either split, and what was dropped (counts)."""
    dup = train_test_duplicates(task, train_split, test_split)
    info = {"inputs": len(dup), "queries_dropped": 0, "demos_dropped": 0}
    if not dup:
        return task, info
    train = [e for e in task.split(train_split) if normalize_text(e.input) not in dup]
    test = [e for e in task.split(test_split) if normalize_text(e.input) not in dup]
    info["demos_dropped"] = len(task.split(train_split)) - len(train)
    info["queries_dropped"] = len(task.split(test_split)) - len(test)
    splits = dict(task.splits)
    if train_split in splits and test_split in splits:
        splits[train_split], splits[test_split] = train, test
        return replace(task, splits=splits), info
    return task, {**info, "note": "split spec is not a plain split name; duplicates kept"}
