"""Prompt KV caches: process a many-shot prompt once, reuse it for every query.

A query is appended to the prompt's cache, scored or decoded, and cropped off again, so the prompt
is never recomputed per query. Option scoring feeds the query and *all* answer options in one
forward pass: the options are laid out as a token trie (shared prefixes computed once) under a 4-D
attention mask in which each trie node sees the prompt, the query and its own ancestors only. That
replaces one full prompt+query+option pass per option (what lm-evaluation-harness does) with one
pass over (query + trie) tokens.

Sliding-window layers (Gemma 3: a window of 512 tokens on 5 of every 6 layers) get their own cache
layer (:class:`WindowLayer`) and their own mask: a token at position p sees keys at positions
p - W + 1 .. p only, with positions taken from the token's place in the sequence it would have when
recomputed from scratch (a trie node at depth d after a query sits at prompt + query + d). A window
layer keeps the last W - 1 prompt tokens plus everything appended after the prompt, so queries crop
off exactly; the prompt tokens before that are dropped (that is the memory saving). A shorter prefix
of the prompt (``shrink_prompt``) then needs state that was dropped: it is restored exactly from a
snapshot taken during prefill (``keep_prefixes``), from the whole history
(``keep_sliding_history=True``), or by prefilling the prefix again; a crop that cannot be exact raises.
docs/long_context.md has the details and the measured costs.

Caches can be saved as safetensors with a key (model, adapter, tokenizer, prompt hash, dtype,
shapes); loading refuses a cache whose key does not match.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path

import torch

from .errors import ManyICLError
from .fileio import atomic_save
from .kvwindow import (  # noqa: F401 - InexactCropError, attention_windows: public here too
    InexactCropError,
    attention_windows,
    cache_from_tensors,
    is_prompt_kv,
    is_window,
    kernel_mask,
    new_cache,
    window_masks,
)
from .option_search import OptionScores, OptionTrie, best_options, chunks, score_all  # noqa: F401

log = logging.getLogger(__name__)
QUERIES_BAR_MIN = 64
"""Calls scoring at least this many queries show a queries bar when ``progress`` is on."""


def __getattr__(name: str):  # WindowLayer, PromptKV: defined when first asked for (they import transformers)
    from . import kvwindow

    return getattr(kvwindow, name)


# --------------------------------------------------------------------------------------------
# The cache
# --------------------------------------------------------------------------------------------


class PromptCache:
    """The KV cache of ``prompt_ids`` under ``model``, extended and cropped per query.

    ``keep_prefixes``: prompt lengths that :meth:`shrink_prompt` will later cut the prompt to (the
    k-shot prefixes of a longer prompt); on a model with sliding-window layers each costs a copy of
    those layers' last W - 1 tokens, taken during prefill, so the shrink is exact and free. Without
    it, a shrink below the prompt's length prefills the prefix again (exact, timed in
    ``reprefill_s``) unless ``keep_sliding_history=True`` keeps every token on the sliding layers
    (any shrink exact, the KV memory of a model without sliding windows). Models without sliding
    windows crop any prefix exactly and ignore both.
    """

    def __init__(
        self,
        model,
        prompt_ids: list[int],
        prefill_chunk: int = 2048,
        cache=None,
        *,
        keep_prefixes: Iterable[int] = (),
        keep_sliding_history: bool = False,
        progress: bool = False,
    ):
        self.model = model
        self.progress = progress  # a tokens bar for prompts of more than two prefill chunks
        self.prompt_ids = list(prompt_ids)
        self.device = next(model.parameters()).device
        self.prefill_chunk = prefill_chunk
        self.windows = attention_windows(getattr(model, "config", None))
        self.sliding = any(w is not None for w in self.windows)
        if self.sliding and len({w for w in self.windows if w is not None}) > 1:
            raise ManyICLError("prompt caching supports one sliding-window size per model")
        self.keep_sliding_history = keep_sliding_history
        self.keep_prefixes = sorted({int(n) for n in keep_prefixes if 0 < int(n) < len(self.prompt_ids)})
        self._snapshots: dict[int, list[tuple[torch.Tensor, torch.Tensor, int]]] = {}
        self._extra_pos: list[int] = []  # positions of the cached tokens after the prompt
        self._prefilling = False
        self.prefill_s = 0.0
        self.reprefill_s = 0.0  # prefixes prefilled again by shrink_prompt
        self.reprefills = 0
        if cache is not None:
            if self.sliding and not is_prompt_kv(cache):
                raise ValueError("a model with sliding-window layers needs a PromptKV cache")
            self.cache = cache
            self.base_len = len(self.prompt_ids)
        else:
            t0 = time.perf_counter()
            self._prefill(self.prompt_ids)
            self.prefill_s = time.perf_counter() - t0
        self.base_len = len(self.prompt_ids)

    @property
    def length(self) -> int:
        return self.cache.get_seq_length()

    @property
    def window(self) -> int | None:
        """The sliding window of the model's sliding layers (None without any)."""
        return next((w for w in self.windows if w is not None), None)

    def _window_layers(self) -> list:
        return [layer for layer in self.cache.layers if is_window(layer)]

    def _prefill(self, ids: list[int]) -> None:
        """A fresh cache holding ``ids``, in chunks (cut at ``keep_prefixes`` too, to snapshot them)."""
        self.cache = new_cache(self.model)
        self._snapshots, self._extra_pos, self.base_len = {}, [], 0
        cuts = set(range(self.prefill_chunk, len(ids), self.prefill_chunk)) | {len(ids)}
        if self.sliding:
            cuts |= {n for n in self.keep_prefixes if n < len(ids)}
        self._prefilling = True
        try:
            self._prefill_chunks(ids, sorted(c for c in cuts if c > 0))
        finally:
            self._prefilling = False

    @torch.inference_mode()
    def _prefill_chunks(self, ids: list[int], cuts: list[int]) -> None:
        from tqdm.auto import tqdm

        show = self.progress and len(ids) > 2 * self.prefill_chunk
        start = 0
        with tqdm(total=len(ids), desc="prefill", unit="tok", leave=False, disable=not show) as bar:
            for end in cuts:
                self._forward(ids[start:end], start, logits_to_keep=1)
                self.base_len = end
                if self.sliding and end in self.keep_prefixes:
                    self._snapshot(end)
                self._trim()
                bar.update(end - start)
                start = end

    def _trim(self) -> None:
        """Drop the prompt tokens no later query can see on the sliding layers."""
        if self.keep_sliding_history:
            return
        for layer in self._window_layers():
            layer.trim(max(0, self.base_len - layer.window + 1))

    def _snapshot(self, n: int) -> None:
        """Copy what the sliding layers need to continue after the first ``n`` prompt tokens."""
        snap = []
        for layer in self._window_layers():
            s = max(0, n - layer.window + 1)
            i = s - layer.start
            snap.append(
                (
                    layer.keys[:, :, i : n - layer.start].clone(),
                    layer.values[:, :, i : n - layer.start].clone(),
                    s,
                )
            )
        self._snapshots[n] = snap

    def _can_continue_after(self, n: int) -> bool:
        """Whether the sliding layers still hold what a token at position ``n`` needs."""
        return all(layer.start <= max(0, n - layer.window + 1) for layer in self._window_layers())

    def _sliding_masks(self, pos: list[int], visible: torch.Tensor | None, past: int):
        return window_masks(
            pos,
            visible,
            past,
            self.base_len,
            self._extra_pos,
            self.windows,
            self._window_layers(),
            self.device,
        )

    def _call(self, ids: list[int], pos: list[int], mask, logits_to_keep):
        mask = kernel_mask(mask, self.model)
        before = [layer.get_seq_length() for layer in self.cache.layers]
        try:
            out = self.model(
                input_ids=torch.tensor([ids], dtype=torch.long, device=self.device),
                position_ids=torch.tensor([pos], dtype=torch.long, device=self.device),
                past_key_values=self.cache,
                attention_mask=mask,
                use_cache=True,
                logits_to_keep=logits_to_keep,
            )
        except BaseException:
            # a pass stopped between layers (Ctrl-C, SIGTERM, out of memory) appended its tokens to the
            # first layers only: a later crop by one count would cut prompt tokens from the others
            self._roll_back(before)
            raise
        if not self._prefilling:
            self._extra_pos += pos
        return out

    def _roll_back(self, lengths: list[int]) -> None:
        """Every layer back to the length it had before an interrupted forward pass (a sliding layer's
        length counts the tokens it dropped, so both kinds compare alike)."""
        for layer, n in zip(self.cache.layers, lengths):
            extra = layer.get_seq_length() - n
            if extra > 0:
                layer.crop(-extra)

    def _forward(self, ids: list[int], start: int, logits_to_keep=0, mask: torch.Tensor | None = None):
        """New tokens at consecutive positions from ``start``, each seeing everything cached before it."""
        past = self.length
        pos = list(range(start, start + len(ids)))
        if self.sliding and mask is None:
            mask = self._sliding_masks(pos, None, past)
        return self._call(ids, pos, mask, logits_to_keep)

    def crop_to(self, n: int) -> None:
        """Drop everything after the first ``n`` cached tokens."""
        extra = self.length - n
        if extra < 0:
            raise ValueError(f"cannot crop a cache of {self.length} tokens to {n}")
        if self.sliding and n < self.base_len and not self._can_continue_after(n):
            raise InexactCropError(
                f"cannot crop this prompt cache to {n} tokens exactly: its sliding-window layers (window "
                f"{self.window}) dropped prompt tokens that position {n} needs. Use shrink_prompt({n}) (restores "
                f"a snapshot or prefills the prefix again), keep_prefixes=[{n}] or keep_sliding_history=True"
            )
        if extra:
            self.cache.crop(-extra)
        self._extra_pos = self._extra_pos[: max(0, n - self.base_len)]

    def shrink_prompt(self, n: int, recompute: bool = True) -> None:
        """Make the first ``n`` prompt tokens the prompt (a shorter k-shot prompt shares the prefix).

        Exact in every case: a crop where the cache still holds what the prefix needs, else the
        snapshot taken for ``n`` (``keep_prefixes``), else (``recompute``) the prefix is prefilled
        again; with ``recompute=False`` an inexact crop raises :class:`InexactCropError`."""
        if n > self.base_len:
            raise ValueError(f"cannot shrink a prompt of {self.base_len} tokens to {n}")
        self.crop_to(self.base_len)
        if n < self.base_len:
            if not self.sliding or self._can_continue_after(n):
                self.crop_to(n)
            elif n in self._snapshots:
                for layer in self.cache.layers:
                    if not is_window(layer):
                        layer.crop(n - self.base_len)
                for layer, (k, v, s) in zip(self._window_layers(), self._snapshots[n]):
                    layer.set(k, v, s)
            elif recompute:
                log.info(
                    "shrinking a %d-token prompt to %d: the sliding-window layers dropped what the prefix needs, "
                    "prefilling it again (keep_prefixes=[%d] would make this free)",
                    self.base_len,
                    n,
                    n,
                )
                t0 = time.perf_counter()
                self.keep_prefixes = [k for k in self.keep_prefixes if k < n]
                self._prefill(self.prompt_ids[:n])
                self.reprefill_s += time.perf_counter() - t0
                self.reprefills += 1
            else:
                self.crop_to(n)  # raises InexactCropError with the remedies
        self.prompt_ids = self.prompt_ids[:n]
        self.base_len = n
        self._extra_pos = []
        self._snapshots = {k: v for k, v in self._snapshots.items() if k < n}
        self.keep_prefixes = [k for k in self.keep_prefixes if k < n]
        self._trim()

    # ---- scoring ----------------------------------------------------------------------------
    #
    # Several queries share one forward pass: their tokens are laid side by side after the prompt,
    # and a 4-D mask lets each token see the prompt plus its own query's earlier tokens only. The
    # prompt's cache is shared, never copied per query. Afterwards everything is cropped off.

    def masked_forward(
        self, ids: list[int], pos: list[int], visible: torch.Tensor, keep: list[int] | None = None
    ):
        """Forward new tokens under a custom mask. All new tokens see the whole prompt; ``visible``
        says which tokens after the prompt (already cached ones, then the new ones) each may see."""
        n = len(ids)
        past = self.length
        if visible.shape != (n, past - self.base_len + n):
            raise ValueError(f"mask shape {tuple(visible.shape)} does not match {n} new tokens after {past}")
        if self.sliding:
            mask = self._sliding_masks(pos, visible, past)
        else:
            full = torch.zeros(n, past + n, dtype=torch.bool)
            full[:, : self.base_len] = True
            full[:, self.base_len :] = visible
            mask = full[None, None].to(self.device)
        keep_t = 0 if keep is None else torch.tensor(keep, dtype=torch.long, device=self.device)
        return self._call(ids, pos, mask, keep_t)

    @torch.inference_mode()
    def score_options_many(
        self, items: list[tuple[list[int], list[list[int]]]], token_budget: int = 4096
    ) -> list[list[tuple[float, int]]]:
        """For each (query, options): (sum of log-probs, token count) of every option after prompt + query.

        Each query's options form a trie (shared prefixes once) whose nodes see the prompt, the
        whole query and their own ancestors. Many queries go into one forward pass."""
        with self._queries_bar(len(items)) as bar:
            return score_all(self, items, token_budget, progress=bar.update)

    def best_options_many(
        self,
        items: list[tuple[list[int], list[list[int]]]],
        k: int = 1,
        normalize: str = "none",
        token_budget: int = 4096,
    ) -> list[OptionScores]:
        """The ``k`` best options of each query exactly, the rest pruned (see :mod:`manyicl.option_search`)."""
        with self._queries_bar(len(items)) as bar:
            return best_options(
                self, items, k=k, normalize=normalize, token_budget=token_budget, progress=bar.update
            )

    def _queries_bar(self, n: int):
        """A queries bar under the prefill bar, for calls of many queries (a 32K point's 332 queries
        took ~5 min of silence after its prefill bar)."""
        from tqdm.auto import tqdm

        show = self.progress and n >= QUERIES_BAR_MIN
        return tqdm(total=n, desc="queries", unit="query", leave=False, disable=not show)

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
        for chunk in chunks(sizes, token_budget):
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
            out = self.masked_forward(ids, pos, visible, keep)
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
                out = self.masked_forward(step_ids, step_pos, mine)
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
        if self.sliding:  # where each sliding layer's kept tokens start (full layers keep all: 0)
            meta["layer_starts"] = [getattr(layer, "start", 0) for layer in self.cache.layers]
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
        cache = cache_from_tensors(model, data, saved.get("layer_starts"), len(ids), path)
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
