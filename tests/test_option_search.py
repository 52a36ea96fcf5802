"""The pruned best-first option search returns what scoring every option returns, for less work.

Every case is checked against :func:`score_all` (itself checked against from-scratch recomputation in
test_caching / test_gemma3_sliding): the k best options are exact and the same set, the label is the same,
and every pruned option's bound is at least its true score. The option sets mix lengths, shared prefixes
and options that are prefixes of others, and small ``round_tokens`` force many rounds, so a query or
ancestor that a later round's node cannot see, or a bound that is not one, changes the answer.
"""

import random

import numpy as np
import pytest
import torch

from manyicl.caching import PromptCache
from manyicl.modeling import tiny_gemma3
from manyicl.option_search import OptionTrie, best_options, score_all


def _rand_ids(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(3, 250) for _ in range(n)]


def _option_set(rng: random.Random, n: int) -> list[list[int]]:
    """n distinct options: some share first tokens, some extend others, lengths 1..7."""
    heads = _rand_ids(rng, max(2, n // 3))
    opts: list[list[int]] = []
    while len(opts) < n:
        r = rng.random()
        if r < 0.25 and opts:
            o = rng.choice(opts) + _rand_ids(rng, rng.randint(1, 3))  # extends another option
        elif r < 0.7:
            o = [rng.choice(heads)] + _rand_ids(rng, rng.randint(0, 6))  # shares a first token
        else:
            o = _rand_ids(rng, rng.randint(1, 7))
        if o not in opts:
            opts.append(o)
    return opts


def _norm(lp: float, n: int, normalize: str) -> float:
    return lp / n if normalize == "tokens" else lp


def _check(pc, items, k, normalize, round_tokens, budget=4096):
    full = score_all(pc, items, token_budget=budget)
    got = best_options(pc, items, k=k, normalize=normalize, round_tokens=round_tokens, token_budget=budget)
    assert pc.length == pc.base_len  # everything appended was cropped off
    for (_, opts), want, res in zip(items, full, got):
        true = np.array([_norm(lp, n, normalize) for lp, n in want])
        assert res.tokens == [n for _, n in want]
        exact = np.array(res.exact)
        assert exact.sum() >= min(k, len(opts))
        lps = np.array(res.logprobs)
        np.testing.assert_allclose(lps[exact], [lp for (lp, _), e in zip(want, exact) if e], atol=1e-4)
        # a pruned option's entry bounds its true log-prob (and so its score) from above
        assert np.all(lps[~exact] >= np.array([lp for lp, _ in want])[~exact] - 1e-4)
        # the k best exact options are the true k best (compared by score, robust to float ties)
        mine = np.array([_norm(lp, n, normalize) for lp, n in zip(res.logprobs, res.tokens)])
        top_mine = np.sort(mine[exact])[::-1][: min(k, len(opts))]
        np.testing.assert_allclose(top_mine, np.sort(true)[::-1][: min(k, len(opts))], atol=1e-4)
        best = int(np.argmax(np.where(exact, mine, -np.inf)))
        assert true[best] >= true.max() - 1e-4  # the label (argmax) is the true argmax
    return got


@pytest.fixture()
def prompt(tok):
    return tok("Task: name the colour.\nText: sky\nLabel: blue\nText: grass\nLabel: green\n" * 3)["input_ids"]


def _sharpen(model, factor: float):
    """Scale the output layer: near-uniform random next-token distributions become peaked ones, where
    many log-probs are close to 0 and an option can catch up with a prefix's bound within a fraction of
    a nat (so a bound that is off by a little prunes an option that wins)."""
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(factor)
    return model


@pytest.mark.parametrize("normalize", ["none", "tokens"])
@pytest.mark.parametrize("k,round_tokens", [(1, 1), (1, 16), (3, 2), (5, 64)])
@pytest.mark.parametrize("sharp", [1.0, 5.0])
def test_best_options_equal_scoring_every_option(model, prompt, normalize, k, round_tokens, sharp):
    rng = random.Random(7 * k + round_tokens)
    pc = PromptCache(_sharpen(model, sharp), prompt)
    items = [(_rand_ids(rng, rng.randint(1, 9)), _option_set(rng, rng.randint(2, 30))) for _ in range(6)]
    _check(pc, items, k, normalize, round_tokens)
    _check(pc, items, k, normalize, round_tokens, budget=40)  # rounds split over several passes


def test_search_prunes_options_that_cannot_win(model, prompt):
    """One short option against many long ones under summed log-probs: after a few tokens every long
    option's prefix is already below the short one's score, so most of the trie is never fed."""
    rng = random.Random(1)
    pc = PromptCache(model, prompt)
    opts = [[5]] + [_rand_ids(rng, 8) for _ in range(20)]
    items = [(_rand_ids(rng, 6), opts)]
    (res,) = _check(pc, items, 1, "none", 4)
    assert res.fed < len(OptionTrie.build(opts).fed_nodes()) // 2
    assert not all(res.exact)


def test_a_bound_that_is_not_tight_would_prune_the_winner(model, prompt):
    """The winner is a two-token option whose first token's log-prob is within a nat of single-token
    rivals: it is found only because a prefix is pruned exactly when its own log-prob (not less) is below
    the best complete score. Built from the model's own distributions, so it holds for any seed."""
    pc = PromptCache(_sharpen(model, 5.0), prompt)
    q = [40, 41, 42]
    vocab = list(range(3, 250))
    first = [lp for lp, _ in score_all(pc, [(q, [[t] for t in vocab])])[0]]
    order = sorted(range(len(vocab)), key=lambda i: -first[i])
    a = vocab[order[1]]  # the runner-up first token (the favourite would win alone)
    seconds = [lp for lp, _ in score_all(pc, [(q, [[a, t] for t in vocab])])[0]]
    pair = [a, vocab[int(np.argmax(seconds))]]
    pair_lp = max(seconds)
    # rivals: single tokens below the pair but above the pair's first token minus one nat
    rivals = [[vocab[i]] for i in order[2:] if first[order[1]] - 1 < first[i] < pair_lp]
    assert rivals, "no rival in the band: the model gives no such case"
    items = [(q, rivals + [pair])]
    (res,) = _check(pc, items, 1, "none", 1)
    scores = np.where(res.exact, res.logprobs, -np.inf)
    assert int(np.argmax(scores)) == len(rivals)  # the pair wins


def test_k_at_least_the_option_count_scores_every_option(model, prompt):
    rng = random.Random(3)
    pc = PromptCache(model, prompt)
    items = [(_rand_ids(rng, 5), _option_set(rng, 6))]
    (res,) = _check(pc, items, 6, "none", 3)
    assert all(res.exact)


def test_bad_arguments_are_refused(model, prompt):
    pc = PromptCache(model, prompt)
    with pytest.raises(ValueError, match="k must"):
        best_options(pc, [([4], [[5]])], k=0)
    with pytest.raises(ValueError, match="normalize"):
        best_options(pc, [([4], [[5]])], normalize="chars")
    with pytest.raises(ValueError, match="empty query"):
        best_options(pc, [([], [[5]])])


def test_best_options_on_sliding_window_layers(tok):
    """Rounds append nodes past the 16-token window of a tiny Gemma 3: later nodes must stop seeing the
    query's early tokens exactly as a from-scratch pass would (score_all is checked against one)."""
    torch.manual_seed(0)
    gemma = tiny_gemma3(len(tok), sliding_window=16).eval()
    rng = random.Random(5)
    pc = PromptCache(gemma, _rand_ids(rng, 60))
    long_opts = [_rand_ids(rng, 20) for _ in range(3)]
    items = [
        (_rand_ids(rng, 12), long_opts + [o[:10] + [7] for o in long_opts] + [[9]]),
        (_rand_ids(rng, 3), _option_set(rng, 12)),
    ]
    for normalize in ("none", "tokens"):
        _check(pc, items, 2, normalize, 3)


def test_a_small_trie_goes_into_the_query_pass(model, prompt):
    """A trie that fits one round is fed with its query (one pass, every option exact), as score_all does;
    a larger one is searched in rounds."""
    rng = random.Random(11)
    pc = PromptCache(model, prompt)
    items = [(_rand_ids(rng, 5), [[7, 8], [7, 9, 10], [11, 12]])]
    (one,) = _check(pc, items, 1, "none", 64)
    assert one.rounds == 1 and all(one.exact)
    (more,) = _check(pc, items, 1, "none", 1)
    assert more.rounds > 1


def test_blocks_of_queries_change_nothing_and_the_cache_is_cropped_between_them(model, prompt):
    """Searches run in blocks, the cache cropped back to the prompt after each: any block size gives the
    same scores, no pass attends to an earlier block's tokens, and progress counts every query once."""
    rng = random.Random(13)
    pc = PromptCache(model, prompt)
    items = [(_rand_ids(rng, rng.randint(1, 9)), _option_set(rng, rng.randint(2, 30))) for _ in range(7)]
    seen: list[int] = []  # tokens cached after the prompt when each pass starts
    forward = pc.masked_forward

    def spy(*args, **kwargs):
        seen.append(pc.length - pc.base_len)
        return forward(*args, **kwargs)

    pc.masked_forward = spy
    whole = best_options(pc, items, k=2, round_tokens=2, block=len(items))
    most_whole = max(seen)
    for block in (1, 3):
        seen.clear()
        done: list[int] = []
        got = best_options(pc, items, k=2, round_tokens=2, block=block, progress=done.append)
        assert done == [min(block, len(items) - i) for i in range(0, len(items), block)]
        assert pc.length == pc.base_len
        for a, b in zip(got, whole):
            assert a.exact == b.exact and a.fed == b.fed
            np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)
        if block == 1:  # one search's own tokens at most: its query plus every node it fed
            assert max(seen) < max(len(q) + r.fed for (q, _), r in zip(items, whole)) <= most_whole
    with pytest.raises(ValueError, match="block"):
        best_options(pc, items, block=0)


def test_a_long_call_shows_a_queries_bar(model, prompt, capsys):
    """A point's hundreds of queries take minutes after the prefill bar: the cache shows a bar for them
    when progress is on (and none for a short call, as serve makes)."""
    from manyicl.caching import QUERIES_BAR_MIN

    rng = random.Random(17)
    items = [(_rand_ids(rng, 3), [[5], [6, 7]]) for _ in range(QUERIES_BAR_MIN)]
    for method in ("best_options_many", "score_options_many"):
        getattr(PromptCache(model, prompt, progress=True), method)(items)
        err = capsys.readouterr().err  # a fast call may only draw the bar's start (tqdm's refresh interval)
        assert "queries:" in err and f"/{QUERIES_BAR_MIN} [" in err
        getattr(PromptCache(model, prompt, progress=True), method)(items[:3])
        getattr(PromptCache(model, prompt), method)(items)
        assert "queries" not in capsys.readouterr().err
