"""Per camera: capture thread → bounded queue (drop oldest) → classify + publish thread.

A slow classifier never makes memory grow: the queue keeps the newest frames and counts what it dropped.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from camfleet_contract.envelope import encode_frame, new_header
from camfleet_contract.images import encode_jpeg
from camfleet_contract.messages import Event, Prediction, to_json
from camfleet_contract.runtime import Classification, ClassifierRuntime
from camfleet_contract.topics import Topics

from .capture import CapturedFrame, CaptureError, FrameSource
from .config import CameraSettings
from .mqtt import Publisher
from .uploads import REASON_OF, Result, UploadPolicy, camera_rules

log = logging.getLogger(__name__)

FPS_WINDOW_S = 10.0
ERROR_LOG_INTERVAL_S = 30.0


class FrameQueue:
    """Bounded hand-off between two threads; when full, the oldest frame is dropped and counted."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.dropped = 0
        self._items: deque[CapturedFrame] = deque()
        self._cond = threading.Condition()

    def put(self, item: CapturedFrame, wait_unless: threading.Event | None = None) -> None:
        """Add a frame; when full, drop the oldest (a live camera cannot wait).

        With `wait_unless` (a stop event) wait for room instead: right for replayed files and folders,
        where waiting loses nothing and decoding frames only to drop them wastes the CPU inference needs.
        """
        with self._cond:
            while wait_unless is not None and len(self._items) >= self.maxsize and not wait_unless.is_set():
                self._cond.wait(0.1)
            if len(self._items) >= self.maxsize:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify_all()

    def get(self, timeout: float) -> CapturedFrame | None:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            item = self._items.popleft() if self._items else None
            self._cond.notify_all()  # room for a producer waiting in put
            return item

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class RateMeter:
    """Frames per second over a sliding window."""

    def __init__(self, window_s: float = FPS_WINDOW_S) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def mark(self) -> None:
        now = time.monotonic()
        with self._lock:
            self._times.append(now)
            self._trim(now)

    def rate(self) -> float:
        now = time.monotonic()
        with self._lock:
            self._trim(now)
            if len(self._times) < 2:
                return 0.0
            span = self._times[-1] - self._times[0]
            return (len(self._times) - 1) / span if span > 0 else 0.0

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()


@dataclass(frozen=True)
class Identity:
    """Who publishes: used in topics, events and frame headers."""

    site: str
    agent: str
    topics: Topics


