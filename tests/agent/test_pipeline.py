"""Pipeline stages without a broker: the drop-oldest queue and one camera's classify + publish step."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bundles import build_bundle

from camfleet_agent.capture import CapturedFrame, open_source
from camfleet_agent.config import CameraSettings
from camfleet_agent.events import ClassifierResult, Identity
from camfleet_agent.frame_queue import FrameQueue, GatedFrame
from camfleet_agent.inference_pool import InferencePool
from camfleet_agent.pipeline import CameraPipeline
from camfleet_contract.envelope import decode_frame
from camfleet_contract.messages import Event, from_json
from camfleet_contract.runtime import ClassifierRuntime
from camfleet_contract.signing import public_key_of
from camfleet_contract.topics import Topics
from tests.support.polling import wait_for


class Recorder:
    """An in-memory Publisher: keeps what the pipeline publishes."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, int, bool]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        self.messages.append((topic, payload, qos, retain))
        return True

    def on(self, suffix: str) -> list[bytes]:
        return [m[1] for m in self.messages if m[0].endswith(suffix)]


def frame(seq: int, value: int = 0) -> CapturedFrame:
    return CapturedFrame(bgr=np.full((48, 64, 3), value, np.uint8), captured_at=datetime.now(UTC), seq=seq)


def test_queue_drops_the_oldest_and_counts() -> None:
    q = FrameQueue(maxsize=3)
    for i in range(1, 6):
        q.put(frame(i))
    assert q.dropped == 2 and len(q) == 3
    assert [q.get(0.01).seq for _ in range(3)] == [3, 4, 5]  # type: ignore[union-attr]
    assert q.get(0.01) is None


@pytest.fixture
def runtimes(tmp_path: Path, fleet_seed: str, fleet_public: str) -> dict[str, ClassifierRuntime]:
    build_bundle(tmp_path / "a", fleet_seed, classifier="clothes", version="3")
    build_bundle(tmp_path / "b", fleet_seed, classifier="colour", version="9", classes=("red", "green"), model_seed=4)
    return {
        "clothes": ClassifierRuntime(tmp_path / "a", public_key_of(fleet_seed)),
        "colour": ClassifierRuntime(tmp_path / "b", fleet_public),
    }


def make_pipeline(
    runtimes: dict[str, ClassifierRuntime], interval: float, source: str
) -> tuple[CameraPipeline, Recorder]:
    camera = CameraSettings(name="cam", source=source, upload_interval_s=interval, jpeg_quality=80)
    rec = Recorder()
    pipeline = CameraPipeline(
        camera, open_source(source, 100, loop=False), lambda: runtimes, rec, Identity("s1", "a1", Topics())
    )
    return pipeline, rec


def test_every_frame_and_classifier_gives_an_event_and_frames_follow_the_policy(
    runtimes: dict[str, ClassifierRuntime], image_folder: Path
) -> None:
    pipeline, rec = make_pipeline(runtimes, interval=3600, source=str(image_folder))
    for i in range(3):
        pipeline.process(frame(i, value=40 * i))
    events = [from_json(Event, p) for p in rec.on("/event")]
    assert len(events) == 6 and {e.classifier for e in events} == {"clothes", "colour"}
    assert {e.model_version for e in events} == {"3", "9"}
    frames = [decode_frame(p) for p in rec.on("/frame")]
    assert len(frames) == 1  # the first frame is a sample; the next is due in an hour
    header, _jpeg = frames[0]
    assert header.reason == "sample" and [p.label for p in header.predictions] == [e.label for e in events[:2]]
    assert {e.frame_id for e in events[:2]} == {header.frame_id}
    assert all(m[2] == 1 and not m[3] for m in rec.messages)  # QoS 1, not retained

    pipeline.request_snapshot()
    pipeline.process(frame(9))
    header, _ = decode_frame(rec.on("/frame")[-1])
    assert header.reason == "request" and (header.width, header.height) == (64, 48)


