"""Many-shot training sequences: sampling, objectives, window packing and token accounting.

A *sequence* is header + examples of one task, as many as fit in ``max_length`` (shots='max') or
k demonstrations + 1 (shots=k). The objective decides which tokens carry loss. Short sequences
(zero/few-shot) are packed several to a *window* with restarting position ids, so they do not
attend to each other -- correct only with ``use_cache=False`` (transformers detects packing from
position ids only when no cache is passed). No example is ever split across windows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .templates import TokenizedTask


def balanced_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """All examples dealt from their label pools round-robin, a fresh random label order every round.

    Any prefix has balanced label counts (within one per label), so a prefix is a balanced random
    *selection*. Never use it as a demonstration *order*: in strict rounds the last label of a round
    is determined by the ones before it (a leak models learn; see ``balanced_sample``). O(n log n).
    """
    n = len(labels)
    perm = rng.permutation(n)
    lab_perm = labels[perm]
    srt = np.argsort(lab_perm, kind="stable")
    sorted_labs = lab_perm[srt]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_labs)) + 1]
    group_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    rank_in_pool = np.empty(n, dtype=np.float64)
    rank_in_pool[srt] = np.arange(n) - group_start
    key = np.empty(n, dtype=np.float64)
    key[perm] = rank_in_pool + rng.random(n)
    return np.argsort(key, kind="stable")


def balanced_sample(labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k examples with balanced label counts (the labels that get one more are random), in random order.

    The paper's stratified prompt. The order is a uniform shuffle of the selection, so labels show runs
    at the rate a shuffle gives. Exact balance still tells the last position's label from the counts
    before it; for training sequences ``iid_label_order`` has no such leak.
    """
    return rng.permutation(balanced_order(labels, rng)[:k])


def iid_label_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An order whose label at every position is drawn uniformly at random, independently of the
    positions before it, each followed by an unused example of that label.

    Balanced in expectation and leak-free: no function of the labels so far predicts the next one
    better than chance until a label pool runs out (pools are far larger than a sequence; a build
    counts sequences that exhaust the pool). Positions drawn for an exhausted pool are dropped and the
    examples left over follow in random order, so tiny tasks still use every example.
    """
    n = len(labels)
    uniq, inv = np.unique(labels, return_inverse=True)
    draws = rng.integers(len(uniq), size=n)
    order = np.full(n, -1, dtype=np.int64)
    for c in range(len(uniq)):
        pool = rng.permutation(np.flatnonzero(inv == c))
        slots = np.flatnonzero(draws == c)
        m = min(len(pool), len(slots))
        order[slots[:m]] = pool[:m]
    used = order[order >= 0]
    rest = np.setdiff1d(np.arange(n), used)
    return np.concatenate([used, rng.permutation(rest)]) if len(rest) else used


LABEL_SAMPLING = ("iid", "balanced")


def training_order(labels: np.ndarray, rng: np.random.Generator, label_sampling: str = "iid") -> np.ndarray:
    """The example order one training sequence takes its examples from (``DataConfig.label_sampling``)."""
    if label_sampling == "iid":
        return iid_label_order(labels, rng)
    if label_sampling == "balanced":
        return balanced_order(labels, rng)  # callers shuffle the prefix they take
    raise ValueError(f"unknown label_sampling {label_sampling!r}; use {' or '.join(LABEL_SAMPLING)}")


@dataclass
class TrainingSequence:
    """One task's examples laid end to end, with the tokens that carry loss."""

    ids: np.ndarray
    loss_mask: np.ndarray
    """True where the token is a target: it is predicted from the tokens before it."""
    task: str
    example_lengths: list[int]
    header_len: int
    supervised_examples: int
    tag: str = ""
    """What kind of data this is, for the training loop (e.g. ``icl`` for mixed-in many-shot data, which
    the KL-to-base regulariser applies to); empty for ordinary builds."""

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_examples(self) -> int:
        return len(self.example_lengths)

    def mask_last_equivalent_tokens(self) -> int:
        """Tokens mask-last-target training processes to supervise the same example targets.

        Supervising examples 1..n one at a time needs n sequences of lengths h + l_1 + ... + l_i.
        """
        if self.supervised_examples <= 1:
            return len(self.ids)
        csum = np.cumsum(self.example_lengths)
        return int(self.header_len * len(csum) + csum.sum())


