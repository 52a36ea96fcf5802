"""``manyicl serve``: one fine-tuned model answering many tasks from their cached many-shot prompts.

A task is registered once (a task folder or inline examples); its max-shot prompt is built as
``manyicl eval`` builds it, processed once, and its KV cache kept on disk and in memory. Predict requests
append their inputs to that cache and are batched per task by a single worker thread that owns the
model. See ``docs/serve.md`` for the endpoints, and:

* :mod:`.config` -- :class:`ServeConfig` and per-task :class:`TaskSettings`
* :mod:`.prompts` -- the prompt (eval's demo selection) and the scoring of inputs
* :mod:`.store` -- prompt caches on disk (safetensors + key) and the in-memory LRU
* :mod:`.registry` -- ``registry.json``, inline task folders, allowed roots, start-up cleanup
* :mod:`.batcher` -- the bounded queue and the worker thread
* :mod:`.service` -- the operations behind the endpoints; :mod:`.app` -- HTTP (FastAPI + uvicorn)
"""

from __future__ import annotations

from .config import ServeConfig, TaskSettings


def serve(cfg: ServeConfig) -> int:
    """Serve until interrupted (imports the web stack only when called)."""
    from .app import run

    return run(cfg)


__all__ = ["ServeConfig", "TaskSettings", "serve"]
