import numpy as np
import pytest
import torch

from manyicl.caching import OptionTrie, PromptCache, model_key
from manyicl.errors import ManyICLError


def _full_logprobs(model, ids: list[int], start: int) -> list[float]:
    """Log-prob of ids[start:] recomputed from scratch, no cache."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    return [float(logp[t - 1, ids[t]]) for t in range(start, len(ids))]


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


@pytest.fixture()
def prompt(tok):
    return [1] + _ids(tok, "Task: label it.\nText: a red apple\nLabel: red\nText: the sky\nLabel: blue\n" * 3)


def test_cached_logprobs_equal_recomputed(model, tok, prompt):
    pc = PromptCache(model, prompt, prefill_chunk=17)  # chunked prefill must not change anything
    for q, t in [
        ("Text: grass\nLabel:", " green\n"),
        ("Text: blood\nLabel:", " red\n"),
        ("Text: x\nLabel:", " blue\n"),
    ]:
        qi, ti = _ids(tok, q), _ids(tok, t)
        cached = pc.continuation_logprobs(qi, ti)
        full = _full_logprobs(model, prompt + qi + ti, len(prompt) + len(qi))
        assert np.allclose(cached, full, atol=1e-5), (cached, full)
        assert pc.length == len(prompt)  # the query was cropped off again


def test_batched_option_scoring_equals_full_recomputation_per_option(model, tok, prompt):
    pc = PromptCache(model, prompt)
    options = [" red\n", " blue\n", " green\n", " blue green\n", " red wine\n", " r\n"]
    opt_ids = [_ids(tok, o) for o in options]
    q = _ids(tok, "Text: a leaf\nLabel:")
    got = pc.score_options(q, opt_ids)
    for (lp, n), o in zip(got, opt_ids):
        want = sum(_full_logprobs(model, prompt + q + o, len(prompt) + len(q)))
        assert n == len(o)
        assert lp == pytest.approx(want, abs=1e-4)
    assert pc.length == len(prompt)


def test_option_trie_shares_prefixes():
    trie = OptionTrie.build([[5, 6, 7], [5, 6, 8], [5, 9], [4]])
    assert len(trie.tokens) == 6  # 5,6,7,8,9,4
    assert trie.paths[1][:2] == trie.paths[0][:2]
    m = trie.ancestor_mask()
    assert m[trie.paths[0][2], trie.paths[0][0]] and not m[trie.paths[1][2], trie.paths[0][2]]


def test_generate_uses_the_cache_and_stops(model, tok, prompt):
    pc = PromptCache(model, prompt)
    q = _ids(tok, "Text: grass\nLabel:")
    text = pc.generate(q, tok, max_new_tokens=8, stop=["\n"])
    # greedy decoding by full recomputation gives the same text
    ids = prompt + q
    new = []
    for _ in range(8):
        with torch.no_grad():
            nxt = int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax())
        new.append(nxt)
        if "\n" in tok.decode(new):
            break
    assert text == tok.decode(new).split("\n")[0]
    assert pc.length == len(prompt)


def test_shrink_prompt_equals_a_fresh_shorter_prompt(model, tok, prompt):
    long = PromptCache(model, prompt)
    long.shrink_prompt(20)
    short = PromptCache(model, prompt[:20])
    q, t = _ids(tok, "Text: y\nLabel:"), _ids(tok, " red\n")
    assert np.allclose(long.continuation_logprobs(q, t), short.continuation_logprobs(q, t), atol=1e-6)


def test_saved_cache_round_trips_and_refuses_mismatches(tmp_path, model, tok, prompt):
    pc = PromptCache(model, prompt)
    key = model_key(model, "tiny", None, tok)
    path = pc.save(tmp_path / "c.safetensors", key)
    back = PromptCache.load(path, model, key, prompt_ids=prompt)
    q, t = _ids(tok, "Text: z\nLabel:"), _ids(tok, " blue\n")
    assert np.allclose(back.continuation_logprobs(q, t), pc.continuation_logprobs(q, t), atol=1e-6)
    with pytest.raises(ManyICLError, match="different model"):
        PromptCache.load(path, model, dict(key, model="other"))
    with pytest.raises(ManyICLError, match="prompt_sha256"):
        PromptCache.load(path, model, key, prompt_ids=prompt[:-1])
    with pytest.raises(ManyICLError, match="not a manyicl prompt cache"):
        from safetensors.torch import save_file

        save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
        PromptCache.load(tmp_path / "other.safetensors", model, key)


def test_many_queries_in_one_pass_equal_one_at_a_time(model, tok, prompt):
    pc = PromptCache(model, prompt)
    qs = [_ids(tok, f"Text: {w}\nLabel:") for w in ("a leaf", "the sea at night", "x")]
    opts = [
        [_ids(tok, o) for o in (" red\n", " blue\n", " green\n")],
        [_ids(tok, " blue\n"), _ids(tok, " b\n")],
        [_ids(tok, " red\n")],
    ]
    many = pc.score_options_many(list(zip(qs, opts)))
    for q, o, got in zip(qs, opts, many):
        one = pc.score_options(q, o)
        assert np.allclose([x for x, _ in got], [x for x, _ in one], atol=1e-4)
    # a small token budget splits the queries over several passes with the same result
    split = pc.score_options_many(list(zip(qs, opts)), token_budget=20)
    assert np.allclose([x for r in split for x, _ in r], [x for r in many for x, _ in r], atol=1e-4)
    gens = pc.generate_many(qs, tok, max_new_tokens=6, stop=["\n"])
    assert gens == [pc.generate(q, tok, 6, ["\n"]) for q in qs]
    assert pc.length == len(prompt)


def test_long_prefill_shows_a_token_progress_bar_and_changes_nothing(model, tok, prompt, capsys):
    shown = PromptCache(model, prompt, prefill_chunk=16, progress=True)  # > 2 chunks: a bar
    assert "prefill" in capsys.readouterr().err
    quiet = PromptCache(model, prompt, prefill_chunk=16)
    assert "prefill" not in capsys.readouterr().err
    q, opts = _ids(tok, "Text: grass\nLabel:"), [_ids(tok, " green"), _ids(tok, " red")]
    assert shown.score_options(q, opts) == quiet.score_options(q, opts)