def make_sequence(
    tokenized: TokenizedTask, indices: list[int] | np.ndarray, objective: str
) -> TrainingSequence:
    """Concatenate header + the given examples; set the loss mask for ``objective``."""
    body, targets, lens = tokenized.gather(np.asarray(indices, dtype=np.int64))
    h = len(tokenized.header)
    ids = np.concatenate([tokenized.header, body])
    lengths = lens.tolist()
    if objective == "mask_all_targets":
        mask = np.concatenate([np.zeros(h, dtype=bool), targets])
        supervised = len(lengths)
    elif objective == "mask_last_target":
        mask = np.zeros(len(ids), dtype=bool)
        if lengths:
            last = lengths[-1]
            mask[len(ids) - last :] = targets[len(targets) - last :]
        supervised = 1 if lengths else 0
    elif objective == "autoregressive":
        mask = np.ones(len(ids), dtype=bool)
        mask[0] = False  # the first token has nothing to be predicted from
        supervised = len(lengths)
    else:
        raise ValueError(
            f"unknown objective {objective!r}; use mask_all_targets, mask_last_target or autoregressive"
        )
    return TrainingSequence(ids, mask, tokenized.task.name, lengths, len(tokenized.header), supervised)


@dataclass
class TaskBuildStats:
    task: str
    sequences: int = 0
    examples: int = 0
    supervised_examples: int = 0
    tokens: int = 0
    supervised_tokens: int = 0
    mask_last_equivalent_tokens: int = 0
    skipped_overlong: int = 0
    truncated_overlong: int = 0
    shortened: int = 0
    """Fixed-k sequences that held fewer than k+1 examples because they did not fit."""
    pool_exhausted: int = 0
    """Sequences cut short because the task had no unused examples left (no repeats in a sequence)."""

    def add(self, seq: TrainingSequence) -> None:
        self.sequences += 1
        self.examples += seq.n_examples
        self.supervised_examples += seq.supervised_examples
        self.tokens += len(seq)
        self.supervised_tokens += int(seq.loss_mask.sum())
        self.mask_last_equivalent_tokens += seq.mask_last_equivalent_tokens()


def build_task_sequences(
    tokenized: TokenizedTask,
    shots: int | str,
    objective: str,
    max_length: int,
    n_sequences: int,
    rng: np.random.Generator,
    supervised_budget: int = 0,
    label_sampling: str = "iid",
    token_budget: int = 0,
) -> tuple[list[TrainingSequence], TaskBuildStats]:
    """Sample ``n_sequences`` sequences of one task (or, with ``supervised_budget``, as many as it takes
    for that many examples to carry loss).

    With ``token_budget``, sequences are added until the task's sequences hold that many tokens (the
    ``equal_tokens``/``equal_steps`` budgets of an experiment).

    Each sequence draws its own examples without repeats; in 'max' mode it takes examples in that order
    while they fit, in fixed-k mode the first k+1. Classification tasks draw labels i.i.d. uniformly
    (``label_sampling='iid'``) or take a balanced selection in shuffled order (``'balanced'``); never in
    rounds, whose order leaks the next label.
    """
    stats = TaskBuildStats(
        tokenized.task.name, skipped_overlong=tokenized.skipped, truncated_overlong=tokenized.truncated
    )
    seqs: list[TrainingSequence] = []
    if not tokenized.query:
        return seqs, stats
    lengths, labels = tokenized.lengths, tokenized.label_ids
    budget = max_length - len(tokenized.header)

    def more() -> bool:
        if token_budget:
            return stats.tokens < token_budget
        if supervised_budget:
            return stats.supervised_examples < supervised_budget
        return stats.sequences < n_sequences

    while more():
        if labels is None:
            order = rng.permutation(len(lengths))
        else:
            order = training_order(labels, rng, label_sampling)
        csum = np.cumsum(lengths[order])
        fit = int(np.searchsorted(csum, budget, side="right"))
        if shots == "max":
            take = fit
            if take == len(order) and csum[-1] < budget:
                stats.pool_exhausted += 1
            if token_budget:
                # the task's last sequence holds just enough examples to reach its budget (fewer shots),
                # so a budget smaller than a window is kept instead of rounded up to a whole window per task
                left = token_budget - stats.tokens - len(tokenized.header)
                take = min(take, int(np.searchsorted(csum, left, side="left")) + 1)
        else:
            want = int(shots) + 1
            take = min(want, fit)
            if take < want:
                if take == len(order):
                    stats.pool_exhausted += 1
                else:
                    stats.shortened += 1
        take = max(take, 1)  # every example fits alone (overlong ones were handled at tokenization)
        picked = order[:take]
        if labels is not None and label_sampling == "balanced":
            picked = rng.permutation(picked)  # a balanced selection, in random order
        seq = make_sequence(tokenized, picked, objective)
        seqs.append(seq)
        stats.add(seq)
    return seqs, stats


@dataclass
class Window:
    """What one row of a micro-batch holds: one or more sequences, position ids restarting at each."""

    sequences: list[TrainingSequence]

    def __len__(self) -> int:
        return sum(len(s) for s in self.sequences)

    @property
    def supervised_tokens(self) -> int:
        return int(sum(s.loss_mask.sum() for s in self.sequences))