def test_no_upload_when_interval_is_zero_and_threads_drain_a_finite_source(
    runtimes: dict[str, ClassifierRuntime], image_folder: Path
) -> None:
    pipeline, rec = make_pipeline(runtimes, interval=0, source=str(image_folder))
    pipeline.start()
    pipeline.join(timeout=60)
    pipeline.stop()
    assert pipeline.processed + pipeline.queue.dropped == 3
    assert len(rec.on("/event")) == 2 * pipeline.processed
    assert rec.on("/frame") == []


def test_replayed_sources_wait_instead_of_dropping() -> None:
    """A file can wait for the classifier; a live camera cannot, so its oldest frame is dropped."""
    import threading
    from datetime import UTC, datetime

    import numpy as np

    from camfleet_agent.capture import CapturedFrame
    from camfleet_agent.frame_queue import FrameQueue

    def frame(i: int) -> CapturedFrame:
        return CapturedFrame(bgr=np.zeros((2, 2, 3), np.uint8), captured_at=datetime.now(UTC), seq=i)

    live = FrameQueue(2)
    for i in range(5):
        live.put(frame(i))
    assert live.dropped == 3 and [live.get(0.1).seq for _ in range(2)] == [3, 4]

    replay, stop = FrameQueue(2), threading.Event()
    producer = threading.Thread(target=lambda: [replay.put(frame(i), stop) for i in range(5)])
    producer.start()
    got = []
    while len(got) < 5:
        item = replay.get(5.0)
        assert item is not None, "producer stalled"
        got.append(item.seq)
    producer.join(5)
    assert got == [0, 1, 2, 3, 4] and replay.dropped == 0


def still_then_moving_folder(folder: Path) -> Path:
    """Six frames: three identical, then a dark square appears and stays for three."""
    import cv2

    folder.mkdir()
    rng = np.random.default_rng(3)
    still = np.clip(120 + rng.normal(0, 3, (120, 160, 3)), 0, 255).astype(np.uint8)
    moved = still.copy()
    moved[40:80, 90:130] = 20
    for i, img in enumerate([still, still, still, moved, moved, moved]):
        cv2.imwrite(str(folder / f"{i:02d}.png"), img)
    return folder


def test_gate_classifies_only_frames_with_change_and_events_carry_the_motion(
    runtimes: dict[str, ClassifierRuntime], tmp_path: Path
) -> None:
    source = str(still_then_moving_folder(tmp_path / "cam"))
    camera = CameraSettings.model_validate(
        {"name": "cam", "source": source, "upload_interval_s": 0, "gate": {"method": "diff", "keepalive_s": 0}}
    )
    rec = Recorder()
    pipeline = CameraPipeline(
        camera, open_source(source, 100, loop=False), lambda: runtimes, rec, Identity("s1", "a1", Topics())
    )
    pipeline.start()
    pipeline.join(timeout=60)
    pipeline.stop()
    snap = pipeline.stats.snapshot()
    assert (snap.captured, snap.classified, snap.gated_out) == (6, 2, 4)  # the first frame and the change
    assert snap.gate_ratio == pytest.approx(2 / 6)
    events = [from_json(Event, p) for p in rec.on("/event")]
    assert len(events) == 4  # 2 frames x 2 classifiers
    first, change = events[0], events[-1]
    assert first.motion == 0.0 and first.motion_regions == []
    assert change.motion is not None and change.motion > 0
    x0, y0, x1, y1 = change.motion_regions[0]
    assert abs(x0 - 90 / 160) < 0.06 and abs(x1 - 130 / 160) < 0.06 and abs(y0 - 40 / 120) < 0.06


