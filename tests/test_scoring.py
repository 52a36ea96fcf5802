"""The scoring interface (manyicl.scoring): each backend against a from-scratch computation, and
evaluation using nothing but the interface.

Everything is float32 on the tiny random models, where cached and recomputed log-probs agree to
~1e-6; a wrong prompt, position or token costs far more than the tolerance.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from manyicl.config import EvalConfig, ModelConfig, load_config
from manyicl.modeling import tiny_gemma3
from manyicl.scoring import HFScorer, Scorer, ScorerFactory, VLLMScorer
from manyicl.tasks import Example, Task, Template

from conftest import toy_task

ATOL = 1e-4


def _rand(n: int, seed: int, vocab: int = 259) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (n,), generator=g).tolist()


PROMPT = _rand(60, 0)
QUERIES = [_rand(7, 1), _rand(3, 2), _rand(12, 3)]
OPTIONS = [  # shared prefixes (a trie), options of different lengths, a one-token option
    [[5, 6, 7], [5, 6, 9], [5, 10], [11]],
    [[20], [21, 22, 23, 24]],
    [[30, 31], [30, 32], [33, 34, 35]],
]


def _logprobs(model, ids: list[int]) -> torch.Tensor:
    """[len(ids) - 1]: log-prob of each token after the first given all tokens before it, recomputed."""
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    return logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]


def _option_scores(model, prompt, items):
    out = []
    for q, opts in items:
        start = len(prompt) + len(q)
        out.append([(float(_logprobs(model, prompt + q + o)[start - 1 :].sum()), len(o)) for o in opts])
    return out


def _close(got, want, atol=ATOL):
    assert [[n for _, n in r] for r in got] == [[n for _, n in r] for r in want]
    diff = np.abs(np.subtract([x for r in got for x, _ in r], [x for r in want for x, _ in r]))
    assert diff.max() < atol, diff.max()


@pytest.fixture(scope="module")
def gemma(tok):
    return tiny_gemma3(len(tok), sliding_window=16).eval()  # prompts here are longer than the window


def test_both_backends_satisfy_the_protocol(model, tok):
    assert isinstance(HFScorer(model, tok), Scorer)
    assert isinstance(VLLMScorer(engine=None), Scorer)


@pytest.mark.parametrize("which", ["llama", "gemma3"])
def test_hf_option_scores_equal_full_recomputation(model, tok, gemma, which):
    m = model if which == "llama" else gemma
    s = HFScorer(m, tok, token_budget=16)  # several passes: the queries do not fit one
    s.set_prompt(PROMPT)
    items = list(zip(QUERIES, OPTIONS))
    got = s.score_options(items)
    _close(got, _option_scores(m, PROMPT, items))
    assert s.prompt_ids == PROMPT and s.prefill_s > 0


def test_hf_generation_equals_greedy_recomputation(model, tok):
    s = HFScorer(model, tok)
    s.set_prompt(PROMPT)
    got = s.generate(QUERIES, 6, ["<never>"])
    want = []
    for q in QUERIES:
        ids = PROMPT + q
        new: list[int] = []
        for _ in range(6):
            with torch.no_grad():
                nxt = int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            new.append(nxt)
        want.append(tok.decode(new))
    assert got == want


def test_hf_teacher_distributions_are_the_recomputed_next_token_log_probs(model, tok):
    """What distill's teacher_items reads (HF only): whole distributions after prompt + query."""
    s = HFScorer(model, tok)
    s.set_prompt(PROMPT)
    q, t = QUERIES[0], [40, 41, 42]
    got = s.continuation_distributions(q, t)
    ids = PROMPT + q + t
    with torch.no_grad():
        want = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    start = len(PROMPT) + len(q)
    assert got.shape == (len(t), want.shape[-1])
    assert torch.allclose(got, want[start - 1 : len(ids) - 1], atol=1e-5)


@pytest.mark.parametrize("adapted", [False, True])
def test_rolling_nll_is_the_hand_computed_cross_entropy(model, tok, adapted):
    from manyicl.config import LoraConfig
    from manyicl.modeling import apply_lora

    m = model
    if adapted:  # through a PEFT wrapper, with its LoRA layers in the computation
        m = apply_lora(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
        with torch.no_grad():
            for n, p in m.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 1.0, generator=torch.Generator().manual_seed(0))
        m.eval()
    ids = _rand(41, 9)
    total, n = HFScorer(m, tok, nll_chunk=7).rolling_nll(ids)  # 40 targets in chunks of 7
    with torch.no_grad():
        logits = m(input_ids=torch.tensor([ids])).logits[0].float()
    want = 0.0
    for t in range(1, len(ids)):  # -log softmax(logits at t-1)[ids[t]], one position at a time
        want += float(torch.logsumexp(logits[t - 1], -1) - logits[t - 1, ids[t]])
    assert n == len(ids) - 1
    assert total == pytest.approx(want, abs=1e-3)
    assert total / n == pytest.approx(float(-_logprobs(m, ids).mean()), rel=1e-5)


