"""The server's logic without HTTP: registered tasks, their caches, the worker, and the operations the
endpoints call (register, describe, list, delete, predict). :mod:`manyicl.serve.app` only maps HTTP
onto these methods, so they can be tested and embedded without a web server.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import logging
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path

from ..caching import model_key
from ..errors import ManyICLError
from ..evaluate import batch_tokens
from ..examples import text_problem
from ..fileio import exclusive_lock
from ..tasks import Task, find_task_dirs, load_task_dir
from .batcher import Batcher, Job
from .config import ServeConfig, TaskSettings
from .errors import Conflict, Invalid, NotFound, ServeError, Timeout, TooLarge, Unavailable
from .metrics import ServeMetrics
from .prompts import ServedTask, build_served_task, encode_inputs, pass_chunks, score_encoded
from .registry import Registry, check_name, resolve_under_roots, settings_from
from .store import CacheStore

log = logging.getLogger(__name__)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Service:
    """One model answering every registered task; ``start()`` before use, ``close()`` after."""

    def __init__(self, cfg: ServeConfig, model, tokenizer):
        self.cfg, self.model, self.tokenizer = cfg, model, tokenizer
        self.state_dir = cfg.resolved_state_dir()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = ServeMetrics()
        self.key = model_key(model, cfg.model, cfg.adapter, tokenizer)
        self.store = CacheStore(
            self.state_dir / "caches", model, self.key, int(cfg.cache_ram_mb * 2**20), self.metrics
        )
        self.registry = Registry(self.state_dir)
        self.tasks: dict[str, ServedTask] = {}
        self.broken: dict[str, str] = {}
        """Registered tasks that could not be rebuilt at start (folder gone or now invalid): the reason."""
        self._pending: set[str] = set()
        self._lock = threading.RLock()
        self.device = next(model.parameters()).device
        self.token_budget = batch_tokens(cfg.batch_tokens, self.device)
        self.position_limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self.batcher = Batcher(self._run_batch, cfg.batch_wait_ms / 1000, cfg.max_batch_inputs, cfg.max_queue)
        self.roots = list(cfg.allowed_roots) + list(cfg.tasks)
        self.started = time.time()
        self._state_lock = None
        m = self.metrics
        m.gauge("queue_depth", "predict requests waiting for the worker", lambda: {(): self.batcher.depth})
        m.gauge("inflight", "predict requests being scored now", lambda: {(): self.batcher.inflight})
        m.gauge(
            "tasks",
            "registered tasks by status",
            lambda: {("ready",): len(self.tasks), ("broken",): len(self.broken)},
            ("status",),
        )
        m.gauge(
            "cache_bytes",
            "prompt cache bytes in memory and on disk",
            lambda: {("ram",): self.store.ram_bytes(), ("disk",): self.store.disk_bytes()},
            ("where",),
        )

    # ---- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._state_lock = exclusive_lock(self.state_dir, "manyicl serve")
        self._state_lock.__enter__()  # held until close(); a kill -9 releases it with the process
        try:
            self._restore()
        except BaseException:
            self._state_lock.__exit__(None, None, None)
            raise
        self.batcher.start()
        if self.cfg.preload:
            for st in list(self.tasks.values()):
                self.batcher.submit_call(lambda st=st: self.store.get(st))

    def close(self) -> None:
        self.batcher.stop()
        if self._state_lock is not None:
            self._state_lock.__exit__(None, None, None)
            self._state_lock = None

    def _restore(self) -> None:
        """Tasks of the registry (prompts rebuilt from their folders), then the ``--tasks`` folders."""
        entries = self.registry.load()
        removed = self.registry.cleanup(self.store.root)
        removed += [f"caches: {n} orphaned"] if (n := self.store.remove_orphans(set(entries))) else []
        if removed:
            log.info("removed what an interrupted write left: %s", ", ".join(removed))
        for name, entry in sorted(entries.items()):
            try:
                settings = settings_from(entry.get("settings"), TaskSettings())
                task = self._read_folder(Path(entry["path"]), name)
                st = build_served_task(task, self.tokenizer, settings, self.position_limit)
            except (ManyICLError, KeyError, OSError) as e:
                self.broken[name] = f"could not be rebuilt from {entry.get('path')}: {e}"
                log.error("task %s %s", name, self.broken[name])
                continue
            if st.prompt_sha256 != entry.get("prompt_sha256"):
                log.warning("task %s: its folder changed since registration; serving the new prompt", name)
                entry["prompt_sha256"] = st.prompt_sha256
                self.registry.save()
            self.tasks[name] = st
        for root in self.cfg.tasks:
            for d in find_task_dirs(root):
                task = load_task_dir(d)
                if task.name in self.tasks or task.name in self.broken:
                    continue
                st = build_served_task(task, self.tokenizer, self.cfg.defaults, self.position_limit)
                self._commit(st, "folder", str(Path(d).resolve()))
        log.info("%d tasks ready, %d broken", len(self.tasks), len(self.broken))

    @staticmethod
    def _read_folder(path: Path, name: str) -> Task:
        task = load_task_dir(path)
        return task if task.name == name else replace(task, name=name)

    def _commit(self, st: ServedTask, source: str, path: str) -> None:
        with self._lock:
            old = self.registry.entries.get(st.name)
            self.registry.put(
                st.name,
                {
                    "name": st.name,
                    "source": source,
                    "path": path,
                    "settings": asdict(st.settings),
                    "prompt_sha256": st.prompt_sha256,
                    "registered_at": _now(),
                },
            )
            self.tasks[st.name] = st
            self.broken.pop(st.name, None)
            if old is not None and old.get("path") != path:
                self.registry.discard_folder(old)

    # ---- registration -----------------------------------------------------------------------

    def register(self, req: dict) -> dict:
        """Register a task folder (``path`` under an allowed root) or inline ``examples``; build its
        prompt and cache. Blocks until built (or ``register_timeout_s``)."""
        cfg = self.cfg
        settings = settings_from(req.get("settings"), cfg.defaults)
        if settings.max_length > cfg.max_prompt_tokens:
            raise TooLarge(
                f"{settings.max_length} exceeds the server's max_prompt_tokens {cfg.max_prompt_tokens}",
                "settings.max_length",
            )
        if bool(req.get("path")) == bool(req.get("examples")):
            raise ServeError(
                "give either path (a task folder) or examples (inline), not both or neither", "path"
            )
        if req.get("path"):
            real = resolve_under_roots(req["path"], self.roots)
            task = load_task_dir(real)
            name = check_name(req["name"]) if req.get("name") else task.name
            source, where = "folder", str(real)
        else:
            name, source, where = check_name(req.get("name")), "inline", ""
            if len(req["examples"]) > cfg.max_examples:
                raise TooLarge(
                    f"{len(req['examples'])} examples exceed max_examples {cfg.max_examples}", "examples"
                )
        self._reserve_name(name, bool(req.get("replace")))
        folder = None
        try:
            if source == "inline":
                folder, task = self.registry.write_inline(req, settings.demo_split)
                where = str(folder)
            task = task if task.name == name else replace(task, name=name)
            fut = self.batcher.submit_call(lambda: self._build(task, settings, source, where))
        except BaseException:
            self._release(name, folder)
            raise
        try:
            return fut.result(timeout=cfg.register_timeout_s)
        except cf.TimeoutError:
            raise Timeout(
                f"the prompt of {name} is still being built after {cfg.register_timeout_s:.0f} s; it is registered "
                f"when done (GET /v1/tasks/{name})"
            ) from None

    def _reserve_name(self, name: str, replace_existing: bool) -> None:
        with self._lock:
            if name in self._pending:
                raise Conflict(f"task {name} is being registered by another request; wait for it", "name")
            if (name in self.tasks or name in self.broken) and not replace_existing:
                raise Conflict(f"task {name} is already registered; send replace: true to rebuild it", "name")
            other = self.registry.colliding(name)
            if other:
                raise Conflict(f"{name} would share file names with task {other} (case, ':' vs '_')", "name")
            if name not in self.tasks and len(self.tasks) + len(self._pending) >= self.cfg.max_tasks:
                raise Conflict(
                    f"max_tasks ({self.cfg.max_tasks}) tasks are registered; delete one first", "name"
                )
            self._pending.add(name)

    def _release(self, name: str, folder: Path | None) -> None:
        with self._lock:
            self._pending.discard(name)
        if folder is not None:
            self.registry.discard_folder({"source": "inline", "path": str(folder)})

    def _build(self, task: Task, settings: TaskSettings, source: str, where: str) -> dict:
        """On the worker: prompt, cache (from disk when a valid file exists, else prefill), registry entry."""
        folder = Path(where) if source == "inline" else None
        try:
            st = build_served_task(task, self.tokenizer, settings, self.position_limit)
            self.store.drop(st.name, files=False)
            self.store.get(st)
            self._commit(st, source, where)
        except BaseException:
            self._release(task.name, folder)
            raise
        self._release(task.name, None)
        return self.describe(st.name)

    # ---- reading ----------------------------------------------------------------------------

    def describe(self, name: str) -> dict:
        check_name(name)
        with self._lock:
            st, entry = self.tasks.get(name), self.registry.entries.get(name)
            if st is None and name in self.broken:
                return {"name": name, "status": "broken", "error": self.broken[name], **(entry or {})}
        if st is None or entry is None:
            raise NotFound(f"no task named {name!r} is registered (GET /v1/tasks lists them)", "name")
        path = self.store.path(name)
        return {
            "status": "ready",
            **st.describe(),
            "source": entry["source"],
            "path": entry["path"] if entry["source"] == "folder" else None,
            "settings": entry["settings"],
            "registered_at": entry["registered_at"],
            "cache": {
                "in_memory": self.store.in_ram(name),
                "file_bytes": path.stat().st_size if path.exists() else 0,
                "last": self.store.last.get(name),
            },
        }

    def list(self) -> list[dict]:
        with self._lock:
            names = sorted(set(self.tasks) | set(self.broken))
        out = []
        for n in names:
            st = self.tasks.get(n)
            if st is None:
                out.append({"name": n, "status": "broken", "error": self.broken.get(n)})
                continue
            out.append(
                {
                    "name": n,
                    "status": "ready",
                    "mode": st.mode,
                    "shots": st.shots,
                    "prompt_tokens": len(st.prompt_ids),
                    "cache_in_memory": self.store.in_ram(n),
                }
            )
        return out

    def delete(self, name: str) -> dict:
        check_name(name)
        with self._lock:
            if name in self._pending:
                raise Conflict(f"task {name} is being registered; delete it when that finishes", "name")
            if name not in self.registry.entries:
                raise NotFound(f"no task named {name!r} is registered (GET /v1/tasks lists them)", "name")

        def drop() -> dict:
            with self._lock:
                entry = self.registry.remove(name)
                self.tasks.pop(name, None)
                self.broken.pop(name, None)
            self.store.drop(name)
            self.registry.discard_folder(entry)
            return {"deleted": name}

        return self.batcher.submit_call(drop).result(timeout=self.cfg.register_timeout_s)

    def health(self) -> dict:
        return {
            "status": "ok" if self.batcher.alive else "unavailable",
            "model": self.cfg.model,
            "adapter": self.cfg.adapter,
            "tasks": len(self.tasks),
            "broken_tasks": len(self.broken),
            "queue_depth": self.batcher.depth,
            "uptime_s": round(time.time() - self.started, 1),
        }

    # ---- predict ----------------------------------------------------------------------------

    def submit(
        self, name: str, inputs: list[str], options: list[str] | None, top_k: int | None = None
    ) -> Job:
        """Queue a predict request (the checks that need no model happen here, before it waits)."""
        check_name(name)
        if name not in self.tasks:
            if name in self.broken:
                raise Conflict(
                    f"task {name} {self.broken[name]}; re-register it (replace: true) or delete it"
                )
            raise NotFound(f"no task named {name!r} is registered (GET /v1/tasks lists them)", "name")
        if not inputs:
            raise ServeError("give at least one input", "inputs")
        if len(inputs) > self.cfg.max_inputs_per_request:
            raise TooLarge(
                f"{len(inputs)} inputs exceed max_inputs_per_request {self.cfg.max_inputs_per_request}; "
                "split them over several requests",
                "inputs",
            )
        for field, texts in (("inputs", inputs), ("options", options or [])):
            for i, text in enumerate(texts):  # found here, not by the tokenizer on the worker (a 500)
                problem = text_problem(text)
                if problem:
                    raise Invalid(problem, f"{field}[{i}]")
        try:
            return self.batcher.submit_predict(name, len(inputs), (list(inputs), options, top_k))
        except ServeError as e:
            if e.status == 429:
                self.metrics.rejected.inc(reason="queue_full")
            raise

    async def predict(
        self,
        name: str,
        inputs: list[str],
        options: list[str] | None,
        timeout_s: float | None,
        top_k: int | None = None,
    ) -> dict:
        limit = (
            self.cfg.request_timeout_s if timeout_s is None else min(timeout_s, self.cfg.request_timeout_s)
        )
        job = self.submit(name, inputs, options, top_k)
        try:
            out = await asyncio.wait_for(asyncio.wrap_future(job.future), limit)
        except TimeoutError:
            self.batcher.cancel(job)
            self.metrics.rejected.inc(reason="timeout")
            raise Timeout(
                f"no answer within {limit:g} s (queue depth {self.batcher.depth}); retry later"
            ) from None
        except asyncio.CancelledError:  # the client went away
            self.batcher.cancel(job)
            raise
        return {"task": name, **out}

    def _run_batch(self, name: str, jobs: list[Job]) -> None:
        """On the worker: the inputs of ``jobs`` (one task) scored together against the task's prompt cache,
        in forward passes of ``token_budget`` tokens; a request is answered as soon as its pass is done."""
        st = self.tasks.get(name)
        if st is None:
            for j in jobs:
                j.future.set_exception(NotFound(f"task {name!r} was deleted", "name"))
            return
        try:
            pc = self.store.get(st)
        except ManyICLError as e:
            for j in jobs:
                j.future.set_exception(Unavailable(f"the prompt cache of {name} could not be built: {e}"))
            return
        items: list = []
        owner: list[int] = []  # per input: its request's index in ``live``
        live: list[Job] = []
        for j in jobs:
            inputs, options, top_k = j.payload
            try:
                enc = encode_inputs(st, inputs, options, top_k)
            except ServeError as e:
                j.future.set_exception(e)
                continue
            owner += [len(live)] * len(enc)
            live.append(j)
            items += enc
        passes = pass_chunks(st, items, self.token_budget)
        about = {  # the prompt these answers come from (a replaced task answers with its new one)
            "mode": st.mode,
            "shots": st.shots,
            "prompt_sha256": st.prompt_sha256,
            "normalize": st.settings.normalize,
        }
        left = [owner.count(k) for k in range(len(live))]
        results: list = [None] * len(items)
        t0 = time.perf_counter()
        for chunk in passes:
            for i, r in zip(
                chunk, score_encoded(st, pc, self.tokenizer, [items[i] for i in chunk], self.token_budget)
            ):
                results[i] = r
                left[owner[i]] -= 1
            for k in {owner[i] for i in chunk}:
                if left[k] == 0:
                    mine = [results[i] for i in range(len(items)) if owner[i] == k]
                    batch = {
                        "requests": len(live),
                        "inputs": len(items),
                        "passes": len(passes),
                        "seconds": round(time.perf_counter() - t0, 6),
                    }
                    live[k].future.set_result({**about, "predictions": mine, "batch": batch})
        m = self.metrics
        m.batches.inc()
        m.inputs.inc(len(items))
        m.batch_inputs.observe(len(items))
        m.batch_requests.observe(len(live))
        m.score_seconds.observe(time.perf_counter() - t0)


def load_for_serving(cfg: ServeConfig):
    """The model (with its adapter) and tokenizer, in the dtype scores are computed in."""
    from ..config import ModelConfig
    from ..modeling import load_model, resolve_device

    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    dtype = cfg.dtype
    if dtype == "auto" and device.type == "cpu":
        dtype = "float32"  # what eval scores in on CPU: served and offline scores agree
    mc = ModelConfig(name_or_path=cfg.model, adapter=cfg.adapter, dtype=dtype, device=cfg.device)
    model, tokenizer = load_model(mc)
    return model, tokenizer