def test_classifiers_run_on_their_regions(
    runtimes: dict[str, ClassifierRuntime], image_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    camera = CameraSettings.model_validate(
        {
            "name": "cam",
            "source": str(image_folder),
            "upload_interval_s": 0,
            "gate": {"enabled": False},
            "classifiers": [
                {"classifier": "clothes", "region": {"rect": [0.5, 0.0, 1.0, 0.5]}},
                {"classifier": "colour", "region": {"polygon": [[0, 0], [1, 0], [0, 1]]}},
                {"classifier": "not-deployed"},
            ],
        }
    )
    rec = Recorder()
    pipeline = CameraPipeline(
        camera, open_source(str(image_folder), 100, loop=False), lambda: runtimes, rec, Identity("s", "a", Topics())
    )
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)
    # The camera frame is the same picture in OpenCV's BGR order; the model must see what classify sees in RGB.
    pipeline.process(CapturedFrame(bgr=np.ascontiguousarray(rgb[..., ::-1]), captured_at=datetime.now(UTC), seq=1))
    events = {e.classifier: e for e in (from_json(Event, p) for p in rec.on("/event"))}
    assert set(events) == {"clothes", "colour"}  # the classifier without a model is skipped, not fatal
    assert "'not-deployed' has no active model" in caplog.text
    assert events["clothes"].motion is None  # gate off

    def probs(e: Event) -> list[float]:
        return [p.probability for p in e.predictions]

    top_right = runtimes["clothes"].classify([rgb[0:32, 40:80]])[0]
    assert probs(events["clothes"]) == pytest.approx([p.probability for p in top_right.predictions], abs=1e-6)
    whole = runtimes["clothes"].classify([rgb])[0]
    assert probs(events["clothes"]) != pytest.approx([p.probability for p in whole.predictions], abs=1e-6)
    triangle = rgb.copy()
    ys, xs = np.mgrid[0:64, 0:80]
    triangle[(xs / 79 + ys / 63) > 1.02] = 0  # outside the polygon is black
    expected = runtimes["colour"].classify([triangle])[0]
    assert probs(events["colour"]) == pytest.approx([p.probability for p in expected.predictions], abs=0.02)


def test_cameras_share_an_inference_pool(runtimes: dict[str, ClassifierRuntime], image_folder: Path) -> None:
    pool = InferencePool(workers=2)
    pool.start()
    rec = Recorder()
    pipelines = []
    for name in ("a", "b", "c"):
        camera = CameraSettings.model_validate(
            {"name": name, "source": str(image_folder), "upload_interval_s": 0, "gate": {"enabled": False}}
        )
        source = open_source(str(image_folder), 5, loop=False)  # paced: still capturing when threads are listed
        pipelines.append(CameraPipeline(camera, source, lambda: runtimes, rec, Identity("s", "a1", Topics())))
    try:
        for p in pipelines:
            p.start(pool)
        names = {t.name for t in threading.enumerate()}
        assert {"capture-a", "capture-b", "capture-c"} <= names and not names & {"infer-a", "infer-b", "infer-c"}
        for p in pipelines:
            p.join(timeout=60)
    finally:
        for p in pipelines:
            p.stop()
        pool.stop()
    for p in pipelines:
        assert p.processed == 3 and p.stats.snapshot().classified == 3
        events = [from_json(Event, m) for m in rec.on(f"/{p.name}/event")]
        assert len(events) == 6


def test_inputs_made_on_the_capture_thread_give_the_same_events_and_a_swap_in_between_uses_the_new_model(
    runtimes: dict[str, ClassifierRuntime], image_folder: Path, tmp_path: Path, fleet_seed: str
) -> None:
    active = dict(runtimes)
    pipeline, rec = make_pipeline(runtimes, interval=0, source=str(image_folder))
    pipeline = CameraPipeline(pipeline.camera, pipeline.source, lambda: active, rec, Identity("s1", "a1", Topics()))
    rng = np.random.default_rng(7)
    captured = CapturedFrame(
        bgr=rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), captured_at=datetime.now(UTC), seq=1
    )

    inputs = pipeline._prepare(captured)  # what the capture thread queues with the frame
    assert {p.classifier for p in inputs} == {"clothes", "colour"}
    pipeline.process(captured, inputs=inputs)
    prepared = {e.classifier: e for e in (from_json(Event, p) for p in rec.on("/event"))}
    rec.messages.clear()
    pipeline.process(captured)  # prepared on the inference side
    direct = {e.classifier: e for e in (from_json(Event, p) for p in rec.on("/event"))}
    for name in ("clothes", "colour"):
        assert [p.probability for p in prepared[name].predictions] == pytest.approx(
            [p.probability for p in direct[name].predictions], abs=1e-6
        )

    # A new model arrives after the frame's inputs were made: the frame is classified by the new model.
    build_bundle(tmp_path / "c", fleet_seed, classifier="clothes", version="4", model_seed=11)
    active["clothes"] = ClassifierRuntime(tmp_path / "c", public_key_of(fleet_seed))
    rec.messages.clear()
    pipeline.process(captured, inputs=inputs)
    versions = {e.classifier: e.model_version for e in (from_json(Event, p) for p in rec.on("/event"))}
    assert versions == {"clothes": "4", "colour": "9"}


