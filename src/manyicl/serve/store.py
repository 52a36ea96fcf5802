"""Prompt caches on disk and in memory.

Each task's prompt cache is a safetensors file written by :meth:`PromptCache.save` (atomically: a
reader never sees half a file) with its key -- model, model config and weights hash, adapter hash,
tokenizer, dtype, and the prompt's sha256 -- and loaded by :meth:`PromptCache.load`, which refuses a
file whose key, prompt or tensor checksum does not match. A refused file is rebuilt from the prompt
(and overwritten), never used. In memory the caches form an LRU under a byte budget; the least
recently used leave first (their files stay). Only the worker thread calls :meth:`CacheStore.get`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path

from ..caching import PromptCache
from ..errors import ManyICLError
from ..tasks import safe_path_component
from .metrics import ServeMetrics
from .prompts import ServedTask

log = logging.getLogger(__name__)


def cache_bytes(pc: PromptCache) -> int:
    """Bytes held by the cache's key and value tensors."""
    total = 0
    for layer in getattr(pc.cache, "layers", []):
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if t is not None:
                total += t.numel() * t.element_size()
    return total


class CacheStore:
    """Prompt caches of the registered tasks: a file per task under ``root``, an LRU in memory."""

    def __init__(
        self,
        root: Path,
        model,
        key: dict,
        ram_budget_bytes: int,
        metrics: ServeMetrics,
        prefill_chunk: int = 2048,
    ):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.model, self.key, self.budget = model, key, int(ram_budget_bytes)
        self.key_id = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        self.metrics, self.prefill_chunk = metrics, prefill_chunk
        self._ram: OrderedDict[str, tuple[str, PromptCache, int]] = OrderedDict()
        self._lock = threading.Lock()  # guards _ram for readers on other threads (metrics, describe)
        self.last: dict[str, dict] = {}
        """Per task: how its cache was last obtained (``ram``, ``disk``, ``prefill``) and the seconds it took."""

    def path(self, name: str) -> Path:
        """The cache file of task ``name`` under this model's key (two models never share a file)."""
        return self.root / f"{safe_path_component(name)}.{self.key_id}.safetensors"

    # ---- reading ----------------------------------------------------------------------------

    def get(self, st: ServedTask) -> PromptCache:
        """The task's prompt cache: from memory, else from its file, else built (and saved)."""
        name, sha = st.name, st.prompt_sha256
        with self._lock:
            hit = self._ram.get(name)
            if hit is not None and hit[0] == sha:
                self._ram.move_to_end(name)
                self.metrics.cache_hits.inc()
                return hit[1]
        self.metrics.cache_misses.inc()
        pc = self._load(st)
        if pc is None:
            pc = self.build(st)
        self._put(name, sha, pc)
        return pc

    def _load(self, st: ServedTask) -> PromptCache | None:
        p = self.path(st.name)
        if not p.exists():
            return None
        t0 = time.perf_counter()
        try:
            pc = PromptCache.load(p, self.model, self.key, prompt_ids=st.prompt_ids)
        except ManyICLError as e:
            reason = "mismatch" if "made for a different" in str(e) else "corrupt"
            self.metrics.cache_rebuilds.inc(reason=reason)
            log.warning("rebuilding the prompt cache of %s: %s", st.name, e)
            return None
        except Exception as e:  # anything else a damaged file can raise is still a damaged file
            self.metrics.cache_rebuilds.inc(reason="corrupt")
            log.warning("rebuilding the prompt cache of %s: unreadable (%s)", st.name, type(e).__name__)
            return None
        dt = time.perf_counter() - t0
        self.metrics.cache_disk_loads.inc()
        self.metrics.cache_load_seconds.inc(dt)
        self.last[st.name] = {"source": "disk", "seconds": dt}
        return pc

    def build(self, st: ServedTask) -> PromptCache:
        """Process the prompt and save its cache (atomically) under the model's key."""
        pc = PromptCache(self.model, st.prompt_ids, prefill_chunk=self.prefill_chunk)
        self.metrics.prefills.inc()
        self.metrics.prefill_seconds.inc(pc.prefill_s)
        pc.save(self.path(st.name), self.key)
        self.last[st.name] = {"source": "prefill", "seconds": pc.prefill_s}
        return pc

    # ---- memory -----------------------------------------------------------------------------

    def _put(self, name: str, sha: str, pc: PromptCache) -> None:
        size = cache_bytes(pc)
        with self._lock:
            self._ram[name] = (sha, pc, size)
            self._ram.move_to_end(name)
            while len(self._ram) > 1 and self._ram_bytes() > self.budget:
                old, _ = self._ram.popitem(last=False)
                self.metrics.cache_evictions.inc()
                log.info("prompt cache of %s leaves memory (LRU, budget %.0f MB)", old, self.budget / 2**20)
            if size > self.budget:
                log.warning(
                    "the prompt cache of %s alone (%.0f MB) exceeds cache_ram_mb (%.0f MB); raise --cache-ram-mb",
                    name,
                    size / 2**20,
                    self.budget / 2**20,
                )

    def _ram_bytes(self) -> int:
        return sum(size for _, _, size in self._ram.values())

    def ram_bytes(self) -> int:
        with self._lock:
            return self._ram_bytes()

    def in_ram(self, name: str) -> bool:
        with self._lock:
            return name in self._ram

    def disk_bytes(self) -> int:
        total = 0
        for p in self.root.glob("*.safetensors"):
            try:
                total += p.stat().st_size
            except OSError:
                pass
        return total

    def drop(self, name: str, files: bool = True) -> None:
        """Forget a task's cache in memory and (``files``) on disk, under every model key."""
        with self._lock:
            self._ram.pop(name, None)
        self.last.pop(name, None)
        if files:
            for p in self.root.glob(f"{safe_path_component(name)}.*.safetensors"):
                p.unlink(missing_ok=True)

    def remove_orphans(self, names: set[str]) -> int:
        """Delete cache files of tasks that are not registered (a registration killed half-way)."""
        keep = {safe_path_component(n) for n in names}
        removed = 0
        for p in self.root.glob("*.safetensors"):
            if p.name.startswith("."):
                continue
            task_part = p.name[: -len(".safetensors")].rsplit(".", 1)[0]
            if task_part not in keep:
                p.unlink(missing_ok=True)
                removed += 1
        return removed
