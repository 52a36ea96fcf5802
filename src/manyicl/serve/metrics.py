"""Prometheus text-format metrics, thread-safe, with no dependency.

Counters, gauges and histograms with labels, rendered as the text exposition format (version 0.0.4)
that Prometheus scrapes from ``GET /metrics``. Every metric of the server is declared in
:class:`ServeMetrics`, so the list below is also the documentation of what is measured.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v: float) -> str:
    if v == math.inf:
        return "+Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


class _Metric:
    kind = ""

    def __init__(self, name: str, doc: str, labels: tuple[str, ...] = ()):
        self.name, self.doc, self.label_names = name, doc, labels
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        if set(labels) != set(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {sorted(labels)}")
        return tuple(str(labels[n]) for n in self.label_names)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.doc}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, doc: str, labels: tuple[str, ...] = ()):
        super().__init__(name, doc, labels)
        self._values: dict[tuple[str, ...], float] = {} if labels else {(): 0.0}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return self.header() + [f"{self.name}{_labels(self.label_names, k)} {_num(v)}" for k, v in items]


class Gauge(_Metric):
    """A value set by the code, or read from ``fn`` at scrape time."""

    kind = "gauge"

    def __init__(
        self, name: str, doc: str, labels: tuple[str, ...] = (), fn: Callable[[], dict] | None = None
    ):
        super().__init__(name, doc, labels)
        self._values: dict[tuple[str, ...], float] = {}
        self._fn = fn

    def set(self, value: float, **labels: str) -> None:
        with self._lock:
            self._values[self._key(labels)] = float(value)

    def render(self) -> list[str]:
        if self._fn is not None:
            items = sorted(((k,) if isinstance(k, str) else tuple(k), v) for k, v in self._fn().items())
        else:
            with self._lock:
                items = sorted(self._values.items())
        return self.header() + [f"{self.name}{_labels(self.label_names, k)} {_num(v)}" for k, v in items]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, doc: str, labels: tuple[str, ...] = (), buckets=LATENCY_BUCKETS):
        super().__init__(name, doc, labels)
        self.buckets = tuple(sorted(buckets)) + (math.inf,)
        self._counts: dict[tuple[str, ...], list[int]] = {}
        self._sums: dict[tuple[str, ...], float] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            counts = self._counts.setdefault(key, [0] * len(self.buckets))
            for i, b in enumerate(self.buckets):
                if value <= b:
                    counts[i] += 1
            self._sums[key] = self._sums.get(key, 0.0) + value

    def count(self, **labels: str) -> int:
        c = self._counts.get(self._key(labels))
        return c[-1] if c else 0

    def render(self) -> list[str]:
        out = self.header()
        with self._lock:
            keys = sorted(self._counts)
            snap = {k: (list(self._counts[k]), self._sums[k]) for k in keys}
        for k in keys:
            counts, total = snap[k]
            for b, n in zip(self.buckets, counts):
                le = 'le="' + _num(b) + '"'
                out.append(f"{self.name}_bucket{_labels(self.label_names, k, le)} {n}")
            out.append(f"{self.name}_sum{_labels(self.label_names, k)} {_num(total)}")
            out.append(f"{self.name}_count{_labels(self.label_names, k)} {counts[-1]}")
        return out


class ServeMetrics:
    """Everything ``GET /metrics`` reports (all names start with ``manyicl_serve_``)."""

    def __init__(self) -> None:
        p = "manyicl_serve_"
        self.requests = Counter(
            p + "requests_total", "HTTP requests by route and status", ("route", "status")
        )
        self.latency = Histogram(p + "request_seconds", "HTTP request latency by route", ("route",))
        self.rejected = Counter(
            p + "rejected_total", "predict requests refused or dropped (queue_full, timeout)", ("reason",)
        )
        self.inputs = Counter(p + "inputs_total", "inputs answered by predict")
        self.batches = Counter(p + "batches_total", "batches scored by the worker (one per task and round)")
        self.batch_inputs = Histogram(
            p + "batch_inputs", "inputs scored together in one batch", buckets=BATCH_BUCKETS
        )
        self.batch_requests = Histogram(
            p + "batch_requests", "requests scored together in one batch", buckets=BATCH_BUCKETS
        )
        self.score_seconds = Histogram(p + "score_seconds", "worker time per batch (forward passes)")
        self.cache_hits = Counter(p + "cache_hits_total", "prompt caches found in memory")
        self.cache_misses = Counter(p + "cache_misses_total", "prompt caches not in memory (loaded or built)")
        self.cache_disk_loads = Counter(p + "cache_disk_loads_total", "prompt caches loaded from disk")
        self.cache_load_seconds = Counter(
            p + "cache_load_seconds_total", "time spent loading caches from disk"
        )
        self.cache_rebuilds = Counter(
            p + "cache_rebuilds_total",
            "cache files refused and rebuilt (corrupt, mismatch: made for another model/prompt)",
            ("reason",),
        )
        self.cache_evictions = Counter(p + "cache_evictions_total", "caches dropped from memory (LRU)")
        self.prefills = Counter(p + "prefills_total", "prompts processed by the model (cache built)")
        self.prefill_seconds = Counter(p + "prefill_seconds_total", "time spent processing prompts")
        self.gauges: list[Gauge] = []

    def gauge(self, name: str, doc: str, fn: Callable[[], dict], labels: tuple[str, ...] = ()) -> None:
        """A gauge read at scrape time: ``fn()`` returns {label value, or tuple of them (``()``: none): value}."""
        self.gauges.append(Gauge("manyicl_serve_" + name, doc, labels, fn))

    def render(self) -> str:
        lines: list[str] = []
        for m in (
            self.requests,
            self.latency,
            self.rejected,
            self.inputs,
            self.batches,
            self.batch_inputs,
            self.batch_requests,
            self.score_seconds,
            self.cache_hits,
            self.cache_misses,
            self.cache_disk_loads,
            self.cache_load_seconds,
            self.cache_rebuilds,
            self.cache_evictions,
            self.prefills,
            self.prefill_seconds,
            *self.gauges,
        ):
            lines += m.render()
        return "\n".join(lines) + "\n"


def parse_metrics(text: str) -> dict[str, float]:
    """``{'name{labels}': value}`` of a text exposition (for tests and the benchmark)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        out[name] = float(value.replace("+Inf", "inf"))
    return out
