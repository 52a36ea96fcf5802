"""Prompt KV caches: process a many-shot prompt once, reuse it for every query.

A query is appended to the prompt's cache, scored or decoded, and cropped off again, so the prompt
is never recomputed per query. Option scoring feeds the query and *all* answer options in one
forward pass: the options are laid out as a token trie (shared prefixes computed once) under a 4-D
attention mask in which each trie node sees the prompt, the query and its own ancestors only. That
replaces one full prompt+query+option pass per option (what lm-evaluation-harness does) with one
pass over (query + trie) tokens.

Caches can be saved as safetensors with a key (model, adapter, tokenizer, prompt hash, dtype,
shapes); loading refuses a cache whose key does not match.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import ManyICLError
from .fileio import atomic_save


def _new_cache(model):
    from transformers import DynamicCache

    return DynamicCache(config=getattr(model, "config", None))


# --------------------------------------------------------------------------------------------
# Option trie
# --------------------------------------------------------------------------------------------


@dataclass
class OptionTrie:
    """Answer options as a token trie, flattened in insertion order (parents before children)."""

    tokens: list[int]
    parent: list[int]  # index of the parent node, -1 for children of the root (the query's last token)
    depth: list[int]  # 0 for children of the root
    paths: list[list[int]]  # per option: its node indices

    @classmethod
    def build(cls, options: list[list[int]]) -> OptionTrie:
        tokens: list[int] = []
        parent: list[int] = []
        depth: list[int] = []
        children: dict[tuple[int, int], int] = {}
        paths = []
        for opt in options:
            if not opt:
                raise ValueError("an answer option rendered to zero tokens")
            node, path = -1, []
            for d, tid in enumerate(opt):
                key = (node, tid)
                if key not in children:
                    children[key] = len(tokens)
                    tokens.append(tid)
                    parent.append(node)
                    depth.append(d)
                node = children[key]
                path.append(node)
            paths.append(path)
        return cls(tokens, parent, depth, paths)

    def ancestor_mask(self) -> torch.Tensor:
        """[n, n] bool: node i may attend to node j (j is i or an ancestor of i)."""
        n = len(self.tokens)
        m = torch.zeros(n, n, dtype=torch.bool)
        for i in range(n):
            j = i
            while j != -1:
                m[i, j] = True
                j = self.parent[j]
        return m


# --------------------------------------------------------------------------------------------
# The cache
# --------------------------------------------------------------------------------------------


class PromptCache:
    """The KV cache of ``prompt_ids`` under ``model``, extended and cropped per query."""

    def __init__(self, model, prompt_ids: list[int], prefill_chunk: int = 2048, cache=None):
        self.model = model
        self.prompt_ids = list(prompt_ids)
        self.device = next(model.parameters()).device
        self.prefill_s = 0.0
        if cache is not None:
            self.cache = cache
        else:
            self.cache = _new_cache(model)
            t0 = time.perf_counter()
            with torch.inference_mode():
                for start in range(0, len(self.prompt_ids), prefill_chunk):
                    chunk = self.prompt_ids[start : start + prefill_chunk]
                    self._forward(chunk, start, logits_to_keep=1)
            self.prefill_s = time.perf_counter() - t0
        self.base_len = len(self.prompt_ids)

    @property
    def length(self) -> int:
        return self.cache.get_seq_length()

    def _forward(self, ids: list[int], start: int, logits_to_keep=0, mask: torch.Tensor | None = None):
        x = torch.tensor([ids], dtype=torch.long, device=self.device)
        pos = torch.arange(start, start + len(ids), device=self.device)[None]
        return self.model(
            input_ids=x,
            position_ids=pos,
            past_key_values=self.cache,
            attention_mask=mask,
            use_cache=True,
            logits_to_keep=logits_to_keep,
        )

    def crop_to(self, n: int) -> None:
        """Drop everything after the first ``n`` cached tokens."""
        extra = self.length - n
        if extra < 0:
            raise ValueError(f"cannot crop a cache of {self.length} tokens to {n}")
        if extra:
            self.cache.crop(-extra)

    def shrink_prompt(self, n: int) -> None:
        """Make the first ``n`` prompt tokens the prompt (a shorter k-shot prompt shares the prefix)."""
        self.crop_to(n)
        self.prompt_ids = self.prompt_ids[:n]
        self.base_len = n

    # ---- scoring ----------------------------------------------------------------------------

    @torch.inference_mode()
    def score_options(self, query_ids: list[int], options: list[list[int]]) -> list[tuple[float, int]]:
        """(sum of log-probs, token count) of each option after prompt + query, in one forward pass."""
        if not query_ids:
            raise ValueError("empty query")
        self.crop_to(self.base_len)
        trie = OptionTrie.build(options)
        nq, nt = len(query_ids), len(trie.tokens)
        past = self.base_len
        # attention: every new token sees the whole prompt; query tokens are causal among themselves;
        # trie nodes see the whole query and their own ancestors.
        q_len = nq + nt
        mask = torch.zeros(q_len, past + q_len, dtype=torch.bool)
        mask[:, :past] = True
        mask[:nq, past : past + nq] = torch.tril(torch.ones(nq, nq, dtype=torch.bool))
        mask[nq:, past : past + nq] = True
        mask[nq:, past + nq :] = trie.ancestor_mask()
        pos = list(range(past, past + nq)) + [past + nq + d for d in trie.depth]
        ids = list(query_ids) + trie.tokens
        # logits needed: the query's last token (predicts each option's first token) and every trie
        # node that has children
        has_child = sorted({p for p in trie.parent if p >= 0})
        keep = [nq - 1] + [nq + i for i in has_child]
        row_of = {-1: 0} | {node: r + 1 for r, node in enumerate(has_child)}
        x = torch.tensor([ids], dtype=torch.long, device=self.device)
        out = self.model(
            input_ids=x,
            position_ids=torch.tensor([pos], device=self.device),
            past_key_values=self.cache,
            attention_mask=mask[None, None].to(self.device),
            use_cache=True,
            logits_to_keep=torch.tensor(keep, device=self.device),
        )
        logp = torch.log_softmax(out.logits[0].float(), dim=-1)
        self.crop_to(self.base_len)
        result = []
        for path in trie.paths:
            total = 0.0
            for node in path:
                total += float(logp[row_of[trie.parent[node]], trie.tokens[node]])
            result.append((total, len(path)))
        return result

    @torch.inference_mode()
    def continuation_logprobs(self, query_ids: list[int], target_ids: list[int]) -> list[float]:
        """Per-token log-probs of ``target_ids`` after prompt + query (teacher forcing)."""
        self.crop_to(self.base_len)
        ids = list(query_ids) + list(target_ids)
        out = self._forward(ids, self.base_len)
        logp = torch.log_softmax(out.logits[0].float(), dim=-1)
        self.crop_to(self.base_len)
        nq = len(query_ids)
        return [float(logp[nq - 1 + i, t]) for i, t in enumerate(target_ids)]

    @torch.inference_mode()
    def generate(self, query_ids: list[int], tokenizer, max_new_tokens: int, stop: list[str]) -> str:
        """Greedy decoding after prompt + query, until a stop string, EOS or ``max_new_tokens``."""
        self.crop_to(self.base_len)
        out = self._forward(list(query_ids), self.base_len, logits_to_keep=1)
        eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        new: list[int] = []
        text = ""
        for _ in range(max_new_tokens):
            nxt = int(out.logits[0, -1].argmax())
            if nxt in eos:
                break
            new.append(nxt)
            text = tokenizer.decode(new)
            if any(s in text for s in stop):
                break
            out = self._forward([nxt], self.length, logits_to_keep=1)
        self.crop_to(self.base_len)
        for s in stop:
            i = text.find(s)
            if i >= 0:
                text = text[:i]
        return text

    # ---- persistence ------------------------------------------------------------------------

    def tensors(self) -> dict[str, torch.Tensor]:
        self.crop_to(self.base_len)
        out = {}
        for i, layer in enumerate(self.cache.layers):
            out[f"layer.{i}.keys"] = layer.keys.detach().cpu().contiguous()
            out[f"layer.{i}.values"] = layer.values.detach().cpu().contiguous()
        return out

    def save(self, path: str | Path, key: dict) -> Path:
        """Write the prompt's cache as safetensors; ``key`` says what it belongs to."""
        from safetensors.torch import save_file

        tensors = self.tensors()
        meta = dict(key)
        meta["prompt_sha256"] = prompt_hash(self.prompt_ids)
        meta["prompt_tokens"] = len(self.prompt_ids)
        meta["dtype"] = str(next(iter(tensors.values())).dtype) if tensors else ""
        meta["shapes"] = {k: list(v.shape) for k, v in tensors.items()}
        metadata = {
            "manyicl_cache_key": json.dumps(meta, sort_keys=True),
            "prompt_ids": json.dumps(self.prompt_ids),
        }
        return atomic_save(path, lambda p: save_file(tensors, str(p), metadata=metadata))

    @classmethod
    def load(cls, path: str | Path, model, key: dict, prompt_ids: list[int] | None = None) -> PromptCache:
        """Load a saved cache; refuse it unless its key matches ``key`` (and ``prompt_ids``)."""
        from safetensors import safe_open

        path = Path(path)
        with safe_open(str(path), framework="pt") as f:
            md = f.metadata() or {}
            if "manyicl_cache_key" not in md:
                raise ManyICLError(f"{path} is not a manyicl prompt cache (no key in its metadata)")
            saved = json.loads(md["manyicl_cache_key"])
            ids = json.loads(md["prompt_ids"])
            mismatched = [k for k, v in key.items() if saved.get(k) != v]
            if prompt_ids is not None and prompt_hash(prompt_ids) != saved.get("prompt_sha256"):
                mismatched.append("prompt_sha256")
            if prompt_hash(ids) != saved.get("prompt_sha256"):
                mismatched.append("prompt_ids (file corrupted)")
            if mismatched:
                detail = ", ".join(
                    f"{k}: cache has {saved.get(k)!r}, expected {key.get(k)!r}" for k in mismatched[:4]
                )
                raise ManyICLError(
                    f"refusing prompt cache {path}: it was made for a different {', '.join(mismatched)} ({detail}); "
                    "delete it or recompute the prompt"
                )
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
        shapes = {k: list(v.shape) for k, v in tensors.items()}
        if shapes != saved.get("shapes"):
            raise ManyICLError(f"refusing prompt cache {path}: tensor shapes differ from its key")
        device = next(model.parameters()).device
        n_layers = len(tensors) // 2
        data = [
            (tensors[f"layer.{i}.keys"].to(device), tensors[f"layer.{i}.values"].to(device))
            for i in range(n_layers)
        ]
        from transformers import DynamicCache

        cache = DynamicCache(ddp_cache_data=data, config=getattr(model, "config", None))
        return cls(model, ids, cache=cache)


def prompt_hash(ids: list[int]) -> str:
    return hashlib.sha256(json.dumps(list(map(int, ids))).encode()).hexdigest()


def file_hash(path: str | Path, limit: int = 1 << 30) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(limit))
    return h.hexdigest()[:16]


def tokenizer_hash(tokenizer) -> str:
    vocab = tokenizer.get_vocab()
    blob = json.dumps(sorted(vocab.items()), ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def model_key(model, model_name: str, adapter: str | None, tokenizer) -> dict:
    """What a saved cache must match: model identity, adapter weights, tokenizer, dtype, layout."""
    cfg = getattr(model, "config", None)
    cfg_json = cfg.to_json_string(use_diff=False) if cfg is not None else ""
    adapter_sig = None
    if adapter:
        f = Path(adapter) / "adapter_model.safetensors"
        adapter_sig = file_hash(f) if f.exists() else str(adapter)
    return {
        "model": model_name,
        "model_config_sha256": hashlib.sha256(cfg_json.encode()).hexdigest()[:16],
        "adapter": adapter_sig,
        "tokenizer": tokenizer_hash(tokenizer),
        "model_dtype": str(next(model.parameters()).dtype),
    }
