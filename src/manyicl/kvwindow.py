"""KV caching on sliding-window attention layers (Gemma 3: 512 tokens on 5 of every 6 layers).

A sliding layer's cache (:class:`WindowLayer`) keeps the prompt's last W - 1 tokens plus everything
appended after the prompt, so queries crop off exactly; :func:`window_masks` gives every layer type
its mask, the window counted from each token's position in the sequence it stands for (a trie node at
depth d after a query: prompt + query + d). What a shorter prefix of the prompt needs was dropped;
``caching.PromptCache`` brings it back exactly (snapshot, full history or prefilling again) and
raises :class:`InexactCropError` rather than ever use the wrong tokens. docs/long_context.md explains.
"""

from __future__ import annotations

import functools

import torch

from .errors import ManyICLError


class InexactCropError(ManyICLError):
    """A sliding-window cache layer no longer holds the tokens a crop or a forward pass would need."""


def attention_windows(config) -> list[int | None]:
    """Per decoder layer: its sliding window (keys a query sees, itself included) or None for full
    attention, read the way transformers' own caches read it."""
    from transformers.cache_utils import get_layer_types_and_kwargs

    if config is None:
        return []
    dec = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    types, kwargs = get_layer_types_and_kwargs(dec)
    out: list[int | None] = []
    for t, kw in zip(types, kwargs):
        if t == "full_attention":
            out.append(None)
        elif t == "sliding_attention":
            out.append(int(kw["sliding_window"]))
        else:
            raise ManyICLError(
                f"prompt caching supports full and sliding-window attention layers; this model has {t!r} layers"
            )
    return out


@functools.cache
def _kv_classes():
    """WindowLayer and PromptKV, defined on first use: transformers is imported only when a cache is built."""
    from transformers import DynamicCache
    from transformers.cache_utils import Cache, DynamicLayer

    class WindowLayer(DynamicLayer):
        """KV cache of one sliding-window layer: the tokens from absolute index ``start`` on (everything
        before was dropped), cropped exactly, and handing attention only the keys from ``view_from`` on."""

        is_sliding = True

        def __init__(self, window: int):
            super().__init__()
            self.window = window
            self.start = 0
            self.view_from = 0

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            self.keys = torch.cat([self.keys, key_states], dim=-2)
            self.values = torch.cat([self.values, value_states], dim=-2)
            i = self.view_from - self.start
            if i < 0:  # PromptCache checks this before every forward; a guard against any other caller
                raise InexactCropError(
                    f"sliding layer needs keys from {self.view_from}, keeps from {self.start}"
                )
            return self.keys[:, :, i:], self.values[:, :, i:]

        def kept(self) -> int:
            return 0 if not self.is_initialized or self.keys is None else self.keys.shape[-2]

        def get_seq_length(self) -> int:
            return self.start + self.kept()

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            return self.get_seq_length() - self.view_from + query_length, self.view_from

        def get_max_length(self) -> int:
            return -1

        def crop(self, tokens_to_remove: int) -> None:
            if tokens_to_remove > 0:
                raise ValueError("crop takes a negative count of tokens to remove")
            n = -tokens_to_remove
            if n == 0 or not self.is_initialized:
                return
            if n > self.kept():
                raise InexactCropError(
                    f"cannot crop {n} tokens from a sliding layer that keeps {self.kept()} (from index {self.start})"
                )
            self.keys = self.keys[..., : self.kept() - n, :]
            self.values = self.values[..., : self.values.shape[-2] - n, :]

        def trim(self, keep_from: int) -> None:
            """Drop the tokens before absolute index ``keep_from``."""
            if keep_from <= self.start or not self.is_initialized:
                return
            i = min(keep_from - self.start, self.kept())
            self.keys = self.keys[:, :, i:].clone()  # a copy, so the dropped tokens' memory is freed
            self.values = self.values[:, :, i:].clone()
            self.start += i

        def set(self, keys: torch.Tensor, values: torch.Tensor, start: int) -> None:
            self.lazy_initialization(keys, values)
            self.keys, self.values, self.start = keys, values, start

    class PromptKV(DynamicCache):
        """A DynamicCache whose sliding-window layers are :class:`WindowLayer` (full layers are plain)."""

        def __init__(self, windows: list[int | None]):
            Cache.__init__(self, layers=[DynamicLayer() if w is None else WindowLayer(w) for w in windows])
            self.windows = list(windows)

    return WindowLayer, PromptKV


