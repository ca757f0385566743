"""Pipeline stages without a broker: the drop-oldest queue and one camera's classify + publish step."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from bundles import build_bundle

from camfleet_agent.capture import CapturedFrame, open_source
from camfleet_agent.config import CameraSettings
from camfleet_agent.pipeline import CameraPipeline, FrameQueue, Identity
from camfleet_contract.envelope import decode_frame
from camfleet_contract.messages import Event, from_json
from camfleet_contract.runtime import ClassifierRuntime
from camfleet_contract.signing import public_key_of
from camfleet_contract.topics import Topics


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
    return CapturedFrame(rgb=np.full((48, 64, 3), value, np.uint8), captured_at=datetime.now(UTC), seq=seq)


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
    from camfleet_agent.pipeline import FrameQueue

    def frame(i: int) -> CapturedFrame:
        return CapturedFrame(rgb=np.zeros((2, 2, 3), np.uint8), captured_at=datetime.now(UTC), seq=i)

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
