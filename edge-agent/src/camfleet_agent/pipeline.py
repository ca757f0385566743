"""Per camera: capture + motion gate + model inputs thread → bounded queue (drop oldest) → classify + publish.

The capture thread runs the camera's motion gate, so only frames with change (or a keep-alive, or a pending
snapshot) enter the queue (`frame_queue`), each with its classifiers' model inputs (crop, resize, normalise) made
there too, so ONNX Runtime's threads never wait on preprocessing. Classification runs on the camera's own thread,
or on a shared `InferencePool` whose workers serve every camera in turn. A slow classifier never makes memory
grow: the queue keeps the newest frames and counts what it dropped (`stats.dropped["queue_full"]`).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

from camfleet_contract.messages import to_json
from camfleet_contract.runtime import ClassifierRuntime

from .capture import CapturedFrame, CaptureError, FrameSource
from .config import CameraSettings
from .events import ClassifierResult, Identity, event_of, frame_message
from .frame_queue import FrameQueue, GatedFrame, PreparedInput
from .gate import GateDecision, MotionGate
from .inference_pool import InferencePool
from .mqtt import Publisher
from .regions import RegionCropper
from .stats import RateMeter
from .uploads import Result, UploadPolicy, camera_rules

log = logging.getLogger(__name__)

ERROR_LOG_INTERVAL_S = 30.0


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
        # One inference thread: the capture thread makes the model inputs, overlapping with the model's runs. Several
        # workers: they make them, side by side, and the capture thread (decoding) stops being the narrow part.
        self._prepare_on_capture = True
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
        self._prepare_on_capture = pool is None or pool.workers < 2
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
                decision = self.gate.check(frame.bgr)
                if not decision.classify and not self._snapshot_pending.is_set():
                    self.stats.on_gated_out()
                    continue
                self._snapshot_pending.clear()
                inputs = self._prepare(frame) if self._prepare_on_capture else ()
                self.queue.put(GatedFrame(frame, decision, inputs), wait_unless)
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
        self.publish_safely(item, self.classify_safely(item))

    def classify_safely(self, item: GatedFrame) -> list[ClassifierResult]:
        """The frame's classifications (any thread, several frames at once); never raises."""
        try:
            return self.classify(item.frame, item.inputs)
        except Exception:
            self._log_error("classifying a frame failed")
            return []

    def publish_safely(self, item: GatedFrame, results: list[ClassifierResult]) -> None:
        """`publish`, logging instead of raising (one thread at a time, in frame order)."""
        try:
            self.publish(item.frame, item.decision, results)
        except Exception:
            self._log_error("publishing a frame's results failed")

    # ------------------------------------------------------------------ work

    def _work(self, log_missing: bool = True) -> list[tuple[str, ClassifierRuntime, RegionCropper]]:
        """What to run on this frame: the camera's bindings that have an active model, or every active model
        (the inference side logs a binding without a model, once)."""
        active = self._runtimes()
        if not self._bindings:
            return [(name, rt, self._whole) for name, rt in sorted(active.items())]
        work = []
        for name, cropper in self._bindings:
            runtime = active.get(name)
            if runtime is None:
                if log_missing and name not in self._missing:
                    self._missing.add(name)
                    log.warning("camera %s: classifier %r has no active model (yet); skipped", self.name, name)
                continue
            if log_missing:
                self._missing.discard(name)
            work.append((name, runtime, cropper))
        return work

    def _prepare(self, frame: CapturedFrame) -> tuple[PreparedInput, ...]:
        """Each classifier's model input for the frame; a failure here is left to inference to retry and log."""
        inputs = []
        for classifier, runtime, cropper in self._work(log_missing=False):
            start = time.perf_counter()
            try:
                batch = runtime.prepare([cropper.crop(frame.bgr)], bgr=True)
            except Exception:  # noqa: BLE001 - the inference side prepares it again and logs the error
                continue
            inputs.append(PreparedInput(classifier, runtime, batch, time.perf_counter() - start))
        return tuple(inputs)

    def process(
        self, frame: CapturedFrame, decision: GateDecision | None = None, inputs: tuple[PreparedInput, ...] = ()
    ) -> None:
        """Classify with the camera's classifiers (each on its region), publish the events, and the frame when due."""
        self.publish(frame, decision, self.classify(frame, inputs))

    def publish(self, frame: CapturedFrame, decision: GateDecision | None, results: list[ClassifierResult]) -> None:
        """Events of the frame's results, and the frame when an upload rule says so. Keeps the upload rules'
        state, so frames must come here one at a time and in order."""
        gate = decision or GateDecision(classify=True, reason="off")
        self._report(results)
        rule = self.uploads.decide([Result.of(r.classifier, r.classification) for r in results])
        upload = None
        if rule is not None:
            upload = frame_message(self.identity, self.name, frame, results, rule, self.camera.jpeg_quality)
        frame_id = upload.frame_id if upload is not None else uuid.uuid4().hex
        for result in results:
            event = event_of(self.identity, self.name, frame, frame_id, result, gate)
            if self._publisher.publish(self._event_topic, to_json(event), qos=1):
                self.events_published += 1
        if upload is not None and self._publisher.publish(self._frame_topic, upload.payload, qos=1):
            self.frames_published += 1
        self.processed += 1
        self.meter.mark()
        self.stats.on_classified(keepalive=gate.reason == "keepalive")

    def classify(self, frame: CapturedFrame, inputs: tuple[PreparedInput, ...] = ()) -> list[ClassifierResult]:
        """Every classifier of the camera on its region (with the input the capture thread made, unless its model
        was swapped since); one that fails is logged and left out. Safe on several threads at once."""
        prepared = {p.classifier: p for p in inputs}
        results: list[ClassifierResult] = []
        for classifier, runtime, cropper in self._work():
            ready = prepared.get(classifier)
            try:
                if ready is not None and ready.runtime is runtime:
                    classification = runtime.classify_batch(ready.batch, ready.seconds)[0]
                else:
                    classification = runtime.classify([cropper.crop(frame.bgr)], bgr=True)[0]
            except Exception:
                self._log_error(f"classifier {classifier}/{runtime.version} failed on a frame")
                continue
            results.append(ClassifierResult(classifier, runtime.version, classification))
        return results

    def _report(self, results: list[ClassifierResult]) -> None:
        """Latency to the metrics and each verdict to the swap watch (a new model's first frames)."""
        if self.on_latency is not None:
            for r in results:
                self.on_latency(self.name, r.classifier, r.classification.latency_ms / 1000.0)
        if self.on_classified is not None:
            for r in results:
                self.on_classified(r.classifier, r.version, r.classification.probability, r.classification.anomaly)

    def _log_error(self, what: str) -> None:
        """Log with the traceback, but at most every 30 s per camera so a broken model cannot flood the log."""
        now = time.monotonic()
        if now - self._last_error_log >= ERROR_LOG_INTERVAL_S:
            self._last_error_log = now
            log.exception("camera %s: %s", self.name, what)
