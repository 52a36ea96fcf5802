"""One worker thread owns the model; requests reach it through a bounded queue and are batched per task.

A predict request becomes a :class:`Job` in the queue (or is refused with :class:`QueueFull` when
``max_queue`` requests already wait). The worker takes the oldest job, waits until ``wait_s`` after that
job's arrival -- or until the jobs of the same task hold ``max_batch_inputs`` inputs -- and hands every
waiting job of that task to ``run_batch`` at once, which scores all their inputs in one batched pass over
the task's shared prompt cache. Jobs of other tasks keep their place. Registrations and deletions run on
the same thread (``submit_call``), so nothing else ever touches the model or a prompt cache.

Futures follow ``concurrent.futures``: a job whose future was cancelled (its request timed out) before
the worker reached it is skipped; once running, its result is computed and dropped.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import QueueFull, Unavailable

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Job:
    kind: str
    """``predict`` (batched with other jobs of its task) or ``call`` (run alone)."""
    task: str | None = None
    n_inputs: int = 0
    payload: Any = None
    """predict: whatever ``run_batch`` needs; call: the function to run."""
    future: cf.Future = field(default_factory=cf.Future)
    enqueued: float = field(default_factory=time.monotonic)


class Batcher:
    def __init__(
        self,
        run_batch: Callable[[str, list[Job]], None],
        wait_s: float,
        max_batch_inputs: int,
        max_queue: int,
    ):
        self.run_batch = run_batch
        self.wait_s, self.max_batch_inputs, self.max_queue = wait_s, max_batch_inputs, max_queue
        self._queue: deque[Job] = deque()
        self._cv = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.inflight = 0
        """Predict jobs being scored right now."""

    # ---- the API side -----------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="manyicl-serve-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cv:
            self._stopping = True
            pending = list(self._queue)
            self._queue.clear()
            self._cv.notify_all()
        for job in pending:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(
                    Unavailable("the server is shutting down; retry on another instance")
                )
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    @property
    def depth(self) -> int:
        """Predict requests waiting for the worker."""
        with self._cv:
            return sum(1 for j in self._queue if j.kind == "predict")

    def submit_predict(self, task: str, n_inputs: int, payload: Any) -> Job:
        job = Job("predict", task, n_inputs, payload)
        with self._cv:
            if self._stopping:
                raise Unavailable("the server is shutting down; retry on another instance")
            waiting = sum(1 for j in self._queue if j.kind == "predict")
            if waiting >= self.max_queue:
                raise QueueFull(
                    f"{waiting} requests are already waiting (max_queue {self.max_queue}); retry after a short "
                    "pause, send several inputs per request, or add server processes"
                )
            self._queue.append(job)
            self._cv.notify_all()
        return job

    def submit_call(self, fn: Callable[[], Any]) -> cf.Future:
        """Run ``fn`` on the worker thread (after the jobs queued before it); its result in the future."""
        job = Job("call", payload=fn)
        with self._cv:
            if self._stopping:
                raise Unavailable("the server is shutting down")
            self._queue.append(job)
            self._cv.notify_all()
        return job.future

    def cancel(self, job: Job) -> None:
        """Withdraw a job whose request gave up (timeout, disconnect): it no longer holds a queue place."""
        job.future.cancel()
        with self._cv:
            try:
                self._queue.remove(job)
            except ValueError:
                pass
            self._cv.notify_all()

    # ---- the worker -------------------------------------------------------------------------

    def _next(self) -> list[Job] | None:
        """The next batch: one call job, or the waiting predict jobs of the oldest job's task."""
        with self._cv:
            while True:
                if self._stopping:
                    return None
                if not self._queue:
                    self._cv.wait()
                    continue
                first = self._queue[0]
                if first.kind == "call":
                    self._queue.popleft()
                    return [first]
                deadline = first.enqueued + self.wait_s
                while self._queue and self._queue[0] is first and not self._stopping:
                    same = [j for j in self._queue if j.kind == "predict" and j.task == first.task]
                    remaining = deadline - time.monotonic()
                    if sum(j.n_inputs for j in same) >= self.max_batch_inputs or remaining <= 0:
                        batch, total = [], 0
                        for j in same:
                            if batch and total + j.n_inputs > self.max_batch_inputs:
                                break
                            batch.append(j)
                            total += j.n_inputs
                        for j in batch:
                            self._queue.remove(j)
                        return batch
                    self._cv.wait(remaining)
                # the oldest job was withdrawn while we waited: start over with the new oldest

    def _loop(self) -> None:
        while True:
            batch = self._next()
            if batch is None:
                return
            live = [j for j in batch if j.future.set_running_or_notify_cancel()]
            if not live:
                continue
            if live[0].kind == "call":
                job = live[0]
                try:
                    job.future.set_result(job.payload())
                except BaseException as e:  # noqa: BLE001 - handed to the waiting request
                    job.future.set_exception(e)
                continue
            self.inflight = len(live)
            try:
                self.run_batch(live[0].task, live)
            except BaseException as e:  # noqa: BLE001 - every waiting request gets the error
                log.exception("batch of %s failed", live[0].task)
                for j in live:
                    if not j.future.done():
                        j.future.set_exception(e)
            finally:
                self.inflight = 0
                for j in live:  # run_batch must answer every job; a forgotten one must not hang
                    if not j.future.done():
                        j.future.set_exception(RuntimeError("the batch produced no answer for this request"))