@pytest.mark.parametrize("which", ["llama", "gemma3-snapshots", "gemma3-re-prefill"])
def test_shrinking_to_k_shots_equals_a_fresh_k_shot_prompt(model, tok, gemma, which):
    from manyicl.evaluate import build_prompt, prepare_task

    cfg = load_config(EvalConfig, None, ["max_length=400", "max_queries=4", "dev_queries=0"])
    pt = prepare_task(toy_task(40), tok, cfg)
    demos = list(range(6))
    prompts = {k: build_prompt(pt, demos[:k]) for k in (6, 3, 1)}  # k shots: a prefix of k+ shots
    m = model if which == "llama" else gemma
    keep = [len(prompts[3]), len(prompts[1])] if which == "gemma3-snapshots" else []
    items = [(q.ids, q.option_ids) for q in pt.queries]
    shrunk = HFScorer(m, tok)
    shrunk.set_prompt(prompts[6], keep_prefixes=keep)
    for k in (3, 1):
        shrunk.shrink_prompt(len(prompts[k]))
        fresh = HFScorer(m, tok)
        fresh.set_prompt(prompts[k])
        assert shrunk.prompt_ids == prompts[k]
        _close(shrunk.score_options(items), fresh.score_options(items), 1e-5)
        assert shrunk.generate([q.ids for q in pt.queries], 4, ["\n"]) == fresh.generate(
            [q.ids for q in pt.queries], 4, ["\n"]
        )
    if which == "gemma3-re-prefill":
        assert shrunk.cache.reprefills == 2  # the window had dropped what the prefix needs
    with pytest.raises(ValueError):
        shrunk.shrink_prompt(len(prompts[6]))  # a shrink never grows the prompt


# --------------------------------------------------------------------------------------------
# vLLM, with a stand-in engine that computes with the tiny model
# --------------------------------------------------------------------------------------------


@pytest.fixture()
def hf_vllm(monkeypatch, model, tok):
    """A ``vllm`` module whose LLM answers prompt log-probs and greedy generation from the tiny model,
    shaped like vLLM's outputs (prompt_logprobs: None, then {token id: Logprob} with a distractor)."""
    calls: list[dict] = []
    ns = types.SimpleNamespace

    class LLM:
        def __init__(self, **kw):
            pass

        def generate(self, prompts, params, lora_request=None, use_tqdm=True):
            calls.append(params.kw)
            outs = []
            for p in prompts:
                ids = p["prompt_token_ids"]
                if params.kw.get("prompt_logprobs"):
                    lp = _logprobs(model, ids).tolist()
                    plp = [None] + [{t: ns(logprob=v), 0: ns(logprob=-0.01)} for t, v in zip(ids[1:], lp)]
                    outs.append(ns(prompt_logprobs=plp, outputs=[ns(text="")]))
                else:
                    new: list[int] = []
                    for _ in range(params.kw["max_tokens"]):
                        with torch.no_grad():
                            nxt = int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax())
                        if nxt == tok.eos_token_id:
                            break
                        new.append(nxt)
                    outs.append(ns(outputs=[ns(text=tok.decode(new))]))
            return outs

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = LLM, SamplingParams
    req = types.ModuleType("vllm.lora.request")
    req.LoRARequest = lambda name, idx, path: (name, idx, path)
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.lora", types.ModuleType("vllm.lora"))
    monkeypatch.setitem(sys.modules, "vllm.lora.request", req)
    return calls


def test_vllm_scorer_agrees_with_the_hf_scorer(model, tok, hf_vllm):
    from manyicl.vllm_backend import VLLMGenerator

    v = VLLMScorer(VLLMGenerator(ModelConfig(name_or_path="tiny-random-llama"), 512))
    h = HFScorer(model, tok)
    for s in (v, h):
        s.set_prompt(PROMPT)
        s.shrink_prompt(40)  # fewer shots: vLLM gets the shorter prefix
    assert v.prompt_ids == h.prompt_ids == PROMPT[:40] and v.prefill_s == 0.0
    items = list(zip(QUERIES, OPTIONS))
    _close(v.score_options(items), h.score_options(items), 1e-5)
    assert v.generate(QUERIES, 5, ["<never>"]) == h.generate(QUERIES, 5, ["<never>"])
    ids = _rand(30, 4)
    assert v.rolling_nll(ids) == pytest.approx(h.rolling_nll(ids), abs=1e-4)
    assert all(c["temperature"] == 0.0 for c in hf_vllm)


