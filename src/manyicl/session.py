"""A model session: one base model loaded once, adapters attached for a block and always removed.

Every workflow (evaluate, perplexity, experiment, icl-preserve, quickstart) scores or trains several
adapters on the same base weights. Attaching a PEFT adapter injects LoRA layers into the base model
in place; ``unload()`` takes them out again and gives back the same, untouched base object. Doing
that by hand in each workflow left the adapter attached whenever a block raised. Here it is one
context manager::

    session = ModelSession.load(cfg.model)          # or ModelSession(model, tokenizer, name)
    with session.adapter(path_or_None) as model:    # the base plus the adapter (or the base alone)
        ...
    # the adapter is gone again, on a normal exit and on an exception alike

``session.attached(wrap)`` does the same for a model that ``wrap(base)`` makes (a new trainable LoRA,
``train.prepare_model``). The session also owns the model's identity (``identity()``: the base's
name, the adapter attached, a short fingerprint of the weights) for results and reports to record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path


class ModelSession:
    """The base model (and its tokenizer) of one workflow run, with at most one adapter at a time."""

    def __init__(self, model, tokenizer, name_or_path: str):
        self.model = model  # always the bare base model outside an adapter block
        self.tokenizer = tokenizer
        self.name_or_path = str(name_or_path)
        self.adapter_path: str | None = None  # the adapter attached now (inside ``adapter()``)
        self._active = None  # the wrapped model inside a block

    @classmethod
    def load(cls, model_cfg, tokenizer=None) -> ModelSession:
        """Load the base model of ``model_cfg`` once (its ``adapter`` is not attached: use ``adapter()``)."""
        from .modeling import load_model

        model, tokenizer = load_model(replace(model_cfg, adapter=None), tokenizer=tokenizer)
        return cls(model, tokenizer, model_cfg.name_or_path)

    @property
    def current(self):
        """The model as it is now: the adapted one inside a block, the base outside."""
        return self._active if self._active is not None else self.model

    @contextmanager
    def adapter(self, path: str | Path | None) -> Iterator[object]:
        """The base model with the PEFT adapter at ``path`` attached (in eval mode), or the base model
        itself when ``path`` is None/empty; the adapter is removed on exit, also on an exception."""
        if not path:
            self.model.eval()
            yield self.model
            return
        from .modeling import load_adapter

        with self.attached(lambda base: load_adapter(base, path)) as model:
            self.adapter_path = str(path)
            model.eval()
            yield model

    @contextmanager
    def attached(self, wrap: Callable[[object], object]) -> Iterator[object]:
        """``wrap(base)`` (a PEFT model around the base, e.g. a fresh trainable LoRA) for the block;
        on exit its LoRA layers are unloaded and ``self.model`` is the bare base again."""
        if self._active is not None:
            raise RuntimeError("an adapter is already attached to this session's model")
        wrapped = wrap(self.model)
        if wrapped is self.model or not hasattr(wrapped, "unload"):
            raise TypeError(
                "session.attached needs a PEFT model around the base (one with unload()); "
                "training all weights changes the base itself and cannot be undone"
            )
        self._active = wrapped
        try:
            yield wrapped
        finally:
            self._active = None
            self.adapter_path = None
            self.model = wrapped.unload()  # the LoRA layers go; the base weights were never touched

    def identity(self) -> dict:
        """What a result should record about the model it came from (the current one)."""
        from .caching import weights_fingerprint

        model = self.current
        return {
            "name_or_path": self.name_or_path,
            "adapter": self.adapter_path,
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
            "weights_sha256": weights_fingerprint(model),
        }