class CameraPipeline:
    """Runs one camera: its capture thread and its classify + publish thread."""

    def __init__(
        self,
        camera: CameraSettings,
        source: FrameSource,
        runtimes: Callable[[], dict[str, ClassifierRuntime]],
        publisher: Publisher,
        identity: Identity,
        queue_size: int = 4,
    ) -> None:
        self.camera = camera
        self.source = source
        self._runtimes = runtimes
        self._publisher = publisher
        self.identity = identity
        self.queue = FrameQueue(queue_size)
        self.meter = RateMeter()
        self.processed = 0
        self.events_published = 0
        self.frames_published = 0
        self.error: str | None = None
        self._event_topic = identity.topics.event(identity.site, camera.name)
        self._frame_topic = identity.topics.frame(identity.site, camera.name)
        self.uploads = UploadPolicy(camera_rules(camera.uploads, camera.upload_interval_s))
        self.on_latency: Callable[[str, str, float], None] | None = None  # (camera, classifier, seconds): metrics
        self._last_error_log = 0.0
        self._stop = threading.Event()
        self._capture_done = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def name(self) -> str:
        return self.camera.name

    @property
    def fps(self) -> float:
        return self.meter.rate()

    def request_snapshot(self) -> None:
        """Upload the next frame, whatever the rules say (a `snapshot` command)."""
        self.uploads.request_snapshot()

    def start(self) -> None:
        self._stop.clear()
        self._capture_done.clear()
        self._threads = [
            threading.Thread(target=self._capture_loop, name=f"capture-{self.name}", daemon=True),
            threading.Thread(target=self._infer_loop, name=f"infer-{self.name}", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop both threads; the capture thread releases its source itself (never from under a blocked read)."""
        self._stop.set()
        if not self._threads:
            self.source.close()
        for thread in self._threads:
            thread.join(timeout)
            if thread.is_alive():
                log.warning(
                    "camera %s: thread %s still blocked after %.0f s; leaving it", self.name, thread.name, timeout
                )
        self._threads = []

    def join(self, timeout: float | None = None) -> None:
        """Wait until a finite source has been fully processed (tests, `loop = false`)."""
        for thread in self._threads:
            thread.join(timeout)

    # ------------------------------------------------------------------ threads

    def _capture_loop(self) -> None:
        try:
            wait_unless = None if self.source.live else self._stop
            for frame in self.source.frames(self._stop):
                self.queue.put(frame, wait_unless)
        except CaptureError as exc:
            self.error = str(exc)
            log.error("camera %s stopped: %s", self.name, exc)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("camera %s: capture failed", self.name)
        finally:
            self.source.close()
            self._capture_done.set()

    def _infer_loop(self) -> None:
        while not self._stop.is_set():
            frame = self.queue.get(timeout=0.5)
            if frame is None:
                if self._capture_done.is_set() and len(self.queue) == 0:
                    return
                continue
            try:
                self.process(frame)
            except Exception:
                self._log_error("processing a frame failed")

    # ------------------------------------------------------------------ work

    def process(self, frame: CapturedFrame) -> None:
        """Classify with every active classifier, publish the events, and the frame when due."""
        results: list[tuple[str, str, Classification]] = []
        for classifier, runtime in sorted(self._runtimes().items()):
            try:
                results.append((classifier, runtime.version, runtime.classify([frame.rgb])[0]))
            except Exception:
                self._log_error(f"classifier {classifier}/{runtime.version} failed on a frame")
        ident = self.identity
        frame_id = uuid.uuid4().hex
        payload: bytes | None = None
        if self.on_latency is not None:
            for classifier, _, c in results:
                self.on_latency(self.name, classifier, c.latency_ms / 1000.0)
        rule = self.uploads.decide([Result.of(classifier, c) for classifier, _, c in results])
        if rule is not None:
            jpeg = encode_jpeg(frame.rgb, quality=self.camera.jpeg_quality)
            height, width = frame.rgb.shape[:2]
            top1: list[Prediction] = [c.predictions[0] for _, _, c in results if c.predictions]
            header = new_header(
                ident.agent,
                ident.site,
                self.name,
                jpeg,
                width,
                height,
                reason=REASON_OF[rule],
                rule=rule,
                predictions=top1,
                captured_at=frame.captured_at,
            )
            frame_id = header.frame_id
            payload = encode_frame(header, jpeg)
        for classifier, version, c in results:
            event = Event(
                frame_id=frame_id,
                ts=frame.captured_at,
                site=ident.site,
                camera=self.name,
                agent=ident.agent,
                classifier=classifier,
                model_version=version,
                label=c.label,
                probability=min(1.0, max(0.0, c.probability)),
                predictions=c.predictions,
                anomaly=c.anomaly,
                anomaly_score=min(1.0, max(0.0, c.anomaly_score)),
                motion=None,
                latency_ms=max(0.0, c.latency_ms),
            )
            if self._publisher.publish(self._event_topic, to_json(event), qos=1):
                self.events_published += 1
        if payload is not None and self._publisher.publish(self._frame_topic, payload, qos=1):
            self.frames_published += 1
        self.processed += 1
        self.meter.mark()

    def _log_error(self, what: str) -> None:
        """Log with the traceback, but at most every 30 s per camera so a broken model cannot flood the log."""
        now = time.monotonic()
        if now - self._last_error_log >= ERROR_LOG_INTERVAL_S:
            self._last_error_log = now
            log.exception("camera %s: %s", self.name, what)
