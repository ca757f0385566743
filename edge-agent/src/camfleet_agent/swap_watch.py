"""A model's behaviour after a swap: anomaly rate and mean top-1 confidence over its first frames.

Per classifier, the first ``frames`` classifications (all cameras of the agent together) with a new version, or
its first ``minutes`` when frames are few, are counted; then the figures are frozen (``complete``). The version
before keeps its last-known figures as ``previous``, so the hub can tell whether a new version flags far more
frames as anomalous than the one it replaced (issue 13). A "swap" is seen in the classifications themselves: the
first frame classified with a version other than the one counted, so a swap that never classifies a frame
(a camera without motion) reports nothing yet.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from camfleet_contract.messages import FirstFrames, SwapBehaviour, utcnow


class SwapWatchSettings(BaseModel):
    """How long a new model's first frames are counted."""

    model_config = ConfigDict(extra="forbid")

    frames: int = Field(default=200, ge=1, le=1_000_000, description="count the first N classified frames")
    minutes: float = Field(default=10.0, gt=0, description="or stop counting after M minutes, whichever is first")


@dataclass
class _Count:
    version: str
    since: datetime
    started: float  # monotonic
    frames: int = 0
    anomalies: int = 0
    confidence: float = 0.0
    complete: bool = False

    def figures(self) -> FirstFrames:
        n = self.frames
        return FirstFrames(
            version=self.version,
            since=self.since,
            frames=n,
            anomaly_rate=self.anomalies / n if n else 0.0,
            mean_confidence=min(1.0, max(0.0, self.confidence / n)) if n else 0.0,
            complete=self.complete,
        )


class SwapWatch:
    """Thread-safe counter fed by every camera's classify thread; ``report()`` goes into the agent's status.

    ``on_complete`` is called (outside the lock) when a version's count completes, so the status can go out at once.
    """

    def __init__(
        self,
        settings: SwapWatchSettings | None = None,
        on_complete: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings or SwapWatchSettings()
        self._on_complete = on_complete
        self._clock = clock
        self._lock = threading.Lock()
        self._current: dict[str, _Count] = {}
        self._previous: dict[str, FirstFrames] = {}

    def observe(self, classifier: str, version: str, confidence: float, anomaly: bool) -> None:
        """One frame classified by ``classifier`` with model ``version`` (top-1 ``confidence``)."""
        now = self._clock()
        completed = False
        with self._lock:
            count = self._current.get(classifier)
            if count is None or count.version != version:
                if count is not None:
                    self._previous[classifier] = count.figures()
                count = self._current[classifier] = _Count(version=version, since=utcnow(), started=now)
            if count.complete:
                return
            if now - count.started >= self.settings.minutes * 60.0 and count.frames:
                count.complete = completed = True  # the time is up: this frame belongs to the steady state
            else:
                count.frames += 1
                count.anomalies += 1 if anomaly else 0
                count.confidence += min(1.0, max(0.0, float(confidence)))
                if count.frames >= self.settings.frames:
                    count.complete = completed = True
        if completed and self._on_complete is not None:
            self._on_complete()

    def report(self) -> dict[str, SwapBehaviour]:
        """Per classifier seen: the running version's figures so far and the previous version's last-known ones."""
        with self._lock:
            return {
                clf: SwapBehaviour(current=count.figures(), previous=self._previous.get(clf))
                for clf, count in sorted(self._current.items())
            }
