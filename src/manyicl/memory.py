"""Measuring peak memory of one phase of work (RSS, and CUDA allocations on a GPU)."""

from __future__ import annotations

import threading
import time

import psutil
import torch


class PeakMemory:
    """Context manager: peak resident memory (RSS, sampled every ``interval`` s) and peak CUDA
    allocation during the block. ``getrusage`` cannot do this: its maximum covers the whole process
    lifetime, so a second phase would inherit the first one's peak."""

    def __init__(self, interval: float = 0.01):
        self.interval = interval
        self.start_rss_mb = 0.0
        self.peak_rss_mb = 0.0
        self.cuda_peak_mb: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc = psutil.Process()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_rss_mb = max(self.peak_rss_mb, self._proc.memory_info().rss / 2**20)
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self.start_rss_mb = self.peak_rss_mb = self._proc.memory_info().rss / 2**20
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_rss_mb = max(self.peak_rss_mb, self._proc.memory_info().rss / 2**20)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            self.cuda_peak_mb = torch.cuda.max_memory_allocated() / 2**20

    @property
    def delta_rss_mb(self) -> float:
        """Peak RSS above what the process held when the block started."""
        return self.peak_rss_mb - self.start_rss_mb

    def as_dict(self) -> dict:
        return {
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "delta_rss_mb": round(self.delta_rss_mb, 1),
            "cuda_peak_mb": None if self.cuda_peak_mb is None else round(self.cuda_peak_mb, 1),
        }
