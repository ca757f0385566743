"""Heartbeats for a running job: progress and per-epoch figures to the hub from a background thread, and the
hub's cancel (or a lost lease) back to the training thread as JobAborted."""

from __future__ import annotations

import logging
import threading

from camfleet_contract.rest import EpochMetrics
from camfleet_trainer.client import HubClient, HubError, LeaseLost

log = logging.getLogger(__name__)

HEARTBEAT_MIN_S = 2.0
HEARTBEAT_MAX_S = 5.0  # progress on the hub stays fresh and a cancel is noticed within seconds


class JobAborted(Exception):
    """Stop working on the current job (cancelled, lease lost, or the worker is stopping); do not fail it."""


def _beat_interval(lease_s: float) -> float:
    """Well inside the lease: a third of it, between HEARTBEAT_MIN_S and HEARTBEAT_MAX_S."""
    return min(HEARTBEAT_MAX_S, max(HEARTBEAT_MIN_S, lease_s / 3.0))


class JobReporter:
    """Heartbeats for one job from a background thread, so long stages never let the lease lapse.

    The training thread calls `update` at every step; it records progress, wakes the thread on a stage
    change and raises JobAborted as soon as the hub said cancel, the lease was lost, or the worker stops.
    """

    def __init__(self, client: HubClient, job_id: int, worker: str, lease_s: float, stopping: threading.Event) -> None:
        self.client = client
        self.job_id = job_id
        self.worker = worker
        self.interval = _beat_interval(lease_s)
        self.stopping = stopping
        self.abort_reason: str | None = None
        self._state = ("claimed", 0.0, "")
        self._epochs: list[EpochMetrics] = []  # per-epoch figures not yet delivered to the hub
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-job-{job_id}", daemon=True)

    def __enter__(self) -> JobReporter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def update(self, stage: str, progress: float, message: str) -> None:
        """Record progress (sent by the thread); raises JobAborted when the job must stop."""
        with self._lock:
            changed = stage != self._state[0]
            self._state = (stage, progress, message)
        if changed:
            self._wake.set()
        self.check()

    def add_epoch(self, metrics: EpochMetrics) -> None:
        """Queue one epoch's figures for the next heartbeat, sent at once (the hub draws them live)."""
        with self._lock:
            self._epochs.append(metrics)
        self._wake.set()
        self.check()

    def check(self) -> None:
        if self.stopping.is_set():
            raise JobAborted("the worker is stopping")
        if self.abort_reason is not None:
            raise JobAborted(self.abort_reason)

    def send(self) -> None:
        """One heartbeat with the latest progress; notes a cancel or a lost lease."""
        with self._lock:
            stage, progress, message = self._state
            epochs = list(self._epochs)
        try:
            answer = self.client.heartbeat(self.job_id, self.worker, progress, stage, message, epochs or None)
            with self._lock:
                del self._epochs[: len(epochs)]  # delivered; a failed beat keeps them for the next one
        except LeaseLost as exc:
            self.abort_reason = f"lease lost: {exc}"
            return
        except HubError as exc:  # unreachable for a while: keep training, the next beat may get through
            log.warning("job %s: heartbeat failed: %s", self.job_id, exc)
            return
        if answer.cancel:
            self.abort_reason = "cancelled on the hub"
        if answer.lease_seconds > 0:
            self.interval = _beat_interval(answer.lease_seconds)

    def _loop(self) -> None:
        while not self._done.is_set() and self.abort_reason is None:
            self.send()
            self._wake.wait(self.interval)
            self._wake.clear()