def test_the_factory_chooses_the_backend_once_per_mode(model, tok, hf_vllm):
    cfg = load_config(EvalConfig, None, ["model.name_or_path=tiny-random-llama", "scoring.batch_tokens=77"])
    hf_only = ScorerFactory(cfg, {"options", "generate"}, "cpu")
    assert hf_only.vllm is None
    s = hf_only(model, tok, None, "generate")
    assert isinstance(s, HFScorer) and s.token_budget == 77
    cfg.scoring.generation_backend = "vllm"
    assert ScorerFactory(cfg, {"options"}, "cpu").vllm is None  # no generation task: no engine
    both = ScorerFactory(cfg, {"options", "generate"}, "cpu")
    assert isinstance(both(model, tok, "ad", "generate"), VLLMScorer)
    assert both(model, tok, "ad", "generate").adapter == "ad"
    assert isinstance(both(model, tok, None, "options"), HFScorer)  # options stay on the cached path


# --------------------------------------------------------------------------------------------
# Evaluation talks to nothing but the interface
# --------------------------------------------------------------------------------------------


class FakeScorer:
    """Scores that depend only on what the interface passes: the prompt, the query and the options."""

    def __init__(self, log: list, adapter):
        self.log, self.adapter, self._prompt = log, adapter, []

    @property
    def prompt_ids(self):
        return self._prompt

    @property
    def prefill_s(self):
        return 0.25

    def set_prompt(self, prompt_ids, keep_prefixes=()):
        self._prompt = list(prompt_ids)
        self.log.append(("prompt", len(self._prompt)))

    def shrink_prompt(self, n):
        self._prompt = self._prompt[:n]

    def score_options(self, items):
        self.log.append(("options", len(items)))
        return [
            [(-float((len(self._prompt) + len(q) + i) % len(opts)), len(o)) for i, o in enumerate(opts)]
            for q, opts in items
        ]

    def generate(self, queries, max_new_tokens, stop):
        self.log.append(("generate", len(queries)))
        return [f" {len(self._prompt) % 7} " for _ in queries]

    def rolling_nll(self, ids):
        return float(len(ids)), len(ids) - 1


def test_a_fake_scorer_plugged_into_evaluate_decides_every_prediction(tmp_path, tok, model, monkeypatch):
    import manyicl.caching as caching
    from manyicl.evaluate import build_prompt, evaluate, prepare_task, shot_plan

    def no_cache(*a, **k):
        raise AssertionError("evaluate built a PromptCache behind the scoring interface")

    monkeypatch.setattr(caching.PromptCache, "__init__", no_cache)
    log: list = []
    made: list = []

    def scorers(m, tokenizer, adapter, mode):
        made.append(mode)
        return FakeScorer(log, adapter)

    add = Task(
        "add",
        "math",
        Template(input_prefix="Q: ", output_prefix="A:"),
        {
            "train": [Example(f"{i} plus {i}?", str(2 * i)) for i in range(4, 30)],
            "test": [Example("1+1?", "2")],
        },
    )
    cfg = load_config(
        EvalConfig,
        None,
        [
            f"output_dir={tmp_path}",
            "model.name_or_path=tiny-random-llama",
            "shots=[0,2,max]",
            "seeds=[0]",
            "max_length=400",
            "max_queries=6",
            "dev_queries=0",
            "progress=false",
            "plots=false",
            "save_prompt_caches=true",  # HF-only: skipped for a scorer that is not manyicl's own
        ],
    )
    task = toy_task(60)
    res = evaluate(cfg, model=model, tokenizer=tok, tasks=[task, add], scorers=scorers)
    assert set(made) == {"options", "generate"} and not res.cache_timing
    pt = prepare_task(task, tok, cfg)
    plan, _ = shot_plan(pt, cfg, 0)
    for r in (r for r in res.rows if r["task"] == "toy"):
        prompt = build_prompt(pt, plan[r["shots_requested"]])
        assert r["prompt_tokens"] == len(prompt) and r["prefill_s"] == 0.25
        preds = [
            p for p in res.predictions if p["task"] == "toy" and p["shots_requested"] == r["shots_requested"]
        ]
        for p, q in zip(preds, pt.queries):
            want = FakeScorer([], None)
            want._prompt = prompt
            vals = [v for v, _ in want.score_options([(q.ids, q.option_ids)])[0]]
            assert p["option_scores"] == vals and p["prediction"] == q.options[int(np.argmax(vals))]
        assert r["score"] == np.mean([p["correct"] for p in preds])
    for p in (p for p in res.predictions if p["task"] == "add"):
        assert p["prediction"] == str(
            next(r["prompt_tokens"] for r in res.rows if r["task"] == "add" and r["shots"] == p["shots"]) % 7
        )
    assert ("generate", 1) in log  # the generation task's one query, through the interface too
