"""Per camera: capture + motion gate thread → bounded queue (drop oldest) → classify + publish.

The capture thread runs the camera's motion gate, so only frames with change (or a keep-alive, or a pending
snapshot) enter the queue. Classification runs on the camera's own thread, or on a shared `InferencePool`
whose workers serve every camera in turn. A slow classifier never makes memory grow: the queue keeps the
newest frames and counts what it dropped (`stats.dropped["queue_full"]`).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from camfleet_contract.envelope import encode_frame, new_header
from camfleet_contract.images import encode_jpeg
from camfleet_contract.messages import Event, Prediction, to_json
from camfleet_contract.runtime import Classification, ClassifierRuntime
from camfleet_contract.topics import Topics

from .capture import CapturedFrame, CaptureError, FrameSource
from .config import CameraSettings
from .gate import GateDecision, MotionGate
from .mqtt import Publisher
from .regions import RegionCropper
from .stats import CameraStats
from .uploads import REASON_OF, Result, UploadPolicy, camera_rules

log = logging.getLogger(__name__)

FPS_WINDOW_S = 10.0
ERROR_LOG_INTERVAL_S = 30.0


@dataclass(frozen=True)
class GatedFrame:
    """A frame that passed the gate, with the gate's verdict (motion score and regions for the events)."""

    frame: CapturedFrame
    decision: GateDecision = field(default_factory=lambda: GateDecision(classify=True, reason="off"))

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
        self.stats = source.stats  # shared with the source: capture, gate, queue and inference count into one
        self.queue = FrameQueue(queue_size, self.stats)
        self.gate = MotionGate(camera.gate)
        # (classifier, cropper) per binding; empty = every active classifier on the whole frame
        self._bindings = [(b.classifier, RegionCropper(b.region)) for b in camera.classifiers]
        self._whole = RegionCropper(None)
        self._missing: set[str] = set()  # bound classifiers without an active model, logged once each
        self._snapshot_pending = threading.Event()  # a snapshot passes the gate
        self._pool: InferencePool | None = None
        self.meter = RateMeter()
        self.processed = 0
        self.events_published = 0
        self.frames_published = 0
        self.error: str | None = None
        self._event_topic = identity.topics.event(identity.site, camera.name)
        self._frame_topic = identity.topics.frame(identity.site, camera.name)
        self.uploads = UploadPolicy(camera_rules(camera.uploads, camera.upload_interval_s))
        self.on_latency: Callable[[str, str, float], None] | None = None  # (camera, classifier, seconds): metrics
        # (classifier, version, top-1 probability, anomaly): a new model's first frames (swap_watch)
        self.on_classified: Callable[[str, str, float, bool], None] | None = None
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
        self._snapshot_pending.set()
        self.uploads.request_snapshot()

    def start(self, pool: InferencePool | None = None) -> None:
        """Start the capture thread, and an inference thread of its own unless a shared `pool` classifies."""
        self._stop.clear()
        self._capture_done.clear()
        self._threads = [threading.Thread(target=self._capture_loop, name=f"capture-{self.name}", daemon=True)]
        if pool is None:
            self._threads.append(threading.Thread(target=self._infer_loop, name=f"infer-{self.name}", daemon=True))
        for thread in self._threads:
            thread.start()
        if pool is not None:
            self._pool = pool
            pool.add(self)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop both threads; the capture thread releases its source itself (never from under a blocked read)."""
        self._stop.set()
        if self._pool is not None:
            self._pool.remove(self)
            self._pool = None
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
        if self._pool is not None:  # the pool's workers drain the queue
            deadline = None if timeout is None else time.monotonic() + timeout
            while (len(self.queue) or self._pool.busy(self)) and (deadline is None or time.monotonic() < deadline):
                self._capture_done.wait(0.05)

    # ------------------------------------------------------------------ threads

    def _capture_loop(self) -> None:
        try:
            wait_unless = None if self.source.live else self._stop
            for frame in self.source.frames(self._stop):
                decision = self.gate.check(frame.rgb)
                if not decision.classify and not self._snapshot_pending.is_set():
                    self.stats.on_gated_out()
                    continue
                self._snapshot_pending.clear()
                self.queue.put(GatedFrame(frame, decision), wait_unless)
        except CaptureError as exc:
            self.error = str(exc)
            self.stats.on_error(self.error)
            log.error("camera %s stopped: %s", self.name, exc)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self.stats.on_error(self.error)
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
            self.process_safely(frame)

    def process_safely(self, item: GatedFrame) -> None:
        """`process`, logging (rate-limited) instead of raising: the inference threads must go on."""
        try:
            self.process(item.frame, item.decision)
        except Exception:
            self._log_error("processing a frame failed")

    # ------------------------------------------------------------------ work

    def _work(self) -> list[tuple[str, ClassifierRuntime, RegionCropper]]:
        """What to run on this frame: the camera's bindings that have an active model, or every active model."""
        active = self._runtimes()
        if not self._bindings:
            return [(name, rt, self._whole) for name, rt in sorted(active.items())]
        work = []
        for name, cropper in self._bindings:
            runtime = active.get(name)
            if runtime is None:
                if name not in self._missing:
                    self._missing.add(name)
                    log.warning("camera %s: classifier %r has no active model (yet); skipped", self.name, name)
                continue
            self._missing.discard(name)
            work.append((name, runtime, cropper))
        return work

    def process(self, frame: CapturedFrame, decision: GateDecision | None = None) -> None:
        """Classify with the camera's classifiers (each on its region), publish the events, and the frame when due."""
        gate = decision or GateDecision(classify=True, reason="off")
        results: list[tuple[str, str, Classification]] = []
        for classifier, runtime, cropper in self._work():
            try:
                results.append((classifier, runtime.version, runtime.classify([cropper.crop(frame.rgb)])[0]))
            except Exception:
                self._log_error(f"classifier {classifier}/{runtime.version} failed on a frame")
        ident = self.identity
        frame_id = uuid.uuid4().hex
        payload: bytes | None = None
        if self.on_latency is not None:
            for classifier, _, c in results:
                self.on_latency(self.name, classifier, c.latency_ms / 1000.0)
        if self.on_classified is not None:
            for classifier, version, c in results:
                self.on_classified(classifier, version, c.probability, c.anomaly)
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
                motion=gate.motion,
                motion_regions=gate.regions,
                latency_ms=max(0.0, c.latency_ms),
            )
            if self._publisher.publish(self._event_topic, to_json(event), qos=1):
                self.events_published += 1
        if payload is not None and self._publisher.publish(self._frame_topic, payload, qos=1):
            self.frames_published += 1
        self.processed += 1
        self.meter.mark()
        self.stats.on_classified(keepalive=gate.reason == "keepalive")

    def _log_error(self, what: str) -> None:
        """Log with the traceback, but at most every 30 s per camera so a broken model cannot flood the log."""
        now = time.monotonic()
        if now - self._last_error_log >= ERROR_LOG_INTERVAL_S:
            self._last_error_log = now
            log.exception("camera %s: %s", self.name, what)


