"""Dynamic batching: concurrent requests for one model share one ONNX Runtime run.

Each request hands in its preprocessed images (N, 3, H, W) and blocks until its slice of the outputs is back.
``runners`` worker threads per model take turns to gather a batch (the first waiting request, then more for up to
``wait_s`` or until ``max_batch`` images) and run it; their runs overlap (ONNX Runtime sessions take concurrent
calls). On a CPU, several small single-threaded runs at once beat one large multi-threaded run: on 2 cores, two
one-thread runs at batch 1-2 classify ~1.3x the images/s of one two-thread run at batch 32. The queue is bounded
in images: a request that would push it past ``queue_images`` is refused at once (503 + Retry-After), so overload
never grows memory.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from camfleet_hub.core.errors import UnavailableError

RunFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class BusyError(UnavailableError):
    """The hub is at a bound; the client should retry after ``retry_after`` seconds."""

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


@dataclass(frozen=True)
class BatchLimits:
    max_batch: int
    wait_s: float
    queue_images: int
    retry_after_s: int
    runners: int = 1


@dataclass
class BatchStats:
    """Counters since start: model runs, images and requests through them, refusals, the largest run."""

    batches: int = 0
    images: int = 0
    requests: int = 0
    refused: int = 0
    largest: int = 0


@dataclass
class _Job:
    batch: np.ndarray
    done: threading.Event = field(default_factory=threading.Event)
    logits: np.ndarray | None = None
    embedding: np.ndarray | None = None
    error: BaseException | None = None


class Batcher:
    """One model's queue and ``limits.runners`` worker threads (started on first use; daemons: they hold no state
    worth a join)."""

    def __init__(self, run: RunFn, limits: BatchLimits, name: str = "model") -> None:
        self._run = run
        self.limits = limits
        self.name = name
        self.stats = BatchStats()
        self._queue: deque[_Job] = deque()
        self._pending = 0  # images queued or gathered, not yet running
        self._cond = threading.Condition()
        self._closed = False
        self._started = False
        self._gathering = False

    @property
    def pending(self) -> int:
        with self._cond:
            return self._pending

    def submit(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits, embedding) of ``batch``, run together with whatever other requests are waiting."""
        n = len(batch)
        job = _Job(batch)
        with self._cond:
            if self._closed:
                raise UnavailableError(f"{self.name} is being unloaded; retry")
            if self._pending + n > self.limits.queue_images:
                self.stats.refused += 1
                raise BusyError(
                    f"{self._pending} images are waiting for {self.name}, and {n} more would pass "
                    f"classify.queue_images={self.limits.queue_images}; retry shortly",
                    self.limits.retry_after_s,
                )
            self._pending += n
            self._queue.append(job)
            if not self._started:
                self._started = True
                for i in range(self.limits.runners):
                    threading.Thread(target=self._work, name=f"batcher-{self.name}-{i}", daemon=True).start()
            self._cond.notify_all()
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.logits is not None and job.embedding is not None
        return job.logits, job.embedding

    def close(self) -> None:
        """Refuse new requests; the workers finish what is queued and exit."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _gather(self) -> list[_Job] | None:
        """The next batch: the first request, then more until max_batch images or the wait ends."""
        with self._cond:
            # One batch gathers at a time (the runs overlap): two gatherers would split what one run could take.
            while not self._queue or self._gathering:
                if self._closed and not self._queue:
                    return None
                self._cond.wait()
            self._gathering = True
            jobs = [self._queue.popleft()]
            size = len(jobs[0].batch)
            deadline = time.monotonic() + self.limits.wait_s
            while size < self.limits.max_batch:
                # A request that does not fit waits for the next run (one over max_batch alone runs by itself).
                if self._queue and size + len(self._queue[0].batch) <= self.limits.max_batch:
                    job = self._queue.popleft()
                    jobs.append(job)
                    size += len(job.batch)
                    continue
                if self._queue:
                    break
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    break
                self._cond.wait(left)
            self._pending -= size
            self._gathering = False
            self._cond.notify_all()
            return jobs

    def _work(self) -> None:
        while True:
            jobs = self._gather()
            if jobs is None:
                return
            sizes = [len(j.batch) for j in jobs]
            try:
                batch = jobs[0].batch if len(jobs) == 1 else np.concatenate([j.batch for j in jobs])
                logits, embedding = self._run(batch)
                offsets = np.cumsum([0, *sizes])
                for job, a, b in zip(jobs, offsets[:-1], offsets[1:], strict=True):
                    job.logits, job.embedding = logits[a:b], embedding[a:b]
            except BaseException as exc:  # every waiting request gets the failure, the worker lives on
                for job in jobs:
                    job.error = exc
            with self._cond:
                self.stats.batches += 1
                self.stats.images += sum(sizes)
                self.stats.requests += len(jobs)
                self.stats.largest = max(self.stats.largest, sum(sizes))
            for job in jobs:
                job.done.set()
