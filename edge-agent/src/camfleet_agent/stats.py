"""Per-camera counters that capture, gate and inference update and that status / metrics read.

One `CameraStats` per camera, owned by its pipeline; every field is a plain number guarded by one lock, and
`snapshot()` returns a frozen copy so a reader (the status message, `/metrics`) never sees a half update.

Drop reasons (`DropReason`):
- ``queue_full``: a live camera produced a frame while the inference queue was full (the oldest was dropped);
- ``rate_cap``: a live source delivered faster than the camera's `fps` cap (the frame was read, not kept);
- ``decode``: the source returned a frame (or a folder a file) that could not be decoded.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal, get_args

DropReason = Literal["queue_full", "rate_cap", "decode"]
DROP_REASONS: tuple[DropReason, ...] = get_args(DropReason)
FPS_WINDOW_S = 10.0


@dataclass(frozen=True)
class CameraStatsSnapshot:
    """A consistent copy of one camera's counters (all counts since the pipeline started)."""

    camera: str
    captured: int  # frames the capture thread kept (after the rate cap)
    gated_out: int  # frames the motion gate judged still (not classified)
    classified: int  # frames every active classifier ran on
    keepalive: int  # classified frames that were classified only because the keep-alive interval was due
    dropped: dict[str, int]  # by DropReason
    reconnects: int  # times a live source was reopened after a failure or a stall
    stalls: int  # times no frame arrived for `stall_timeout_s`
    connected: bool  # a live source is open now (files and folders: while they are being read)
    capture_fps: float
    classify_fps: float
    last_error: str | None

    @property
    def gate_ratio(self) -> float:
        """Classified ÷ captured frames (1.0 with the gate off, or before the first frame)."""
        return self.classified / self.captured if self.captured else 1.0

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


class _Rate:
    """Events per second over a sliding window (not locked: `CameraStats` holds the lock)."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()

    def mark(self, now: float) -> None:
        self._times.append(now)
        self._trim(now)

    def rate(self, now: float) -> float:
        self._trim(now)
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()


class RateMeter:
    """Frames per second over a sliding window, safe from any thread (a pipeline's own figure)."""

    def __init__(self, window_s: float = FPS_WINDOW_S) -> None:
        self._rate = _Rate(window_s)
        self._lock = threading.Lock()

    def mark(self) -> None:
        with self._lock:
            self._rate.mark(time.monotonic())

    def rate(self) -> float:
        with self._lock:
            return self._rate.rate(time.monotonic())


@dataclass
class CameraStats:
    """Thread-safe counters of one camera; writers call the `on_*` methods, readers call `snapshot()`."""

    camera: str
    window_s: float = FPS_WINDOW_S
    captured: int = 0
    gated_out: int = 0
    classified: int = 0
    keepalive: int = 0
    reconnects: int = 0
    stalls: int = 0
    connected: bool = False
    last_error: str | None = None
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _capture_rate: _Rate = field(init=False, repr=False)
    _classify_rate: _Rate = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._capture_rate = _Rate(self.window_s)
        self._classify_rate = _Rate(self.window_s)

    def on_captured(self) -> None:
        with self._lock:
            self.captured += 1
            self._capture_rate.mark(time.monotonic())

    def on_dropped(self, reason: DropReason, count: int = 1) -> None:
        with self._lock:
            self.dropped[reason] += count

    def on_gated_out(self) -> None:
        with self._lock:
            self.gated_out += 1

    def on_classified(self, keepalive: bool = False) -> None:
        with self._lock:
            self.classified += 1
            self.keepalive += int(keepalive)
            self._classify_rate.mark(time.monotonic())

    def on_connected(self, connected: bool) -> None:
        with self._lock:
            self.connected = connected

    def on_reconnect(self, stalled: bool = False) -> None:
        with self._lock:
            self.reconnects += 1
            self.stalls += int(stalled)

    def on_error(self, message: str | None) -> None:
        with self._lock:
            self.last_error = message

    def snapshot(self) -> CameraStatsSnapshot:
        now = time.monotonic()
        with self._lock:
            return CameraStatsSnapshot(
                camera=self.camera,
                captured=self.captured,
                gated_out=self.gated_out,
                classified=self.classified,
                keepalive=self.keepalive,
                dropped=dict(self.dropped),
                reconnects=self.reconnects,
                stalls=self.stalls,
                connected=self.connected,
                capture_fps=self._capture_rate.rate(now),
                classify_fps=self._classify_rate.rate(now),
                last_error=self.last_error,
            )
