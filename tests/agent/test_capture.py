"""Frame sources on real data: the plaza clip, a short clip cut from it, and a folder of clothing photos."""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from datetime import UTC
from pathlib import Path

import cv2
import numpy as np
import pytest

from camfleet_agent.capture import (
    DECODE_THREADS,
    CaptureError,
    FolderSource,
    VideoSource,
    open_source,
    source_kind,
)


class FakeClock:
    """A stop event + clock pair that records every requested sleep instead of sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def is_set(self) -> bool:
        return False

    def wait(self, timeout: float) -> bool:
        self.sleeps.append(round(timeout, 6))
        self.now += timeout
        return False


def take(source, count: int, stop: threading.Event | FakeClock | None = None) -> list:  # type: ignore[no-untyped-def]
    return list(itertools.islice(source.frames(stop or threading.Event()), count))


@pytest.fixture(scope="module")
def plaza(test_data: Path) -> Path:
    return test_data / "video" / "plaza.avi"


@pytest.fixture(scope="module")
def short_clip(plaza: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four real plaza frames, downscaled, in an MJPG .avi: a clip short enough to loop over."""
    cap = cv2.VideoCapture(str(plaza))
    path = tmp_path_factory.mktemp("clip") / "short.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (320, 180))
    for _ in range(4):
        ok, frame = cap.read()
        assert ok
        writer.write(cv2.resize(frame, (320, 180), interpolation=cv2.INTER_AREA))
    writer.release()
    cap.release()
    return path


def test_source_kinds(tmp_path: Path, plaza: Path) -> None:
    assert source_kind("0") == "usb"
    assert source_kind("rtsp://10.0.0.1/live") == "stream"
    assert source_kind("http://10.0.0.1/video.mjpg") == "stream"
    assert source_kind(str(tmp_path)) == "folder"
    assert source_kind(str(plaza)) == "file"
    with pytest.raises(CaptureError, match="nope.avi"):
        source_kind(str(tmp_path / "nope.avi"))


def test_video_file_frames_are_rgb_with_utc_times(plaza: Path) -> None:
    frames = take(open_source(str(plaza), fps=100, loop=False), 3)
    assert [f.seq for f in frames] == [1, 2, 3]
    cap = cv2.VideoCapture(str(plaza))
    size = (int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)))
    ok, bgr = cap.read()
    cap.release()
    assert size == (270, 480)  # the carried clip (tests/data/README.md)
    for f in frames:
        assert f.bgr.shape == (*size, 3) and f.bgr.dtype == np.uint8
        assert f.captured_at.tzinfo == UTC
    assert ok and np.array_equal(frames[0].bgr, bgr)  # as OpenCV decodes it: BGR, not converted


def test_video_file_decodes_on_one_thread(plaza: Path) -> None:
    """A decoder thread per core would compete with ONNX Runtime's threads (issue 12: agent ÷ raw ORT)."""
    source = VideoSource(str(plaza), fps=100, loop=False)
    stop = threading.Event()
    frames = source.frames(stop)
    next(frames)
    assert source._cap is not None and source._cap.get(cv2.CAP_PROP_N_THREADS) == DECODE_THREADS == 1
    stop.set()
    frames.close()
    assert source._cap is None


def test_video_file_is_paced_to_fps(plaza: Path) -> None:
    clock = FakeClock()
    frames = take(VideoSource(str(plaza), fps=4, loop=False, clock=clock), 5, clock)
    assert len(frames) == 5
    assert clock.sleeps == [0.25] * 4  # one frame per tick of 1/fps, none in a burst


def test_short_clip_loops(short_clip: Path) -> None:
    frames = take(open_source(str(short_clip), fps=100, loop=True), 9)
    assert len(frames) == 9
    assert frames[0].bgr.shape == (180, 320, 3)
    assert np.array_equal(frames[0].bgr, frames[4].bgr) and np.array_equal(frames[1].bgr, frames[5].bgr)
    assert not np.array_equal(frames[0].bgr, frames[1].bgr)


def test_short_clip_without_loop_ends(short_clip: Path) -> None:
    assert len(take(open_source(str(short_clip), fps=100, loop=False), 50)) == 4


def test_unreadable_video_file_fails(tmp_path: Path) -> None:
    bad = tmp_path / "broken.avi"
    bad.write_bytes(b"RIFF not really a video" * 10)
    with pytest.raises(CaptureError, match="broken.avi"):
        take(open_source(str(bad), fps=100, loop=True), 1)


def test_folder_skips_non_images_in_name_order(image_folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="camfleet_agent.capture")
    frames = take(open_source(str(image_folder), fps=100, loop=False), 10)
    assert len(frames) == 3
    expected = [p for p in sorted(image_folder.iterdir()) if p.suffix == ".jpg"]
    for frame, path in zip(frames, expected, strict=True):
        assert frame.bgr.ndim == 3 and frame.bgr.shape[2] == 3 and frame.bgr.dtype == np.uint8
        assert frame.bgr.shape[:2] == cv2.imread(str(path)).shape[:2]
    assert "01a_notes.txt" in caplog.text


def test_folder_loops_and_is_paced(image_folder: Path) -> None:
    clock = FakeClock()
    frames = take(FolderSource(str(image_folder), fps=2, loop=True, clock=clock), 7, clock)
    assert [f.seq for f in frames] == list(range(1, 8))
    assert np.array_equal(frames[0].bgr, frames[3].bgr) and np.array_equal(frames[2].bgr, frames[5].bgr)
    assert clock.sleeps == [0.5] * 6


def test_folder_without_images_fails(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(CaptureError, match="no readable image"):
        take(open_source(str(tmp_path), fps=100), 1)


def test_stream_reconnects_until_stopped(caplog: pytest.LogCaptureFixture, free_port: Callable[[], int]) -> None:
    """Nothing listens on the port: the source logs, backs off, and returns promptly once stopped."""
    caplog.set_level(logging.WARNING, logger="camfleet_agent.capture")
    port = free_port()
    source = open_source(f"http://127.0.0.1:{port}/video.mjpg", fps=5)
    stop = threading.Event()
    got: list[object] = []
    thread = threading.Thread(target=lambda: got.extend(source.frames(stop)), daemon=True)
    thread.start()
    for _ in range(300):
        if "retrying" in caplog.text:
            break
        thread.join(0.1)
    stop.set()
    thread.join(30)
    assert not thread.is_alive()
    assert got == []
    assert "cannot open" in caplog.text


class StopAfter:
    """A stop event that records each back-off wait and reports 'stopped' after `n` of them."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.waits: list[float] = []

    def is_set(self) -> bool:
        return len(self.waits) >= self.n

    def wait(self, timeout: float) -> bool:
        self.waits.append(round(timeout, 6))
        return self.is_set()


def test_stream_backoff_doubles_up_to_its_cap(free_port: Callable[[], int]) -> None:
    from camfleet_agent.stats import CameraStats

    port = free_port()
    stats = CameraStats("door")
    source = VideoSource(
        f"http://127.0.0.1:{port}/video.mjpg", fps=5, kind="stream", stats=stats, backoff_start_s=0.5, backoff_max_s=3
    )
    stop = StopAfter(6)
    assert list(source.frames(stop)) == []  # type: ignore[arg-type]
    assert stop.waits == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    snap = stats.snapshot()
    assert snap.captured == 0 and not snap.connected and snap.last_error and str(port) in snap.last_error
