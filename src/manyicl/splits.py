"""Held-in / held-out task splits of the shared datasets, and the train/test overlap check.

Schemes:
  paper            held-out test tasks per category as in the paper's Table 6 (CLINC150 and Banking77 for
                   CLS, held-out NLI, QA, multilingual SUM, MATH, multi-label CLS); every other task trains,
                   except tasks built from the same source data as a test task
  metaicl:<name>   MetaICL's own split files (``metaicl_rethinking/config/<name>.json``, e.g. class_to_class,
                   non_nli_to_nli, qa_to_qa); tasks they name that are absent here are reported and skipped
  loco:<category>  the paper split with every training task of that category removed, tested on that
                   category only (the leave-one-category-out ablation, paper Tables 10/11)
  all              every task is both (for listing only)
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .tasks import CATEGORIES, Task


@dataclass
class TaskSplit:
    scheme: str
    train: list[str]
    test: list[str]
    missing: list[str] = field(default_factory=list)
    """Tasks the scheme names that are not in the data folder (skipped)."""
    excluded: dict[str, str] = field(default_factory=dict)
    """Tasks left out of training, with the reason."""

    def role(self, name: str) -> str:
        if name in self.test:
            return "held-out"
        if name in self.train:
            return "held-in"
        return "excluded" if name in self.excluded else "-"


def _catalog(data_dir: Path):
    from .realdata import shared_catalog

    return {t.name: t for t in shared_catalog(data_dir)}


def paper_split(data_dir: Path) -> TaskSplit:
    from .realdata import PAPER_HELD_OUT, SAME_SOURCE

    cat = _catalog(data_dir)
    test = [n for names in PAPER_HELD_OUT.values() for n in names if n in cat]
    missing = [n for names in PAPER_HELD_OUT.values() for n in names if n not in cat]
    excluded: dict[str, str] = {}
    for t in test:
        for other in SAME_SOURCE.get(t, []):
            if other in cat and other not in test:
                excluded[other] = f"same source data as held-out {t}"
    train = [n for n in cat if n not in test and n not in excluded]
    return TaskSplit("paper", train, test, missing, excluded)


def _metaicl_name(n: str) -> str:
    return n if n.startswith("metaicl:") else f"metaicl:{n}"


def metaicl_split(data_dir: Path, config: str) -> TaskSplit:
    path = data_dir / "metaicl_rethinking" / "config" / f"{config}.json"
    if not path.exists():
        have = sorted(p.stem for p in (data_dir / "metaicl_rethinking" / "config").glob("*.json"))
        raise ConfigError.single(
            "tasks.scheme", f"no MetaICL split file {path.name}; available: {', '.join(have)}"
        )
    spec = json.loads(path.read_text())
    cat = _catalog(data_dir)
    train_all = [_metaicl_name(n) for n in spec.get("train", [])]
    test_all = [_metaicl_name(n) for n in spec.get("test", [])]
    missing = sorted({n for n in train_all + test_all if n not in cat})
    test = [n for n in test_all if n in cat]
    train = [n for n in train_all if n in cat and n not in test]
    return TaskSplit(f"metaicl:{config}", train, test, missing)


def loco_split(data_dir: Path, category: str) -> TaskSplit:
    if category not in CATEGORIES:
        raise ConfigError.single(
            "tasks.scheme", f"loco needs a category ({', '.join(CATEGORIES)}), got {category!r}"
        )
    base = paper_split(data_dir)
    cat = _catalog(data_dir)
    excluded = dict(base.excluded)
    train = []
    for n in base.train:
        if cat[n].category == category:
            excluded[n] = f"category {category} left out (leave-one-category-out)"
        else:
            train.append(n)
    test = [n for n in base.test if cat[n].category == category]
    return TaskSplit(f"loco:{category}", train, test, base.missing, excluded)


def resolve_split(scheme: str, data_dir: Path) -> TaskSplit:
    if scheme == "paper":
        return paper_split(data_dir)
    if scheme == "all":
        names = list(_catalog(data_dir))
        return TaskSplit("all", names, names)
    kind, _, arg = scheme.partition(":")
    if kind == "metaicl" and arg:
        return metaicl_split(data_dir, arg)
    if kind == "loco" and arg:
        return loco_split(data_dir, arg)
    raise ConfigError.single(
        "tasks.scheme",
        f"unknown split scheme {scheme!r}; use paper, all, metaicl:<config> or loco:<category>",
    )


# --------------------------------------------------------------------------------------------
# Overlap check
# --------------------------------------------------------------------------------------------

_PUNCT = re.compile(r"[^\w\s]")


def normalize_text(text: str) -> str:
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def _signatures(text: str, n_words: int = 12) -> tuple[str, str | None]:
    norm = normalize_text(text)
    words = norm.split()
    return norm, (" ".join(words[:n_words]) if len(words) >= n_words else None)


def find_overlaps(
    train: list[Task],
    test: list[Task],
    train_split: str,
    test_split: str,
    samples: int = 3,
    min_words: int = 5,
) -> list[dict]:
    """Test examples whose normalised input also occurs in a training task.

    Kinds: ``exact`` - the normalised text (lower case, no punctuation, single spaces) of an input of
    at least ``min_words`` words occurs in training (leakage); ``short`` - the same for shorter inputs
    ("thank you!", "great"), reported but usually coincidence; ``near`` - the first 12 normalised words
    agree (the same sentence pair formatted differently by two sources).
    """
    exact: dict[str, set[str]] = defaultdict(set)
    prefix: dict[str, set[str]] = defaultdict(set)
    for t in train:
        if not t.has_split(train_split):
            continue
        for ex in t.split(train_split):
            norm, pre = _signatures(ex.input)
            exact[norm].add(t.name)
            if pre:
                prefix[pre].add(t.name)
    found: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for t in test:
        if not t.has_split(test_split):
            continue
        for ex in t.split(test_split):
            norm, pre = _signatures(ex.input)
            kind = "exact" if len(norm.split()) >= min_words else "short"
            hits = {(n, kind) for n in exact.get(norm, ())}
            if pre:
                hits |= {(n, "near") for n in prefix.get(pre, ()) if (n, kind) not in hits}
            for n, kind in hits:
                found[(n, t.name, kind)].append(ex.input[:80])
    return [
        {"train_task": a, "test_task": b, "kind": k, "count": len(v), "samples": v[:samples]}
        for (a, b, k), v in sorted(found.items(), key=lambda kv: -len(kv[1]))
    ]
