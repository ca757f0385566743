"""The bounded hand-off between a camera's capture thread and inference: drop the oldest, never grow."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from camfleet_contract.runtime import ClassifierRuntime

from .capture import CapturedFrame
from .gate import GateDecision
from .stats import CameraStats


@dataclass(frozen=True)
class PreparedInput:
    """One classifier's model input for a frame, made on the capture thread by that classifier's runtime."""

    classifier: str
    runtime: ClassifierRuntime
    batch: np.ndarray
    seconds: float  # spent preparing it (part of the reported inference latency)


@dataclass(frozen=True)
class GatedFrame:
    """A frame that passed the gate, with the gate's verdict (motion score and regions for the events) and, when
    the capture thread could make them, its classifiers' model inputs."""

    frame: CapturedFrame
    decision: GateDecision = field(default_factory=lambda: GateDecision(classify=True, reason="off"))
    inputs: tuple[PreparedInput, ...] = ()

    @property
    def seq(self) -> int:
        return self.frame.seq


class FrameQueue:
    """Bounded hand-off between two threads; when full, the oldest frame is dropped and counted."""

    def __init__(self, maxsize: int, stats: CameraStats | None = None) -> None:
        self.maxsize = maxsize
        self.dropped = 0
        self.stats = stats
        self.on_put: Callable[[], None] | None = None  # wakes a shared inference pool
        self._items: deque[GatedFrame] = deque()
        self._cond = threading.Condition()

    def put(self, item: GatedFrame | CapturedFrame, wait_unless: threading.Event | None = None) -> None:
        """Add a frame; when full, drop the oldest (a live camera cannot wait).

        With `wait_unless` (a stop event) wait for room instead: right for replayed files and folders,
        where waiting loses nothing and decoding frames only to drop them wastes the CPU inference needs.
        """
        if isinstance(item, CapturedFrame):
            item = GatedFrame(item)
        with self._cond:
            while wait_unless is not None and len(self._items) >= self.maxsize and not wait_unless.is_set():
                self._cond.wait(0.1)
            if len(self._items) >= self.maxsize:
                self._items.popleft()
                self.dropped += 1
                if self.stats is not None:
                    self.stats.on_dropped("queue_full")
            self._items.append(item)
            self._cond.notify_all()
        if self.on_put is not None:
            self.on_put()

    def get(self, timeout: float) -> GatedFrame | None:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            item = self._items.popleft() if self._items else None
            self._cond.notify_all()  # room for a producer waiting in put
            return item

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
