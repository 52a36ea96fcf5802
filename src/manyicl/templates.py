"""Rendering examples to token ids with their target mask, built while tokenizing.

``render(example) -> (ids, target_mask)`` tokenizes the query part (prefix + input + output prefix)
and the target part (target prefix + output + example separator) separately and concatenates them,
so the target mask is exact by construction, never recovered by searching for template tokens.
Training and evaluation use the same renderer, so a prompt is tokenized identically in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .errors import Collector, TaskFormatError
from .tasks import Example, Task, Template


def special_prefix(tokenizer) -> list[int]:
    """The special tokens the tokenizer itself puts in front of text (e.g. ``<s>``); often empty."""
    with_sp = tokenizer("a", add_special_tokens=True)["input_ids"]
    without = tokenizer("a", add_special_tokens=False)["input_ids"]
    if not without:
        return []
    for i in range(len(with_sp)):
        if with_sp[i : i + len(without)] == without:
            return list(with_sp[:i])
    return []


MAX_CHARS_PER_TOKEN = 32
"""No tokenizer in use averages more characters per token than this: text longer than 32 x budget
characters cannot fit, so it is cut to that before it is ever tokenized (a 50 MB example otherwise costs
seconds and gigabytes per tokenization)."""


def precut_text(text: str, budget: int) -> tuple[str, bool]:
    """The end of ``text`` that could possibly fit in ``budget`` tokens, and whether it was cut."""
    limit = max(budget, 1) * MAX_CHARS_PER_TOKEN
    return (text[-limit:], True) if len(text) > limit else (text, False)


class Renderer:
    """Turns a task's examples into token ids under one template and tokenizer."""

    def __init__(self, tokenizer, template: Template, add_bos: bool = True):
        self.tokenizer = tokenizer
        self.template = template
        self.bos = special_prefix(tokenizer) if add_bos else []
        head = template.header_text()
        self.header_ids: list[int] = self.bos + (self._encode([head])[0] if head else [])

    def _encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, tokenizing each distinct text once (labels repeat a lot), through the
        Rust tokenizer directly when there is one (the Python wrapper's per-text conversion costs ~30%)."""
        if not texts:
            return []
        unique = list(dict.fromkeys(texts))
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            ids = [e.ids for e in backend.encode_batch(unique, add_special_tokens=False)]
        else:
            ids = self.tokenizer(unique, add_special_tokens=False)["input_ids"]
        if len(unique) == len(texts):
            return ids
        table = dict(zip(unique, ids))
        return [table[t] for t in texts]

    def query_ids(self, inputs: list[str]) -> list[list[int]]:
        return self._encode([self.template.query_text(x) for x in inputs])

    def target_ids(self, outputs: list[str]) -> list[list[int]]:
        return self._encode([self.template.target_text(y) for y in outputs])

    def render(self, example: Example) -> tuple[list[int], list[bool]]:
        """Token ids of one example and a mask that is True on its target tokens."""
        (q,) = self.query_ids([example.input])
        (t,) = self.target_ids([example.output])
        return q + t, [False] * len(q) + [True] * len(t)

    def fit_query(self, input: str, budget: int) -> tuple[list[int], bool]:
        """Query ids within ``budget`` tokens, cutting the input from the left when needed.

        Returns the ids and whether the input was cut. Cuts by characters and re-tokenizes, so
        the result is always a real tokenization of real text.
        """
        input, precut = precut_text(input, budget)
        (q,) = self.query_ids([input])
        if len(q) <= budget and not precut:
            return q, False
        if len(q) <= budget:
            (q,) = self.query_ids(["..." + input.lstrip()])
            if len(q) <= budget:
                return q, True
        lo, hi = 1, len(input)  # number of leading characters to drop
        best: list[int] | None = None
        while lo <= hi:
            mid = (lo + hi) // 2
            (cand,) = self.query_ids(["..." + input[mid:].lstrip()])
            if len(cand) <= budget:
                best, hi = cand, mid - 1
            else:
                lo = mid + 1
        if best is None:  # even an empty input does not fit: the template alone is too long
            (best,) = self.query_ids([""])
        return best, True


@dataclass
class TokenizedTask:
    """A task split tokenized once: per-example query and target ids, ready for packing."""

    task: Task
    split: str
    header: np.ndarray
    query: list[np.ndarray]
    target: list[np.ndarray]
    strata: list[str | None]
    examples: list[Example]
    skipped: int = 0
    truncated: int = 0

    @cached_property
    def label_ids(self) -> np.ndarray | None:
        """Integer label per example for stratified sampling; None when the task has no labels."""
        if not self.strata or all(s is None for s in self.strata):
            return None
        names = {s: i for i, s in enumerate(sorted({s or "" for s in self.strata}))}
        return np.fromiter((names[s or ""] for s in self.strata), dtype=np.int64, count=len(self.strata))

    @cached_property
    def lengths(self) -> np.ndarray:
        return np.fromiter(
            (len(q) + len(t) for q, t in zip(self.query, self.target)), dtype=np.int64, count=len(self.query)
        )

    def example_ids(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        q, t = self.query[i], self.target[i]
        mask = np.zeros(len(q) + len(t), dtype=bool)
        mask[len(q) :] = True
        return np.concatenate([q, t]), mask

    @cached_property
    def flat(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All examples end to end: (ids, target mask, start offset of each example). Sequences are
        gathered from these arrays in one vectorised step instead of concatenating per example."""
        if not self.query:
            return np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0, np.int64)
        ids = np.concatenate([a for q, t in zip(self.query, self.target) for a in (q, t)])
        mask = np.concatenate(
            [
                m
                for q, t in zip(self.query, self.target)
                for m in (np.zeros(len(q), bool), np.ones(len(t), bool))
            ]
        )
        starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        return ids, mask, starts

    def gather(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, target mask, lengths) of the given examples laid end to end."""
        ids, mask, starts = self.flat
        lens = self.lengths[indices]
        total = int(lens.sum())
        offset_in_seq = np.repeat(np.cumsum(lens) - lens, lens)
        pos = np.repeat(starts[indices], lens) + (np.arange(total) - offset_in_seq)
        return ids[pos], mask[pos], lens


class OverlongExampleError(TaskFormatError):
    title = "examples longer than the context window"


def tokenize_task(
    task: Task,
    tokenizer,
    split: str,
    max_length: int,
    on_overlong: str = "truncate_input",
    add_bos: bool = True,
    limit: int | None = None,
    overlong_key: str = "data.on_overlong",
    window: str | None = None,
) -> TokenizedTask:
    """Tokenize every example of ``task[split]`` once, applying the overlong-example policy.

    An example is overlong when header + example exceeds ``max_length``. Policy ``skip`` drops it
    (counted in ``skipped``), ``truncate_input`` cuts its input from the left (counted in
    ``truncated``), ``error`` raises :class:`OverlongExampleError` naming the file and line. Its
    message names the setting to change as ``overlong_key`` (evaluation: ``on_overlong``) and the
    limit as ``window`` (default ``max_length N``; evaluation's demonstrations get half the window).
    """
    examples = task.split(split)
    if limit is not None:
        examples = examples[:limit]
    r = Renderer(tokenizer, task.template, add_bos=add_bos)
    header = np.asarray(r.header_ids, dtype=np.int64)
    # inputs too long to ever fit are cut before tokenization (they are overlong either way)
    precut = [precut_text(e.input, max_length)[0] for e in examples]
    queries = r.query_ids(precut)
    targets = r.target_ids([e.output for e in examples])
    budget = max_length - len(header)
    keep_q, keep_t, keep_ex, strata = [], [], [], []
    skipped = truncated = 0
    too_long = Collector()
    for i, (e, q, t) in enumerate(zip(examples, queries, targets)):
        if len(q) + len(t) > budget or precut[i] is not e.input:
            if on_overlong == "error":
                where = f"{task.split_files.get(split, task.name + '/' + split)}:{e.line or i + 1}"
                too_long.add(
                    where,
                    f"{len(q) + len(t)} tokens + {len(header)} header > {window or f'max_length {max_length}'}; "
                    f"set {overlong_key} to skip or truncate_input, or raise max_length",
                    "input",
                )
                continue
            if on_overlong == "skip" or len(t) >= budget - 4:
                skipped += 1
                continue
            q, _ = r.fit_query(precut[i], budget - len(t))
            if len(q) + len(t) > budget:
                skipped += 1
                continue
            truncated += 1
        keep_q.append(np.asarray(q, dtype=np.int64))
        keep_t.append(np.asarray(t, dtype=np.int64))
        keep_ex.append(e)
        strata.append(task.stratify_key(e))
    too_long.raise_if_any(OverlongExampleError)
    return TokenizedTask(task, split, header, keep_q, keep_t, strata, keep_ex, skipped, truncated)
