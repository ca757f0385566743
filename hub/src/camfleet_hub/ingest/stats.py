"""Thread-safe ingest counters, shared between the ingest worker and the REST API."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

COMMIT_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(frozen=True, slots=True)
class IngestCounts:
    """The counters at one moment (``GET /ingest/stats`` shows them as ``worker``, in this order)."""

    accepted: int
    duplicates: int
    rejected: dict[str, int]  # by reason
    rejected_total: int
    statuses: int
    events: int
    event_duplicates: int
    queue_depth: int


@dataclass
class IngestStats:
    """Accepted / duplicate / rejected-by-reason counts since the process started."""

    accepted: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    statuses: int = 0
    events: int = 0  # agent events stored in the event history (fleet domain)
    event_duplicates: int = 0
    queue_depth: int = 0  # messages received and not yet committed, as of the last batch
    commit_buckets: list[int] = field(default_factory=lambda: [0] * len(COMMIT_BUCKETS_S))
    commit_seconds: float = 0.0
    commits: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add_accepted(self, n: int = 1) -> None:
        """Count frames stored for the first time."""
        with self._lock:
            self.accepted += n

    def add_duplicate(self, n: int = 1) -> None:
        """Count redelivered frames (already stored; acknowledged, not stored again)."""
        with self._lock:
            self.duplicates += n

    def add_rejected(self, reason: str) -> None:
        """Count a rejected message under its machine reason (e.g. ``bad_magic``)."""
        with self._lock:
            self.rejected[reason] += 1

    def add_status(self) -> None:
        """Count agent status messages handled."""
        with self._lock:
            self.statuses += 1

    def add_events(self, stored: int, duplicates: int = 0) -> None:
        """Count events stored for the first time and redelivered ones."""
        with self._lock:
            self.events += stored
            self.event_duplicates += duplicates

    def observe_commit(self, seconds: float, queue_depth: int) -> None:
        """Record one batch commit's latency and the queue depth after it (for /metrics)."""
        with self._lock:
            self.queue_depth = queue_depth
            self.commits += 1
            self.commit_seconds += seconds
            for i, bound in enumerate(COMMIT_BUCKETS_S):
                if seconds <= bound:
                    self.commit_buckets[i] += 1

    def commit_histogram(self) -> tuple[list[tuple[float, int]], float, int]:
        """Cumulative (bound, count) buckets, sum of seconds and count of commits."""
        with self._lock:
            return list(zip(COMMIT_BUCKETS_S, self.commit_buckets, strict=True)), self.commit_seconds, self.commits

    def snapshot(self) -> IngestCounts:
        """A consistent copy for the API and /metrics."""
        with self._lock:
            rejected = dict(self.rejected)
            return IngestCounts(
                accepted=self.accepted,
                duplicates=self.duplicates,
                rejected=rejected,
                rejected_total=sum(rejected.values()),
                statuses=self.statuses,
                events=self.events,
                event_duplicates=self.event_duplicates,
                queue_depth=self.queue_depth,
            )