def __getattr__(name: str):
    if name == "WindowLayer":
        return _kv_classes()[0]
    if name == "PromptKV":
        return _kv_classes()[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_prompt_kv(cache) -> bool:
    return isinstance(cache, _kv_classes()[1])


def is_window(layer) -> bool:
    return isinstance(layer, _kv_classes()[0])


def new_cache(model):
    windows = attention_windows(getattr(model, "config", None))
    if any(w is not None for w in windows):
        return _kv_classes()[1](windows)
    from transformers import DynamicCache

    return DynamicCache(config=getattr(model, "config", None))


def window_masks(
    pos: list[int],
    visible: torch.Tensor | None,
    past: int,
    base: int,
    extra_pos: list[int],
    windows: list[int | None],
    window_layers: list,
    device,
):
    """Attention masks for new tokens at positions ``pos`` on a model with sliding-window layers.

    Every new token sees the prompt; ``visible`` says which cached tokens after the prompt and
    which new tokens each may see (None: all cached ones, and the new ones causally). On the
    sliding layers a key is visible only within the window of the query's position as well; those
    layers are handed the keys from the first one any new token can see. ``base``: prompt tokens
    cached, ``past``: all tokens cached, ``extra_pos``: positions of those after the prompt."""
    n = len(pos)
    if past - base != len(extra_pos):
        raise RuntimeError(f"cache holds {past - base} tokens after the prompt, tracked {len(extra_pos)}")
    vis = torch.zeros(n, past + n, dtype=torch.bool)
    vis[:, :base] = True
    if visible is None:
        vis[:, base:past] = True
        vis[:, past:] = torch.tril(torch.ones(n, n, dtype=torch.bool))
    else:
        vis[:, base:] = visible
    w = next(x for x in windows if x is not None)
    view_from = min(max(0, min(pos) - w + 1), base)
    for layer in window_layers:
        if layer.start > view_from:
            raise InexactCropError(
                f"this prompt cache's sliding-window layers keep tokens from {layer.start} on; a token at "
                f"position {min(pos)} needs them from {view_from} (window {w}). "
                "Use shrink_prompt (it prefills the prefix again), keep_prefixes or keep_sliding_history=True"
            )
        layer.view_from = view_from
    qpos = torch.tensor(pos, dtype=torch.long)
    kpos = torch.cat([torch.arange(view_from, base), torch.tensor(extra_pos, dtype=torch.long), qpos])
    sliding = vis[:, view_from:] & (qpos[:, None] - kpos[None, :] < w)
    masks = {"sliding_attention": sliding[None, None].to(device)}
    if any(win is None for win in windows):
        masks["full_attention"] = vis[None, None].to(device)
        return masks
    return masks["sliding_attention"]  # all layers slide: one mask, as such models take it


def kernel_mask(mask, model):
    """Boolean masks as the attention kernel takes them: sdpa takes booleans; eager attention adds
    the mask to its scores, so it needs 0 / -inf (a boolean there would add 1 or 0: silently wrong)."""
    cfg = getattr(model, "config", None)
    if mask is None or getattr(cfg, "_attn_implementation", "sdpa") == "sdpa":
        return mask
    if isinstance(mask, dict):
        return {k: kernel_mask(v, model) for k, v in mask.items()}
    if mask.dtype != torch.bool:
        return mask
    dtype = next(model.parameters()).dtype
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(
        ~mask, torch.finfo(dtype).min
    )


def cache_from_tensors(model, data: list, starts: list[int] | None, n_tok: int, path):
    """The cache of a saved ``n_tok``-token prompt (``data``: per layer (keys, values), ``starts``: where
    each sliding layer's kept tokens begin), refused unless every layer holds what the model needs."""
    n_layers = len(data)
    windows = attention_windows(getattr(model, "config", None))
    starts = starts or [0] * n_layers
    for i, (k, _) in enumerate(data):
        w = windows[i] if i < len(windows) else None
        st = starts[i] if i < len(starts) else 0
        if st + k.shape[-2] != n_tok or (w is None and st) or (w is not None and st > max(0, n_tok - w + 1)):
            raise ManyICLError(
                f"refusing prompt cache {path}: layer {i} holds tokens {st}..{st + k.shape[-2]} of a "
                f"{n_tok}-token prompt, not what this model's {'full' if w is None else f'{w}-token sliding'} "
                "attention needs (saved with another cache layout?); delete it or recompute the prompt"
            )
    if any(w is not None for w in windows):
        cache = _kv_classes()[1](windows)
        for layer, (k, v), st in zip(cache.layers, data, starts):
            if is_window(layer):
                layer.set(k, v, st)
            else:
                layer.update(k, v)
    else:
        from transformers import DynamicCache

        cache = DynamicCache(ddp_cache_data=data, config=getattr(model, "config", None))
    return cache