@pytest.mark.parametrize(("workers", "on_capture"), [(None, True), (1, True), (2, False)])
def test_model_inputs_are_made_by_the_capture_thread_only_for_a_single_inference_thread(
    runtimes: dict[str, ClassifierRuntime], image_folder: Path, workers: int | None, on_capture: bool
) -> None:
    """With one inference thread the capture thread makes the inputs (they overlap the model's runs); with several
    workers the workers make them side by side, so the capture thread only decodes. Either way every frame is
    classified by both classifiers."""
    queued: list[GatedFrame] = []

    class Recorded(CameraPipeline):
        def classify_safely(self, item: GatedFrame) -> list[ClassifierResult]:
            queued.append(item)
            return super().classify_safely(item)

    camera = CameraSettings.model_validate(
        {"name": "cam", "source": str(image_folder), "upload_interval_s": 0, "gate": {"enabled": False}}
    )
    rec = Recorder()
    pipeline = Recorded(
        camera, open_source(str(image_folder), 100, loop=False), lambda: runtimes, rec, Identity("s", "a", Topics())
    )
    pool = InferencePool(workers=workers) if workers else None
    if pool is not None:
        pool.start()
    try:
        pipeline.start(pool)
        pipeline.join(timeout=60)
    finally:
        pipeline.stop()
        if pool is not None:
            pool.stop()
    assert queued and pipeline.processed == len(queued)
    assert {bool(item.inputs) for item in queued} == {on_capture}
    assert len(rec.on("/cam/event")) == 2 * len(queued)


def test_one_camera_frames_classified_side_by_side_publish_in_order(
    runtimes: dict[str, ClassifierRuntime], image_folder: Path
) -> None:
    """Two workers on one camera: its frames run through the models at the same time, yet every event and upload
    leaves in capture order (checked on the events' capture times, from a real pipeline and real models)."""

    class Watched(CameraPipeline):
        """Counts how many of this camera's frames are in the models at once; the first frame is slow."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.running = 0
            self.most = 0
            self.lock = threading.Lock()

        def classify_safely(self, item: GatedFrame) -> list[ClassifierResult]:
            with self.lock:
                self.running += 1
                self.most = max(self.most, self.running)
            try:
                if item.frame.seq == 1:
                    time.sleep(0.3)  # so the next frame overtakes it in the models
                return super().classify_safely(item)
            finally:
                with self.lock:
                    self.running -= 1

    camera = CameraSettings.model_validate(
        {"name": "cam", "source": str(image_folder), "upload_interval_s": 1e-6, "gate": {"enabled": False}}
    )
    rec = Recorder()
    source = open_source(str(image_folder), 100, loop=False)
    pipeline = Watched(camera, source, lambda: runtimes, rec, Identity("s", "a", Topics()))
    pool = InferencePool(workers=2)
    pool.start()
    pool.add(pipeline)  # no capture thread: the frames are queued here, in capture order
    try:
        for seq in range(1, 9):
            pipeline.queue.put(GatedFrame(frame(seq, value=20 * seq)), threading.Event())
        wait_for(lambda: pipeline.processed == 8, "8 frames published")
    finally:
        pool.remove(pipeline)
        pool.stop()
        source.close()
    assert pipeline.most == 2  # frames of one camera did run side by side
    events = [from_json(Event, m) for m in rec.on("/cam/event")]
    assert len(events) == 16
    times = [e.ts for e in events]
    assert times == sorted(times)
    uploads = [decode_frame(m)[0].captured_at for m in rec.on("/cam/frame")]
    assert uploads == sorted(uploads) and len(uploads) == 8