class InferencePool:
    """Inference workers shared by every camera: each worker takes the next frame of the next camera in turn.

    A camera is classified by one worker at a time (its events stay in order and its upload state needs no
    lock); with several workers, several cameras are classified at once.
    """

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self._pipelines: list[CameraPipeline] = []
        self._busy: set[int] = set()
        self._next = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._work, name=f"infer-{i}", daemon=True) for i in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    def add(self, pipeline: CameraPipeline) -> None:
        pipeline.queue.on_put = self._wake
        with self._cond:
            self._pipelines.append(pipeline)
            self._cond.notify_all()

    def remove(self, pipeline: CameraPipeline) -> None:
        """Forget a camera; waits until no worker is classifying one of its frames."""
        with self._cond:
            self._pipelines = [p for p in self._pipelines if p is not pipeline]
            while id(pipeline) in self._busy:
                self._cond.wait(0.1)
        pipeline.queue.on_put = None

    def busy(self, pipeline: CameraPipeline) -> bool:
        with self._cond:
            return id(pipeline) in self._busy

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _take(self) -> tuple[CameraPipeline, GatedFrame] | None:
        """The next frame of the next idle camera with one waiting, round-robin (holding the lock)."""
        count = len(self._pipelines)
        for i in range(count):
            pipeline = self._pipelines[(self._next + i) % count]
            if id(pipeline) in self._busy:
                continue
            item = pipeline.queue.get(0)
            if item is not None:
                self._next = (self._next + i + 1) % count
                self._busy.add(id(pipeline))
                return pipeline, item
        return None

    def _work(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                taken = self._take()
                if taken is None:
                    self._cond.wait(0.5)
                    continue
            pipeline, item = taken
            try:
                pipeline.process_safely(item)
            finally:
                with self._cond:
                    self._busy.discard(id(pipeline))
                    self._cond.notify_all()