def pack_windows(seqs: list[TrainingSequence], max_length: int, pack_short: bool) -> list[Window]:
    """Next-fit packing of sequences into windows of at most ``max_length`` tokens.

    The order of ``seqs`` is kept (callers shuffle first, so windows mix tasks). A sequence is
    never split; with ``pack_short`` off every sequence gets its own window.
    """
    windows: list[Window] = []
    cur: list[TrainingSequence] = []
    used = 0
    for s in seqs:
        if len(s) > max_length:
            raise ValueError(f"sequence of {len(s)} tokens exceeds max_length {max_length}")
        if pack_short and cur and used + len(s) <= max_length:
            cur.append(s)
            used += len(s)
            continue
        if cur:
            windows.append(Window(cur))
        cur, used = [s], len(s)
    if cur:
        windows.append(Window(cur))
    return windows


@dataclass
class Batch:
    """A micro-batch as ``[rows, length]`` arrays; positions restart at every sequence.

    Layout ``row``: all windows concatenated into one padding-free row (best on CPU: no padding, and
    attention over short packed sequences is cheap). Layout ``rows``: one row per window, right-padded
    (best on GPU: attention costs rows x L^2 instead of (rows x L)^2). Padding tokens form their own
    segment after the real tokens, so causal attention keeps real tokens from ever seeing them, and
    they carry no loss.
    """

    input_ids: np.ndarray
    position_ids: np.ndarray
    loss_mask: np.ndarray
    n_sequences: int
    tag_mask: np.ndarray | None = None
    """With ``collate(..., tag=T)``: the loss-mask positions of sequences tagged T (else None)."""

    @property
    def supervised_tokens(self) -> int:
        return int(self.loss_mask.sum())


def collate(windows: list[Window], layout: str = "row", pad_id: int = 0, tag: str | None = None) -> Batch:
    """Lay windows out as a micro-batch; with ``tag``, also mark the supervised tokens of the sequences
    carrying that tag (``Batch.tag_mask``)."""
    if layout == "row":
        seqs = [s for w in windows for s in w.sequences]
        ids = np.concatenate([s.ids for s in seqs])
        pos = np.concatenate([np.arange(len(s), dtype=np.int64) for s in seqs])
        mask = np.concatenate([s.loss_mask for s in seqs])
        tag_mask = None
        if tag is not None:
            tag_mask = np.concatenate([s.loss_mask & (s.tag == tag) for s in seqs])[None]
        return Batch(ids[None], pos[None], mask[None], len(seqs), tag_mask)
    if layout != "rows":
        raise ValueError(f"unknown layout {layout!r}; use row or rows")
    rows = [collate([w], "row", tag=tag) for w in windows]
    width = max(r.input_ids.shape[1] for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    pos = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=bool)
    tag_mask = np.zeros((len(rows), width), dtype=bool) if tag is not None else None
    for i, r in enumerate(rows):
        n = r.input_ids.shape[1]
        ids[i, :n], pos[i, :n], mask[i, :n] = r.input_ids[0], r.position_ids[0], r.loss_mask[0]
        if tag_mask is not None:
            tag_mask[i, :n] = r.tag_mask[0]
        pos[i, n:] = np.arange(width - n)  # padding: a segment of its own
    return Batch(ids, pos, mask, sum(r.n_sequences for r in rows), tag_mask)


@dataclass
class BuildStats:
    """Token accounting of a build (``manyicl data stats``)."""

    max_length: int
    shots: int | str
    objective: str
    windows: int = 0
    window_tokens: int = 0
    per_task: dict[str, TaskBuildStats] = field(default_factory=dict)

    def totals(self) -> dict:
        keys = [
            "sequences",
            "examples",
            "supervised_examples",
            "tokens",
            "supervised_tokens",
            "mask_last_equivalent_tokens",
            "skipped_overlong",
            "truncated_overlong",
            "shortened",
            "pool_exhausted",
        ]
        tot = {k: sum(getattr(s, k) for s in self.per_task.values()) for k in keys}
        tot["tasks"] = len(self.per_task)
        tot["windows"] = self.windows
        tot["mean_shots_per_sequence"] = tot["examples"] / max(tot["sequences"], 1)
        tot["window_fill"] = self.window_tokens / max(self.windows * self.max_length, 1)
        tot["mask_last_over_build_ratio"] = tot["mask_last_equivalent_tokens"] / max(tot["tokens"], 1)
        return tot

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return {
            "max_length": self.max_length,
            "shots": self.shots,
            "objective": self.objective,
            "totals": self.totals(),
            "per_task": {k: asdict(v) for k, v in self.per_task.items()},
        }
