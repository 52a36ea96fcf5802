"""Settings of ``manyicl serve``: the server (:class:`ServeConfig`) and each task's prompt (:class:`TaskSettings`).

Both are plain dataclasses with a docstring per field; the CLI flags and the API's JSON schema are built
from them, so the documentation lives in one place. Nothing here imports the web stack: ``manyicl --help``
stays fast.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

from ..errors import Collector, ConfigError

API_KEY_ENV = "MANYICL_API_KEY"
"""Environment variable read for the API key when ``--api-key`` is not given."""


@dataclass
class TaskSettings:
    """How a registered task's many-shot prompt is built and scored (the same meaning as in ``manyicl eval``)."""

    max_length: int = 2048
    """Context window of the task: prompt + query + answer must fit (eval's ``max_length``)."""
    shots: int | Literal["max"] = "max"
    """Demonstrations in the prompt: ``max`` (the most that fit) or a fixed count that must fit."""
    seed: int = 0
    """Demonstration sampling seed: the balanced draw and its order (eval's ``seeds`` entry)."""
    demo_split: str = "train"
    """Split the demonstrations are drawn from."""
    eval_split: str = "test"
    """With ``dedup``, inputs of this split (when the task has it) are dropped from the demo pool, as eval does."""
    dedup: bool = True
    """Drop demo-split inputs that also occur in ``eval_split`` (normalised text) before drawing demos."""
    normalize: Literal["none", "tokens"] = "none"
    """Option scoring: rank options by total log-likelihood, or by mean log-likelihood per token."""
    reserve_tokens: int = 0
    """Tokens kept free after the prompt for a query and its answer; 0: the longest demonstration query
    plus the longest answer option (generation: plus ``max_new_tokens``), at most half of ``max_length``."""
    max_new_tokens: int = 0
    """Generation tasks: greedy decoding limit; 0 picks it from the longest demonstration output (x1.5 + 8,
    at most 512), as eval does."""
    add_bos: bool = True
    """Start the prompt with the tokenizer's BOS token when it has one (as in training and eval)."""
    on_overlong: Literal["skip", "truncate_input", "error"] = "truncate_input"
    """A demonstration longer than half the window: skip it, cut its input, or refuse the task."""

    def validate(self, where: str, c: Collector) -> None:
        if not isinstance(self.max_length, int) or self.max_length < 16:
            c.add(f"{where}.max_length", f"must be an integer >= 16, got {self.max_length!r}")
        if self.shots != "max" and (
            not isinstance(self.shots, int) or isinstance(self.shots, bool) or self.shots < 0
        ):
            c.add(f"{where}.shots", f"must be 'max' or an integer >= 0, got {self.shots!r}")
        for name in ("reserve_tokens", "max_new_tokens"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                c.add(f"{where}.{name}", f"must be an integer >= 0 (0 = automatic), got {v!r}")
        if isinstance(self.reserve_tokens, int) and isinstance(self.max_length, int):
            if self.reserve_tokens >= self.max_length:
                c.add(f"{where}.reserve_tokens", f"must be below max_length {self.max_length}")
        if self.normalize not in ("none", "tokens"):
            c.add(f"{where}.normalize", f"must be 'none' or 'tokens', got {self.normalize!r}")
        if self.on_overlong not in ("skip", "truncate_input", "error"):
            c.add(f"{where}.on_overlong", f"must be skip, truncate_input or error, got {self.on_overlong!r}")
        for name in ("demo_split", "eval_split"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v.strip():
                c.add(f"{where}.{name}", f"must be a split name such as 'train', got {v!r}")


@dataclass
class ServeConfig:
    """``manyicl serve``: one model (and adapter) answering many tasks from their cached many-shot prompts."""

    model: str = "smollm2-135m-instruct"
    """Base model: ``smollm2-135m-instruct`` (default), ``gemma3-270m`` (opt-in: ``setup.sh --gemma``), a local
    Hugging Face folder, a .gguf file, or ``tiny-random-llama`` / ``tiny-random-gemma3`` (tests). Never downloaded; model code is never run (no remote code)."""
    adapter: str | None = None
    """A PEFT adapter folder (safetensors) on top of the base model, e.g. ``runs/synthetic/adapter``."""
    tasks: list[str] = field(default_factory=list)
    """Task folders (or folders of them) registered at start; they are also allowed roots."""
    allowed_roots: list[str] = field(default_factory=list)
    """Folders under which ``POST /v1/tasks`` may register a task folder by path (links are resolved first)."""
    host: str = "127.0.0.1"
    """Interface to bind; the default answers this machine only. Binding elsewhere without an API key warns."""
    port: int = 8000
    """TCP port."""
    state_dir: str = ""
    """Where the task registry, inline tasks and prompt caches live (default ``$MANYICL_HOME/serve``). One
    server per folder: a second one on the same folder is refused."""
    api_key: str | None = None
    """Required in ``Authorization: Bearer KEY`` or ``X-API-Key`` on every endpoint but ``/healthz`` and the
    OpenAPI pages; default ``$MANYICL_API_KEY``; unset: no key needed."""
    device: str = "auto"
    """``auto`` (the GPU when there is one), ``cpu``, ``cuda``, ``cuda:1``..."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights dtype while scoring. ``auto``: float32 on CPU (what ``manyicl eval`` scores in, so served and
    offline scores agree), the model's own dtype on a GPU."""
    defaults: TaskSettings = field(default_factory=TaskSettings)
    """Prompt settings of a task whose registration does not set them."""
    max_prompt_tokens: int = 8192
    """The largest ``max_length`` a task may ask for (also capped by the model's position limit)."""
    cache_ram_mb: float = 2048.0
    """Prompt caches kept in memory (least recently used ones leave first; they stay on disk)."""
    batch_wait_ms: float = 5.0
    """How long the worker waits after a request's arrival for more requests of the same task to score in
    the same forward pass."""
    max_batch_inputs: int = 64
    """Most inputs scored in one batch (a batch stops waiting once it has this many)."""
    batch_tokens: int = 0
    """Query and option tokens per forward pass; 0: 1024 on CPU, 16384 on a GPU (eval's ``batch_tokens``)."""
    max_queue: int = 256
    """Predict requests waiting for the worker; one more is answered 429 (retry later)."""
    request_timeout_s: float = 30.0
    """A predict request not answered in this time gets 504 (a request may ask for less with ``timeout_s``)."""
    register_timeout_s: float = 900.0
    """Time a registration waits for its prompt to be built (the build goes on after a 504)."""
    max_inputs_per_request: int = 64
    """A predict request with more inputs is refused with 413."""
    max_request_bytes: int = 1 << 20
    """Largest request body except registrations (413 above it)."""
    max_register_bytes: int = 64 << 20
    """Largest registration body (inline examples), 413 above it."""
    max_tasks: int = 1000
    """Most registered tasks."""
    max_examples: int = 200_000
    """Most examples of an inline task."""
    max_connections: int = 1024
    """Concurrent connections uvicorn accepts before answering 503."""
    threads: int = 0
    """Torch intra-op threads for the model (0: torch's default, one per core). With several server
    processes on one machine give each a share of the cores; on a machine busy with other work 1 thread
    avoids waiting on descheduled threads (measured 2.7x faster wall time on 2 busy cores)."""
    preload: bool = False
    """Load (or build) every registered task's prompt cache at start instead of on first use."""

    def resolved_state_dir(self) -> Path:
        if self.state_dir:
            return Path(os.path.expanduser(self.state_dir))
        from ..modeling import manyicl_home

        return manyicl_home() / "serve"

    def validate(self) -> None:
        c = Collector()
        self.defaults.validate("defaults", c)
        positive = (
            "max_prompt_tokens",
            "max_batch_inputs",
            "max_queue",
            "max_inputs_per_request",
            "max_request_bytes",
            "max_register_bytes",
            "max_tasks",
            "max_examples",
            "max_connections",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                c.add(name, f"must be > 0, got {getattr(self, name)}")
        for name in ("request_timeout_s", "register_timeout_s", "cache_ram_mb"):
            if not getattr(self, name) > 0:
                c.add(name, f"must be > 0, got {getattr(self, name)}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            c.add("dtype", f"must be auto, float32, bfloat16 or float16, got {self.dtype!r}")
        if self.batch_wait_ms < 0:
            c.add("batch_wait_ms", f"must be >= 0 (0: no waiting), got {self.batch_wait_ms}")
        if self.threads < 0:
            c.add("threads", f"must be >= 0 (0 = torch's default), got {self.threads}")
        if self.batch_tokens < 0:
            c.add("batch_tokens", f"must be >= 0 (0 = automatic), got {self.batch_tokens}")
        if not 0 <= self.port <= 65535:
            c.add("port", f"must be a TCP port (0-65535), got {self.port}")
        if self.defaults.max_length > self.max_prompt_tokens:
            c.add("defaults.max_length", f"exceeds max_prompt_tokens {self.max_prompt_tokens}")
        if self.api_key is not None and len(self.api_key) < 8:
            c.add(
                "api_key", "is shorter than 8 characters; use a long random key (e.g. openssl rand -hex 24)"
            )
        c.raise_if_any(ConfigError)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``manyicl serve`` flags, one per :class:`ServeConfig` field (help from the field docs)."""
    from ..configio import field_docs

    docs = field_docs(ServeConfig)
    tdocs = field_docs(TaskSettings)
    base = ServeConfig()
    for f in fields(ServeConfig):
        if f.name == "defaults":
            continue
        default = getattr(base, f.name)
        doc = docs.get(f.name, "").replace("%", "%%")
        if f.name in ("tasks", "allowed_roots"):
            flag = "--tasks" if f.name == "tasks" else "--allow-root"
            kw = {"nargs": "+", "action": "extend"} if f.name == "tasks" else {"action": "append"}
            p.add_argument(flag, dest=f.name, metavar="DIR", default=[], help=doc, **kw)
        elif isinstance(default, bool):
            p.add_argument(_flag(f.name), action="store_true", help=doc)
        else:
            typ = float if isinstance(default, float) else int if isinstance(default, int) else str
            p.add_argument(_flag(f.name), type=typ, default=default, help=doc)
    for name in ("max_length", "shots", "seed", "normalize"):
        doc = "default for tasks: " + tdocs.get(name, "").replace("%", "%%")
        typ = int if name in ("max_length", "seed") else str
        p.add_argument(_flag(name), dest=f"task_{name}", type=typ, default=None, help=doc)


def config_from_args(a: argparse.Namespace) -> ServeConfig:
    """A validated :class:`ServeConfig` from parsed ``manyicl serve`` flags (and ``$MANYICL_API_KEY``)."""
    values = {f.name: getattr(a, f.name) for f in fields(ServeConfig) if f.name != "defaults"}
    if not values.get("api_key"):
        values["api_key"] = os.environ.get(API_KEY_ENV) or None
    defaults = TaskSettings()
    for name in ("max_length", "shots", "seed", "normalize"):
        v = getattr(a, f"task_{name}", None)
        if v is not None:
            if name == "shots" and v != "max":
                try:
                    v = int(v)
                except ValueError:
                    raise ConfigError.single("--shots", f"must be 'max' or an integer, got {v!r}") from None
            setattr(defaults, name, v)
    cfg = ServeConfig(**values, defaults=defaults)
    cfg.validate()
    return cfg
