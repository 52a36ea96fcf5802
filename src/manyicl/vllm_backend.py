"""Optional vLLM backend for generation-type evaluation (summarisation, math, free-form QA) on GPUs.

vLLM's automatic prefix caching keeps the many-shot prompt's KV blocks across queries, so like our own
path the prompt is computed once per (task, seed, shot count). Evaluation uses it only for generation
(:class:`manyicl.scoring.VLLMScorer`): vLLM recomputes the prompt when asked for prompt
log-probabilities (``prompt_logprobs`` below), so option scoring stays on manyicl's cached path.
Install with ``pip install vllm`` on a CUDA machine; set ``scoring.generation_backend: vllm``.
"""

from __future__ import annotations

from .config import ModelConfig
from .errors import ManyICLError


class VLLMGenerator:
    """Greedy generation through vLLM with prefix caching; LoRA adapters as vLLM LoRA requests."""

    def __init__(
        self,
        model_cfg: ModelConfig,
        max_model_len: int,
        max_lora_rank: int = 64,
        gpu_memory_utilization: float = 0.8,
    ):
        try:
            from vllm import LLM, SamplingParams
            from vllm.lora.request import LoRARequest
        except ImportError:
            raise ManyICLError(
                "scoring.generation_backend=vllm needs vLLM: pip install vllm (CUDA machines only); "
                "or set scoring.generation_backend=manyicl"
            ) from None
        from .modeling import resolve_model_dir

        self._sampling, self._lora_cls = SamplingParams, LoRARequest
        self._lora_ids: dict[str, int] = {}
        self.llm = LLM(
            model=resolve_model_dir(model_cfg),
            dtype=model_cfg.dtype,
            enable_prefix_caching=True,
            max_model_len=max_model_len,
            enable_lora=True,
            max_lora_rank=max_lora_rank,
            trust_remote_code=model_cfg.trust_remote_code,
            gpu_memory_utilization=gpu_memory_utilization,
        )

    def _lora(self, adapter: str | None):
        if not adapter:
            return None
        lid = self._lora_ids.setdefault(adapter, len(self._lora_ids) + 1)
        return self._lora_cls(f"adapter{lid}", lid, adapter)

    def prompt_logprobs(self, prompts: list[list[int]], adapter: str | None = None) -> list[list[float]]:
        """Per prompt, the log-prob of each token after the first given the tokens before it (what
        lm-evaluation-harness's vLLM loglikelihood reads: ``prompt_logprobs=1`` always includes the
        prompt's own token)."""
        params = self._sampling(temperature=0.0, max_tokens=1, prompt_logprobs=1)
        outs = self.llm.generate(
            [{"prompt_token_ids": list(p)} for p in prompts],
            params,
            lora_request=self._lora(adapter),
            use_tqdm=False,
        )
        return [
            [float(o.prompt_logprobs[i][t].logprob) for i, t in enumerate(p) if i > 0]
            for p, o in zip(prompts, outs)
        ]

    def generate(
        self, prompts: list[list[int]], max_new_tokens: int, stop: list[str], adapter: str | None = None
    ) -> list[str]:
        params = self._sampling(temperature=0.0, max_tokens=max_new_tokens, stop=stop)
        lora = self._lora(adapter)
        outs = self.llm.generate(
            [{"prompt_token_ids": list(p)} for p in prompts], params, lora_request=lora, use_tqdm=False
        )
        texts = []
        for o in outs:
            t = o.outputs[0].text
            for s in stop:
                i = t.find(s)
                if i >= 0:
                    t = t[:i]
            texts.append(t)
        return texts
