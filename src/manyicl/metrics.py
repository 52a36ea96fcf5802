"""Metrics: accuracy, normalised exact match, ROUGE-L, final-number accuracy, multi-label F1.

All return a score in [0, 1] per example; a task's score is the mean over its queries.
"""

from __future__ import annotations

import re
import string
from functools import lru_cache

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def normalize_answer(text: str) -> str:
    """SQuAD-style: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(pred: str, gold: str) -> float:
    return float(normalize_answer(pred) == normalize_answer(gold))


def accuracy(pred: str, gold: str) -> float:
    return float(pred == gold)


class _UnicodeTokenizer:
    """Word tokenizer for ROUGE that keeps non-ASCII letters (the default one drops them, which breaks
    German/Spanish summaries)."""

    def tokenize(self, text: str) -> list[str]:
        return re.findall(r"\w+", text.lower())


@lru_cache(maxsize=1)
def _rouge():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False, tokenizer=_UnicodeTokenizer())


def rouge_l(pred: str, gold: str) -> float:
    """ROUGE-L F-measure (longest common subsequence of words)."""
    return float(_rouge().score(gold, pred)["rougeL"].fmeasure)


def final_number(text: str) -> float | None:
    """The answer number of a math solution: after '####' if present, else the last number."""
    if "####" in text:
        text = text.split("####")[-1]
    nums = _NUMBER.findall(text)
    if not nums:
        return None
    try:
        return float(nums[-1].replace(",", "").rstrip("."))
    except ValueError:
        return None


def math_accuracy(pred: str, gold: str) -> float:
    p, g = final_number(pred), final_number(gold)
    return float(p is not None and g is not None and abs(p - g) < 1e-6)


def parse_labels(text: str, labels: tuple[str, ...], sep: str = ", ") -> set[str]:
    """Labels named in a generated multi-label answer (case-insensitive; unknown words ignored)."""
    lookup = {lab.lower(): lab for lab in labels}
    parts = [p.strip().lower() for p in re.split(re.escape(sep.strip()) or ",", text)]
    return {lookup[p] for p in parts if p in lookup}


def multilabel_scores(pred: set[str], gold: set[str]) -> tuple[float, float]:
    """(example-based F1, exact set match)."""
    if not pred and not gold:
        return 1.0, 1.0
    tp = len(pred & gold)
    f1 = 2 * tp / (len(pred) + len(gold)) if (pred or gold) else 0.0
    return f1, float(pred == gold)


def score_generation(
    metric: str, pred: str, gold: str, labels: tuple[str, ...] = (), sep: str = ", "
) -> dict:
    """Score one generated answer; the dict's ``score`` is the task's primary metric."""
    if metric == "exact_match":
        return {"score": exact_match(pred, gold)}
    if metric == "rouge_l":
        return {"score": rouge_l(pred, gold)}
    if metric == "math_accuracy":
        return {"score": math_accuracy(pred, gold)}
    if metric == "multilabel_f1":
        gold_set = parse_labels(gold, labels, sep) if labels else {g.strip() for g in gold.split(sep.strip())}
        pred_set = (
            parse_labels(pred, labels, sep)
            if labels
            else {p.strip() for p in pred.split(sep.strip()) if p.strip()}
        )
        f1, em = multilabel_scores(pred_set, gold_set)
        return {"score": f1, "exact_match": em}
    if metric == "accuracy":
        return {"score": float(pred.strip() == gold.strip())}
    raise ValueError(f"unknown metric {metric!r}")
