"""Demonstration orders must not leak the next label (a round-robin order did, and models learned it).

Each test reads the label sequence of real builds and tries to predict label i from labels < i with
three predictors: "complete the round" (the old leak), an order-2 Markov model fitted on other
sequences, and "the label seen least so far" (the leak of exact balance). Leak-free orders keep all
three at chance; the round-robin order is shown to fail the same check, so the check can fail.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from manyicl.packing import balanced_order, balanced_sample, build_task_sequences, iid_label_order
from manyicl.templates import tokenize_task

from conftest import toy_task


def sequence_labels(tt, seqs) -> list[list[int]]:
    """Labels of the examples in each sequence, recovered from their supervised target ids."""
    by_target = {tuple(tt.target[i].tolist()): tt.label_ids[i] for i in range(len(tt.target))}
    out = []
    for s in seqs:
        pos, labs = s.header_len, []
        for n in s.example_lengths:
            ids, m = s.ids[pos : pos + n], s.loss_mask[pos : pos + n]
            labs.append(int(by_target[tuple(ids[m].tolist())]))
            pos += n
        out.append(labs)
    return out


def round_completion_accuracy(seqs: list[list[int]], n_labels: int) -> float:
    """At the last position of each round of n_labels, predict the one label the round has not had."""
    hits = total = 0
    for labs in seqs:
        for start in range(0, len(labs) - n_labels + 1, n_labels):
            seen = set(labs[start : start + n_labels - 1])
            if len(seen) == n_labels - 1:
                missing = (set(range(n_labels)) - seen).pop()
                hits += labs[start + n_labels - 1] == missing
                total += 1
            else:  # the round already repeats a label: guess uniformly (chance)
                hits += 1 / n_labels
                total += 1
    return hits / max(total, 1)


def markov2_accuracy(seqs: list[list[int]]) -> float:
    """Order-2 Markov predictor fitted on the first half of the sequences, scored on the second."""
    half = len(seqs) // 2
    table: dict[tuple[int, int], Counter] = {}
    for labs in seqs[:half]:
        for i in range(2, len(labs)):
            table.setdefault((labs[i - 2], labs[i - 1]), Counter())[labs[i]] += 1
    hits = total = 0
    for labs in seqs[half:]:
        for i in range(2, len(labs)):
            c = table.get((labs[i - 2], labs[i - 1]))
            if c:
                hits += labs[i] == c.most_common(1)[0][0]
                total += 1
    return hits / max(total, 1)


def least_seen_accuracy(seqs: list[list[int]], n_labels: int) -> float:
    """Predict the label seen least so far in the sequence (ties broken at random: chance)."""
    hits = total = 0.0
    for labs in seqs:
        counts = np.zeros(n_labels)
        counts[labs[0]] += 1
        for lab in labs[1:]:
            low = np.flatnonzero(counts == counts.min())
            hits += (lab in low) / len(low)
            total += 1
            counts[lab] += 1
    return hits / max(total, 1)


def run3_rate(seqs: list[list[int]]) -> float:
    """Share of positions that close a run of three equal labels."""
    hits = total = 0
    for labs in seqs:
        for i in range(2, len(labs)):
            hits += labs[i] == labs[i - 1] == labs[i - 2]
            total += 1
    return hits / max(total, 1)


@pytest.fixture(scope="module")
def binary(tok):
    task = toy_task(n=2400, name="binary", labels=("yes", "no"))
    return tokenize_task(task, tok, "train", 1024)


def build_labels(tt, shots, label_sampling, n=240, max_length=1024):
    seqs, _ = build_task_sequences(
        tt, shots, "mask_all_targets", max_length, n, np.random.default_rng(7), label_sampling=label_sampling
    )
    return sequence_labels(tt, seqs)


def test_long_binary_training_build_has_no_label_leak(binary):
    labs = build_labels(binary, "max", "iid")
    assert np.mean([len(x) for x in labs]) > 30  # long many-shot sequences
    assert round_completion_accuracy(labs, 2) == pytest.approx(0.5, abs=0.03)
    assert markov2_accuracy(labs) == pytest.approx(0.5, abs=0.03)
    assert least_seen_accuracy(labs, 2) == pytest.approx(0.5, abs=0.03)
    assert run3_rate(labs) == pytest.approx(0.25, abs=0.03)  # what independent fair labels give
    longest_run = max(max(len(list(g)) for g in _runs(x)) for x in labs)
    assert longest_run >= 5  # 240 sequences of ~36 labels: long runs occur as they should


def _runs(labs):
    from itertools import groupby

    return (list(g) for _, g in groupby(labs))


def test_fixed_k_training_sequences_have_no_label_leak(binary):
    labs = build_labels(binary, 5, "iid", n=2000)
    assert all(len(x) == 6 for x in labs)
    assert round_completion_accuracy(labs, 2) == pytest.approx(0.5, abs=0.03)
    assert markov2_accuracy(labs) == pytest.approx(0.5, abs=0.03)
    assert least_seen_accuracy(labs, 2) == pytest.approx(0.5, abs=0.03)


def test_balanced_sequences_are_shuffled_not_dealt(binary):
    labs = build_labels(binary, "max", "balanced")
    for x in labs:
        c = Counter(x)
        assert abs(c[0] - c[1]) <= 1  # balanced counts
    assert round_completion_accuracy(labs, 2) == pytest.approx(0.5, abs=0.03)
    assert markov2_accuracy(labs) == pytest.approx(0.5, abs=0.04)
    shuffled = [list(np.random.default_rng(i).permutation(x)) for i, x in enumerate(labs)]
    assert run3_rate(labs) == pytest.approx(run3_rate(shuffled), abs=0.03)
    # exact balance does leak through counting: documented, and why training defaults to iid
    assert least_seen_accuracy(labs, 2) > 0.55


def test_the_check_catches_a_round_robin_order():
    """The old stratified order (labels dealt in rounds) fails the same check: the test can fail."""
    labels = np.array([0, 1] * 500)
    rng = np.random.default_rng(0)
    dealt = [labels[balanced_order(labels, rng)[:36]].tolist() for _ in range(200)]
    assert round_completion_accuracy(dealt, 2) > 0.95
    assert run3_rate(dealt) < 0.01


@pytest.mark.parametrize("k", [4, 5, 16, 36])
def test_eval_prompts_are_balanced_draws_in_random_order(k):
    labels = np.array([0] * 300 + [1] * 300 + [2] * 300)
    rng = np.random.default_rng(1)
    draws = [balanced_sample(labels, k, rng) for _ in range(600)]
    labs = [labels[d].tolist() for d in draws]
    for d, x in zip(draws, labs):
        assert len(set(d.tolist())) == k
        c = Counter(x)
        assert max(c.values()) - min(c.get(j, 0) for j in range(3)) <= 1
    # the order is a uniform shuffle of the selection: no predictor does better than on a fresh shuffle
    shuffled = [list(np.random.default_rng(i).permutation(x)) for i, x in enumerate(labs)]
    assert round_completion_accuracy(labs, 3) == pytest.approx(
        round_completion_accuracy(shuffled, 3), abs=0.04
    )
    assert run3_rate(labs) == pytest.approx(run3_rate(shuffled), abs=0.03)
    # every label is equally likely at every position (no position carries a fixed label)
    first = Counter(x[0] for x in labs)
    assert min(first.values()) / 600 > 0.27


def test_iid_order_draws_labels_independently_of_pool_order():
    labels = np.array([0] * 500 + [1] * 500)
    rng = np.random.default_rng(3)
    seqs = [labels[iid_label_order(labels, rng)[:40]].tolist() for _ in range(300)]
    assert markov2_accuracy(seqs) == pytest.approx(0.5, abs=0.03)
    assert np.mean([np.mean(x) for x in seqs]) == pytest.approx(0.5, abs=0.02)
