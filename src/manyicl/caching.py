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
    #
    # Several queries share one forward pass: their tokens are laid side by side after the prompt,
    # and a 4-D mask lets each token see the prompt plus its own query's earlier tokens only. The
    # prompt's cache is shared, never copied per query. Afterwards everything is cropped off.

    def _masked_forward(
        self, ids: list[int], pos: list[int], visible: torch.Tensor, keep: list[int] | None = None
    ):
        """Forward new tokens under a custom mask. All new tokens see the whole prompt; ``visible``
        says which tokens after the prompt (already cached ones, then the new ones) each may see."""
        n = len(ids)
        past = self.length
        if visible.shape != (n, past - self.base_len + n):
            raise ValueError(f"mask shape {tuple(visible.shape)} does not match {n} new tokens after {past}")
        mask = torch.zeros(n, past + n, dtype=torch.bool)
        mask[:, : self.base_len] = True
        mask[:, self.base_len :] = visible
        return self.model(
            input_ids=torch.tensor([ids], dtype=torch.long, device=self.device),
            position_ids=torch.tensor([pos], dtype=torch.long, device=self.device),
            past_key_values=self.cache,
            attention_mask=mask[None, None].to(self.device),
            use_cache=True,
            logits_to_keep=0 if keep is None else torch.tensor(keep, dtype=torch.long, device=self.device),
        )

    @staticmethod
    def _chunks(sizes: list[int], budget: int) -> list[list[int]]:
        out, cur, used = [], [], 0
        for i, n in enumerate(sizes):
            if cur and used + n > budget:
                out.append(cur)
                cur, used = [], 0
            cur.append(i)
            used += n
        if cur:
            out.append(cur)
        return out

    @torch.inference_mode()
    def score_options_many(
        self, items: list[tuple[list[int], list[list[int]]]], token_budget: int = 4096
    ) -> list[list[tuple[float, int]]]:
        """For each (query, options): (sum of log-probs, token count) of every option after prompt + query.

        Each query's options form a trie (shared prefixes once) whose nodes see the prompt, the
        whole query and their own ancestors. Many queries go into one forward pass.
        """
        self.crop_to(self.base_len)
        tries = [OptionTrie.build(opts) for _, opts in items]
        sizes = [len(q) + len(t.tokens) for (q, _), t in zip(items, tries)]
        results: list[list[tuple[float, int]]] = [[] for _ in items]
        past = self.base_len
        for chunk in self._chunks(sizes, token_budget):
            n = sum(sizes[i] for i in chunk)
            visible = torch.zeros(n, n, dtype=torch.bool)
            ids: list[int] = []
            pos: list[int] = []
            keep: list[int] = []
            rows: list[dict[int, int]] = []  # per query: trie node (-1 = query end) -> row in kept logits
            for i in chunk:
                q, trie = items[i][0], tries[i]
                if not q:
                    raise ValueError("empty query")
                o, nq = len(ids), len(q)
                visible[o : o + nq, o : o + nq] = torch.tril(torch.ones(nq, nq, dtype=torch.bool))
                visible[o + nq : o + nq + len(trie.tokens), o : o + nq] = True
                visible[o + nq : o + nq + len(trie.tokens), o + nq : o + nq + len(trie.tokens)] = (
                    trie.ancestor_mask()
                )
                ids += list(q) + trie.tokens
                pos += list(range(past, past + nq)) + [past + nq + d for d in trie.depth]
                row = {-1: len(keep)}
                keep.append(o + nq - 1)
                for node in sorted({p for p in trie.parent if p >= 0}):
                    row[node] = len(keep)
                    keep.append(o + nq + node)
                rows.append(row)
            out = self._masked_forward(ids, pos, visible, keep)
            logp = torch.log_softmax(out.logits[0].float(), dim=-1)
            self.crop_to(self.base_len)
            for i, row in zip(chunk, rows):
                trie = tries[i]
                res = []
                for path in trie.paths:
                    total = sum(float(logp[row[trie.parent[node]], trie.tokens[node]]) for node in path)
                    res.append((total, len(path)))
                results[i] = res
        return results

    def score_options(self, query_ids: list[int], options: list[list[int]]) -> list[tuple[float, int]]:
        """(sum of log-probs, token count) of each option after prompt + query."""
        return self.score_options_many([(query_ids, options)])[0]

    @torch.inference_mode()
    def continuation_distributions(self, query_ids: list[int], target_ids: list[int]) -> torch.Tensor:
        """Next-token log-probabilities [len(target), vocab] at each target position after prompt +
        query, teacher-forced with ``target_ids`` (what a distillation teacher provides)."""
        self.crop_to(self.base_len)
        nq = len(query_ids)
        ids = list(query_ids) + list(target_ids)
        keep = torch.arange(nq - 1, nq - 1 + len(target_ids), device=self.device)
        out = self._forward(ids, self.base_len, logits_to_keep=keep)
        self.crop_to(self.base_len)
        return torch.log_softmax(out.logits[0].float(), dim=-1)

    def continuation_logprobs(self, query_ids: list[int], target_ids: list[int]) -> list[float]:
        """Per-token log-probs of ``target_ids`` after prompt + query (teacher forcing)."""
        logp = self.continuation_distributions(query_ids, target_ids)
        return [float(logp[i, t]) for i, t in enumerate(target_ids)]

    @torch.inference_mode()
    def generate_many(
        self,
        queries: list[list[int]],
        tokenizer,
        max_new_tokens: int,
        stop: list[str],
        token_budget: int = 4096,
    ) -> list[str]:
        """Greedy decoding for many queries at once after the shared prompt.

        All queries are prefilled in one pass; then every step feeds one new token per unfinished
        query, each seeing the prompt, its own query and its own earlier tokens. A query ends at a
        stop string, EOS, or ``max_new_tokens``.
        """
        self.crop_to(self.base_len)
        eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        texts: list[str] = [""] * len(queries)
        sizes = [len(q) + max_new_tokens for q in queries]
        past = self.base_len
        for chunk in self._chunks(sizes, token_budget):
            owner: list[int] = []  # which query each new cached token belongs to
            ids: list[int] = []
            pos: list[int] = []
            keep: list[int] = []
            nxt_pos: dict[int, int] = {}
            for b in chunk:
                q = queries[b]
                owner += [b] * len(q)
                ids += list(q)
                pos += list(range(past, past + len(q)))
                keep.append(len(ids) - 1)
                nxt_pos[b] = past + len(q)
            own = torch.tensor(owner)
            visible = (own[:, None] == own[None, :]) & torch.tril(
                torch.ones(len(ids), len(ids), dtype=torch.bool)
            )
            out = self._masked_forward(ids, pos, visible, keep)
            nxt = dict(zip(chunk, out.logits[0].argmax(-1).tolist()))
            gen: dict[int, list[int]] = {b: [] for b in chunk}
            active = list(chunk)
            for step in range(max_new_tokens):
                still = []
                for b in active:
                    t = nxt[b]
                    if t in eos:
                        continue
                    gen[b].append(t)
                    texts[b] = tokenizer.decode(gen[b])
                    if not any(s in texts[b] for s in stop):
                        still.append(b)
                active = still
                if not active or step == max_new_tokens - 1:
                    break
                feed_owner = torch.tensor(owner + active)
                n_new = len(active)
                mine = feed_owner[None, :] == torch.tensor(active)[:, None]  # [n_new, all new tokens]
                # each fed token sees its own query's cached tokens and itself, not the other fed tokens
                mine[:, len(owner) :] = torch.eye(n_new, dtype=torch.bool)
                step_ids = [gen[b][-1] for b in active]
                step_pos = [nxt_pos[b] for b in active]
                for b in active:
                    nxt_pos[b] += 1
                out = self._masked_forward(step_ids, step_pos, mine)
                owner += active
                nxt = dict(zip(active, out.logits[0].argmax(-1).tolist()))
            self.crop_to(self.base_len)
        for i, t in enumerate(texts):
            for s in stop:
                j = t.find(s)
                if j >= 0:
                    t = t[:j]
            texts[i] = t
        return texts

    def generate(self, query_ids: list[int], tokenizer, max_new_tokens: int, stop: list[str]) -> str:
        """Greedy decoding after prompt + query, until a stop string, EOS or ``max_new_tokens``."""
        return self.generate_many([query_ids], tokenizer, max_new_tokens, stop)[0]

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
            "tensors_sha256": tensors_hash(tensors),
        }
        return atomic_save(path, lambda p: save_file(tensors, str(p), metadata=metadata))

    @classmethod
    def load(cls, path: str | Path, model, key: dict, prompt_ids: list[int] | None = None) -> PromptCache:
        """Load a saved cache; refuse it unless its key matches ``key`` (and ``prompt_ids``)."""
        from safetensors import safe_open

        path = Path(path)
        try:
            saved, ids, tensors, digest = _read_cache_file(path, safe_open)
        except ManyICLError:
            raise
        except Exception as e:  # truncated, empty, random bytes, metadata without its fields, ...
            raise ManyICLError(
                f"prompt cache {path} is unreadable ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else 'damaged'}); "
                "delete it or recompute the prompt"
            ) from None
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
        if digest is not None and digest != tensors_hash(tensors):
            raise ManyICLError(
                f"refusing prompt cache {path}: its tensors do not match their checksum (the file is damaged); "
                "delete it or recompute the prompt"
            )
        n_model_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
        if n_model_layers is not None and len(tensors) != 2 * n_model_layers:
            raise ManyICLError(
                f"refusing prompt cache {path}: it holds {len(tensors) // 2} layers, the model has {n_model_layers}"
            )
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


def _read_cache_file(path: Path, safe_open):
    with safe_open(str(path), framework="pt") as f:
        md = f.metadata() or {}
        if "manyicl_cache_key" not in md:
            raise ManyICLError(f"{path} is not a manyicl prompt cache (no key in its metadata)")
        saved = json.loads(md["manyicl_cache_key"])
        ids = json.loads(md["prompt_ids"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    return saved, ids, tensors, md.get("tensors_sha256")


def tensors_hash(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name and bytes: a flipped byte in a saved cache is caught on load."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].contiguous()
        h.update(k.encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def weights_fingerprint(model, per_tensor: int = 4096) -> str:
    """A hash of the model's weights (each tensor's name, shape and an evenly strided sample of its
    values): two models with the same config but other weights never share a prompt cache. Sampling
    keeps it to milliseconds; any real change of weights (training, another checkpoint) changes it."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in model.named_parameters():
            flat = p.detach().reshape(-1)
            step = max(1, flat.numel() // per_tensor)
            sample = flat[::step][:per_tensor].to("cpu", torch.float32)
            h.update(name.encode())
            h.update(str(tuple(p.shape)).encode())
            h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


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
        "weights_sha256": weights_fingerprint(model),
    }
