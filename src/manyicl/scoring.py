"""The scoring interface: what evaluation asks of a model, whatever runs it.

Three methods, in the spirit of lm-evaluation-harness's ``loglikelihood`` / ``generate_until`` /
``loglikelihood_rolling``, plus the prompt they run after:

* ``score_options``: (sum of log-probs, token count) of every answer option after prompt + query
  (``best_options``: only the k best exactly, the others pruned with a bound; the same argmax);
* ``generate``: greedy decoding after prompt + query until a stop string, EOS or a token limit;
* ``rolling_nll``: the NLL of a token sequence scored from scratch (no prompt: perplexity windows).

``set_prompt`` / ``shrink_prompt`` manage the many-shot prompt the first two run after; a backend may
compute it once and reuse it (:class:`HFScorer`: manyicl's exact KV cache) or hand it to an engine
that caches prefixes itself (:class:`VLLMScorer`). Evaluation and perplexity talk only to a
:class:`Scorer`; which backend scores which answer mode is chosen once, from the eval config
(:class:`ScorerFactory`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from .caching import PromptCache
from .option_search import OptionScores

if TYPE_CHECKING:
    from .config import EvalConfig
    from .vllm_backend import VLLMGenerator

OptionItem = tuple[Sequence[int], Sequence[Sequence[int]]]
"""One query's token ids and its answer options' token ids."""


@runtime_checkable
class Scorer(Protocol):
    """Scores queries after a (cached) prompt and token sequences from scratch."""

    @property
    def prompt_ids(self) -> list[int]:
        """The prompt the queries are scored after."""
        ...

    @property
    def prefill_s(self) -> float:
        """Seconds spent processing the current prompt (0.0 where the engine does it per request)."""
        ...

    def set_prompt(self, prompt_ids: Sequence[int], keep_prefixes: Iterable[int] = ()) -> None:
        """Make ``prompt_ids`` the prompt; ``keep_prefixes``: lengths ``shrink_prompt`` will cut it to."""
        ...

    def shrink_prompt(self, n: int) -> None:
        """Make the first ``n`` prompt tokens the prompt (fewer shots of the same demonstrations)."""
        ...

    def score_options(self, items: Sequence[OptionItem]) -> list[list[tuple[float, int]]]:
        """Per query, per option: (sum of the option's log-probs after prompt + query, its token count)."""
        ...

    def best_options(self, items: Sequence[OptionItem], k: int, normalize: str) -> list[OptionScores]:
        """Per query: the ``k`` best options by ``normalize`` scored exactly, the others at least bounded
        (``OptionScores.exact``); its argmax is ``score_options``'s."""
        ...

    def generate(self, queries: Sequence[Sequence[int]], max_new_tokens: int, stop: list[str]) -> list[str]:
        """Greedy continuation of prompt + each query, cut at the first stop string."""
        ...

    def rolling_nll(self, ids: Sequence[int]) -> tuple[float, int]:
        """Sum of NLL (nats) of ids[1:] each given the tokens before it, and how many were scored."""
        ...


MakeScorer = Callable[[Any, Any, "str | None", str], Scorer]
"""What evaluation asks for a scorer with: (model, tokenizer, adapter, answer mode) -> Scorer."""


# --------------------------------------------------------------------------------------------
# manyicl's own backend: exact cached scoring with transformers
# --------------------------------------------------------------------------------------------


def batch_tokens(setting: int, device) -> int:
    """Tokens per scoring forward pass: ``scoring.batch_tokens``, else 16384 on a GPU and 1024 on CPU."""
    if setting:
        return setting
    return 16384 if str(device).startswith("cuda") else 1024


def _unwrap(model):
    """The underlying *ForCausalLM (through PEFT and DDP wrappers), LoRA layers still active."""
    m = getattr(model, "module", model)
    if hasattr(m, "get_base_model"):
        m = m.get_base_model()
    return m


class HFScorer:
    """A transformers model scoring after a prompt whose KV cache is computed once (:class:`PromptCache`).

    Option scores equal a full recomputation of prompt + query + option (the options of many queries
    share one pass as tries); generation batches many queries after the shared prompt."""

    def __init__(
        self,
        model,
        tokenizer=None,
        *,
        token_budget: int = 4096,
        prefill_chunk: int = 2048,
        nll_chunk: int = 1024,
        progress: bool = False,
    ):
        self.model, self.tokenizer = model, tokenizer
        self.token_budget = token_budget
        self.prefill_chunk, self.nll_chunk, self.progress = prefill_chunk, nll_chunk, progress
        self.cache: PromptCache | None = None

    @classmethod
    def from_cache(cls, cache: PromptCache, tokenizer=None, token_budget: int = 4096) -> HFScorer:
        """A scorer around an existing prompt cache (a loaded or served one)."""
        s = cls(cache.model, tokenizer, token_budget=token_budget, prefill_chunk=cache.prefill_chunk)
        s.cache = cache
        return s

    def _prompt(self) -> PromptCache:
        if self.cache is None:
            raise RuntimeError("HFScorer: call set_prompt() before scoring queries")
        return self.cache

    @property
    def prompt_ids(self) -> list[int]:
        return self.cache.prompt_ids if self.cache is not None else []

    @property
    def prefill_s(self) -> float:
        return self.cache.prefill_s if self.cache is not None else 0.0

    def set_prompt(self, prompt_ids: Sequence[int], keep_prefixes: Iterable[int] = ()) -> None:
        self.cache = None  # the old cache goes before the new one fills: never two in memory
        self.cache = PromptCache(
            self.model,
            list(prompt_ids),
            prefill_chunk=self.prefill_chunk,
            keep_prefixes=keep_prefixes,
            progress=self.progress,
        )

    def shrink_prompt(self, n: int) -> None:
        self._prompt().shrink_prompt(n)

    def score_options(self, items: Sequence[OptionItem]) -> list[list[tuple[float, int]]]:
        return self._prompt().score_options_many(
            [(list(q), [list(o) for o in opts]) for q, opts in items], token_budget=self.token_budget
        )

    def best_options(self, items: Sequence[OptionItem], k: int, normalize: str) -> list[OptionScores]:
        return self._prompt().best_options_many(
            [(list(q), [list(o) for o in opts]) for q, opts in items],
            k=k,
            normalize=normalize,
            token_budget=self.token_budget,
        )

    def generate(self, queries: Sequence[Sequence[int]], max_new_tokens: int, stop: list[str]) -> list[str]:
        if self.tokenizer is None:
            raise RuntimeError("HFScorer.generate needs the tokenizer (to find stop strings)")
        return self._prompt().generate_many(
            [list(q) for q in queries],
            self.tokenizer,
            max_new_tokens,
            stop,
            # decoding steps feed one token per query: wider batches amortise overhead
            token_budget=max(self.token_budget, 4096),
        )

    def continuation_distributions(self, query_ids: Sequence[int], target_ids: Sequence[int]) -> torch.Tensor:
        """Next-token log-probs [len(target), vocab] after prompt + query, teacher-forced with
        ``target_ids``: what a distillation teacher provides. HF only (not part of :class:`Scorer`):
        vLLM returns the top few log-probs per position, not whole distributions."""
        return self._prompt().continuation_distributions(list(query_ids), list(target_ids))

    @torch.inference_mode()
    def rolling_nll(self, ids: Sequence[int] | torch.Tensor) -> tuple[float, int]:
        """The decoder returns hidden states; the LM head and cross-entropy run over ``nll_chunk``
        positions at a time, so at most nll_chunk x vocab logits exist at once (long windows fit)."""
        lm = _unwrap(self.model)
        device = next(lm.parameters()).device
        ids = torch.as_tensor(ids, dtype=torch.long).to(device)
        decoder, head = lm.get_decoder(), lm.get_output_embeddings()
        hidden = decoder(input_ids=ids[None], use_cache=False).last_hidden_state[0]
        total = 0.0
        n = ids.numel() - 1
        for s in range(0, n, self.nll_chunk):
            e = min(n, s + self.nll_chunk)
            logits = head(hidden[s:e]).float()
            total += float(F.cross_entropy(logits, ids[s + 1 : e + 1], reduction="sum"))
        return total, n


# --------------------------------------------------------------------------------------------
# vLLM
# --------------------------------------------------------------------------------------------


class VLLMScorer:
    """vLLM scoring after a prompt it caches itself (automatic prefix caching); one LoRA adapter or none.

    Option scores and rolling NLL come from vLLM's prompt log-probabilities, which recompute the
    prompt for every request: the factory sends only generation here."""

    def __init__(self, engine: VLLMGenerator, adapter: str | None = None):
        self.engine, self.adapter = engine, adapter
        self._prompt: list[int] = []

    @property
    def prompt_ids(self) -> list[int]:
        return self._prompt

    @property
    def prefill_s(self) -> float:
        return 0.0  # vLLM prefills inside each request (once per prefix, with prefix caching)

    def set_prompt(self, prompt_ids: Sequence[int], keep_prefixes: Iterable[int] = ()) -> None:
        self._prompt = list(prompt_ids)

    def shrink_prompt(self, n: int) -> None:
        if n > len(self._prompt):
            raise ValueError(f"cannot shrink a prompt of {len(self._prompt)} tokens to {n}")
        self._prompt = self._prompt[:n]

    def score_options(self, items: Sequence[OptionItem]) -> list[list[tuple[float, int]]]:
        seqs, spans = [], []
        for q, opts in items:
            for o in opts:
                if not o:
                    raise ValueError("an answer option rendered to zero tokens")
                seqs.append(self._prompt + list(q) + list(o))
                spans.append(len(o))
        lps = iter(self.engine.prompt_logprobs(seqs, self.adapter))
        n = iter(spans)
        out = []
        for _, opts in items:
            res = []
            for _ in opts:
                lp, k = next(lps), next(n)
                res.append((float(sum(lp[-k:])), k))
            out.append(res)
        return out

    def best_options(self, items: Sequence[OptionItem], k: int, normalize: str) -> list[OptionScores]:
        """Every option scored (vLLM recomputes the prompt per option anyway: nothing to prune)."""
        return [
            OptionScores([lp for lp, _ in r], [n for _, n in r], [True] * len(r), rounds=1)
            for r in self.score_options(items)
        ]

    def generate(self, queries: Sequence[Sequence[int]], max_new_tokens: int, stop: list[str]) -> list[str]:
        return self.engine.generate(
            [self._prompt + list(q) for q in queries], max_new_tokens, stop, self.adapter
        )

    def rolling_nll(self, ids: Sequence[int]) -> tuple[float, int]:
        (lp,) = self.engine.prompt_logprobs([list(ids)], self.adapter)
        return -float(sum(lp)), len(lp)


# --------------------------------------------------------------------------------------------
# The choice, made once
# --------------------------------------------------------------------------------------------


class ScorerFactory:
    """Which backend scores which answer mode, decided once from the eval config.

    ``scoring.generation_backend: vllm`` sends generation tasks to vLLM (its engine is started here,
    once, when some task generates); option scoring always stays on manyicl's cached path, which
    computes the prompt once where vLLM's prompt log-probs would recompute it per request."""

    def __init__(self, cfg: EvalConfig, modes: Iterable[str], device, engine: VLLMGenerator | None = None):
        self.token_budget = batch_tokens(cfg.scoring.batch_tokens, device)
        self.prefill_chunk, self.progress = cfg.scoring.prefill_chunk, cfg.progress
        self.vllm = engine
        if engine is None and cfg.scoring.generation_backend == "vllm" and "generate" in set(modes):
            from dataclasses import replace

            from .vllm_backend import VLLMGenerator

            # vLLM holds its own memory (gpu_memory_utilization): the memory guard does not estimate it
            self.vllm = VLLMGenerator(replace(cfg.model, adapter=None), max_model_len=cfg.max_length)

    def __call__(self, model, tokenizer, adapter: str | None, mode: str) -> Scorer:
        """A scorer for ``model`` (``adapter`` already attached to it, for the HF path) in ``mode``."""
        if mode == "generate" and self.vllm is not None:
            return VLLMScorer(self.vllm, adapter)
        if mode not in ("options", "generate"):
            raise ValueError(f"unknown answer mode {mode!r}")
        return HFScorer(
            model,
            tokenizer,
            token_budget=self.token_budget,
            prefill_chunk=self.prefill_chunk,
            progress=self.progress,
        )
