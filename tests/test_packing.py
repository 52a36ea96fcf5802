from collections import Counter

import numpy as np
import pytest

from manyicl.packing import balanced_order, build_task_sequences, collate, make_sequence, pack_windows
from manyicl.tasks import Example
from manyicl.templates import OverlongExampleError, Renderer, tokenize_task

from conftest import requires_smollm2, toy_task


def _enc(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_render_builds_the_target_mask_while_tokenizing(tok, task):
    r = Renderer(tok, task.template)
    ex = Example("hello world", "blue")
    ids, mask = r.render(ex)
    q = _enc(tok, task.template.query_text(ex.input))
    t = _enc(tok, task.template.target_text(ex.output))
    assert ids == q + t
    assert mask == [False] * len(q) + [True] * len(t)
    assert tok.decode([i for i, m in zip(ids, mask) if m]) == " blue\n"


@pytest.mark.slow
@requires_smollm2
def test_render_matches_the_real_tokenizer_boundaries():
    """With a BPE tokenizer the target starts at a word boundary, so separate == joint tokenization."""
    from manyicl.config import ModelConfig
    from manyicl.modeling import load_tokenizer

    real = load_tokenizer(ModelConfig())
    task = toy_task()
    r = Renderer(real, task.template, add_bos=True)
    ex = Example("Let me know how much money I need", "Bill balance")
    ids, _ = r.render(ex)
    joint = _enc(real, task.template.query_text(ex.input) + task.template.target_text(ex.output))
    assert ids == joint


@pytest.mark.parametrize(
    "objective,expect",
    [
        ("mask_all_targets", "all_targets"),
        ("mask_last_target", "last_target"),
        ("autoregressive", "all_tokens"),
    ],
)
def test_each_objective_supervises_exactly_the_expected_tokens(tok, task, objective, expect):
    tt = tokenize_task(task, tok, "train", 4096)
    idx = [0, 5, 7, 2]
    seq = make_sequence(tt, idx, objective)
    expected = np.zeros(len(seq), dtype=bool)
    pos = len(tt.header)
    for k, i in enumerate(idx):
        q, t = len(tt.query[i]), len(tt.target[i])
        if expect == "all_targets" or (expect == "last_target" and k == len(idx) - 1):
            expected[pos + q : pos + q + t] = True
        pos += q + t
    if expect == "all_tokens":
        expected[:] = True
        expected[0] = False
    assert np.array_equal(seq.loss_mask, expected)
    assert seq.supervised_examples == (1 if expect == "last_target" else len(idx))
    # supervised text decodes to the targets
    if expect != "all_tokens":
        sup = tok.decode(seq.ids[seq.loss_mask].tolist())
        wanted = [task.splits["train"][i] for i in (idx if expect == "all_targets" else idx[-1:])]
        assert sup == "".join(task.template.target_text(e.output) for e in wanted)


def test_max_shots_fill_the_window_with_whole_examples(tok, task):
    tt = tokenize_task(task, tok, "train", 300)
    seqs, stats = build_task_sequences(tt, "max", "mask_all_targets", 300, 20, np.random.default_rng(0))
    longest = int(tt.lengths.max())
    for s in seqs:
        assert len(s) <= 300
        assert len(s) > 300 - longest  # could not take the next example
        assert sum(s.example_lengths) + s.header_len == len(s)  # whole examples only
    assert stats.sequences == 20 and stats.examples == sum(s.n_examples for s in seqs)


def test_fixed_k_and_zero_shot(tok, task):
    tt = tokenize_task(task, tok, "train", 2048)
    for k in (0, 1, 5):
        seqs, _ = build_task_sequences(tt, k, "mask_last_target", 2048, 10, np.random.default_rng(1))
        assert all(s.n_examples == k + 1 for s in seqs)
        assert all(int(s.loss_mask.sum()) == len(tt.target[0]) or s.supervised_examples == 1 for s in seqs)


def test_no_repeats_within_a_sequence_and_pool_exhaustion_is_counted(tok):
    task = toy_task(n=6)
    tt = tokenize_task(task, tok, "train", 4096)
    seqs, stats = build_task_sequences(tt, "max", "mask_all_targets", 4096, 3, np.random.default_rng(0))
    assert all(s.n_examples == 6 for s in seqs)
    assert stats.pool_exhausted == 3


def test_balanced_order_is_balanced_in_every_prefix():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    order = balanced_order(labels, rng)
    assert sorted(order.tolist()) == list(range(100))
    for n in range(1, 61):  # while every label still has examples left
        counts = Counter(labels[order[:n]].tolist())
        assert max(counts.values()) - min(counts.get(k, 0) for k in (0, 1, 2)) <= 1
    assert not np.array_equal(order, balanced_order(labels, np.random.default_rng(1)))


def test_balanced_label_sampling_balances_sequences(tok):
    task = toy_task(n=90, labels=("a", "b", "c"))
    tt = tokenize_task(task, tok, "train", 400)
    seqs, _ = build_task_sequences(
        tt, "max", "mask_all_targets", 400, 5, np.random.default_rng(0), label_sampling="balanced"
    )
    by_target = {tuple(tt.target[i].tolist()): tt.strata[i] for i in range(len(tt.target))}
    for s in seqs:
        # recover labels of examples in the sequence from their target ids
        labels = []
        pos = s.header_len
        for L in s.example_lengths:
            ids = s.ids[pos : pos + L]
            m = s.loss_mask[pos : pos + L]
            labels.append(by_target[tuple(ids[m].tolist())])
            pos += L
        c = Counter(labels)
        assert max(c.values()) - min(c.values()) <= 1, c


def test_overlong_policies(tok):
    long = Example("word " * 200, "red")
    task = toy_task(n=9)
    task.splits["train"] = task.splits["train"] + [long]
    skip = tokenize_task(task, tok, "train", 128, "skip")
    assert skip.skipped == 1 and len(skip.query) == 9
    cut = tokenize_task(task, tok, "train", 128, "truncate_input")
    assert cut.truncated == 1 and len(cut.query) == 10
    assert len(cut.header) + len(cut.query[-1]) + len(cut.target[-1]) <= 128
    assert tok.decode(cut.target[-1].tolist()) == " red\n"  # the target is never cut
    with pytest.raises(OverlongExampleError, match="on_overlong"):
        tokenize_task(task, tok, "train", 128, "error")


def test_mask_last_accounting_matches_building_every_prefix(tok, task):
    tt = tokenize_task(task, tok, "train", 4096)
    idx = [3, 1, 4, 1 + 4, 9, 2, 6]
    seq = make_sequence(tt, idx, "mask_all_targets")
    brute = sum(len(make_sequence(tt, idx[: i + 1], "mask_last_target")) for i in range(len(idx)))
    assert seq.mask_last_equivalent_tokens() == brute
    last = make_sequence(tt, idx, "mask_last_target")
    assert last.mask_last_equivalent_tokens() == len(last)


def test_short_sequences_pack_into_windows_with_restarting_positions(tok, task):
    tt = tokenize_task(task, tok, "train", 256)
    seqs, _ = build_task_sequences(tt, 1, "mask_all_targets", 256, 30, np.random.default_rng(0))
    windows = pack_windows(seqs, 256, pack_short=True)
    assert len(windows) < len(seqs)
    assert sum(len(w.sequences) for w in windows) == len(seqs)  # nothing lost, nothing split
    for w in windows:
        assert len(w) <= 256
        b = collate([w])
        assert b.input_ids.shape == (1, len(w))
        starts = np.flatnonzero(b.position_ids[0] == 0)
        assert len(starts) == len(w.sequences)
        assert not b.loss_mask[0, starts].any()  # a sequence's first token is never a target
    assert len(pack_windows(seqs, 256, pack_short=False)) == len(seqs)


def test_builds_are_deterministic(tok, task):
    tt = tokenize_task(task, tok, "train", 300)
    a, _ = build_task_sequences(tt, "max", "mask_all_targets", 300, 5, np.random.default_rng(3))
    b, _ = build_task_sequences(tt, "max", "mask_all_targets", 300, 5, np.random.default_rng(3))
    assert all(np.array_equal(x.ids, y.ids) for x, y in zip(a, b))


@pytest.mark.parametrize(
    "shots,objective",
    [("max", "mask_all_targets"), (5, "mask_all_targets"), (5, "mask_last_target"), (0, "mask_last_target")],
)
def test_supervised_budget_gives_every_method_the_same_supervision(tok, shots, objective):
    tt = tokenize_task(toy_task(200), tok, "train", 300)
    seqs, stats = build_task_sequences(
        tt, shots, objective, 300, 0, np.random.default_rng(0), supervised_budget=60
    )
    assert 60 <= stats.supervised_examples < 60 + max(s.supervised_examples for s in seqs)


def test_build_applies_the_supervised_budget(tok):
    from manyicl.config import DataConfig
    from manyicl.data import build_training_data

    for shots, objective in (("max", "mask_all_targets"), (0, "mask_last_target")):
        cfg = DataConfig(max_length=300, shots=shots, objective=objective, supervised_examples_per_task=40)
        b = build_training_data([toy_task(200, name="a"), toy_task(200, name="b")], tok, cfg)
        per = [s.supervised_examples for s in b.stats.per_task.values()]
        assert all(40 <= n < 60 for n in per), per


def test_rows_layout_pads_each_window_into_its_own_segment(tok, task):
    tt = tokenize_task(task, tok, "train", 256)
    seqs, _ = build_task_sequences(tt, 2, "mask_all_targets", 256, 6, np.random.default_rng(0))
    windows = pack_windows(seqs, 256, pack_short=True)[:3]
    b = collate(windows, "rows", pad_id=0)
    width = max(len(w) for w in windows)
    assert b.input_ids.shape == (3, width)
    for i, w in enumerate(windows):
        n = len(w)
        assert not b.loss_mask[i, n:].any()
        if n < width:
            assert b.position_ids[i, n] == 0  # the padding starts a segment of its own
    assert b.supervised_tokens == sum(w.supervised_tokens for w in windows)


@pytest.mark.parametrize("budget", [120, 450, 1000])
def test_a_token_budget_below_a_window_is_kept_not_rounded_up_to_whole_windows(tok, budget):
    """equal_tokens: a task's share smaller than a max-shot window gets a shorter (fewer-shot) sequence, not a
    whole window: 58 tasks x one 8K window once made a 180K-token budget 368K."""
    tt = tokenize_task(toy_task(400), tok, "train", 300)
    longest = int(tt.lengths.max()) + len(tt.header)
    seqs, stats = build_task_sequences(
        tt, "max", "mask_all_targets", 300, 0, np.random.default_rng(0), token_budget=budget
    )
    assert budget <= stats.tokens < budget + longest
    assert all(len(s) <= 300 for s in seqs) and all(s.n_examples >= 1 for s in seqs)
    assert all(len(s) > 300 - longest for s in seqs[:-1])  # only the last one is cut short
