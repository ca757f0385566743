"""Frame sources: video files, image folders, RTSP/HTTP streams and USB cameras, paced to a capture rate.

Every source yields `CapturedFrame`s (RGB uint8 + UTC capture time) from `frames(stop)` until `stop` is set,
the source ends (a file or folder without `loop`), or it fails for good (`CaptureError`).
Files and folders are replayed one frame per tick (a stand-in camera at the configured rate); live
sources are read continuously so their buffers never lag, and one frame per tick is kept (the `fps` cap; the
others are counted as `rate_cap` drops). A live source that fails, or delivers no frame for `stall_timeout_s`,
is reopened after an exponential back-off (1 s, 2 s, 4 s ... capped at 30 s; reset by the next frame).
Each source counts what it does in its `stats` (a `CameraStats` the camera's pipeline shares).
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from camfleet_contract.images import ImageError, decode_image

from .stats import CameraStats

log = logging.getLogger(__name__)

SourceKind = Literal["file", "folder", "stream", "usb"]
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://")
BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 30.0
STALL_TIMEOUT_S = 10.0
# One decoder thread per camera: the inference workers' ONNX Runtime threads already take every core, and a
# decoder with a thread per core competes with them (issue 12; docs/BENCHMARKS.md, agent section).
# A single thread decodes 720p H.264 in ~4 ms, far faster than a frame is classified.
DECODE_THREADS = 1


class CaptureError(RuntimeError):
    """A source that cannot deliver frames at all (missing file, folder without any readable image)."""


@dataclass(frozen=True)
class CapturedFrame:
    """One captured frame, in OpenCV's BGR channel order as decoded: the model's input, the gate and JPEGs take
    BGR directly, which saves a whole-frame conversion per frame (~1.5 % of the agent's CPU at 1280 x 720)."""

    bgr: np.ndarray
    captured_at: datetime
    seq: int


def source_kind(source: str) -> SourceKind:
    """Tell what a camera's `source` string points at."""
    if source.strip().isdigit():
        return "usb"
    if source.lower().startswith(STREAM_SCHEMES):
        return "stream"
    path = Path(source).expanduser()
    if path.is_dir():
        return "folder"
    if path.is_file():
        return "file"
    raise CaptureError(f"source={source!r} is neither an existing file or folder, a stream URL nor a USB index")


class Pacer:
    """Spaces ticks `1/fps` apart without bursting after a stall; sleeping wakes early on stop."""

    def __init__(self, fps: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.period = 1.0 / fps
        self._clock = clock
        self._next = clock()

    def due(self) -> bool:
        return self._clock() >= self._next

    def wait(self, stop: threading.Event) -> bool:
        """Sleep until the next tick; False when stopped meanwhile."""
        delay = self._next - self._clock()
        if delay > 0 and stop.wait(delay):
            return False
        return not stop.is_set()

    def tick(self) -> None:
        self._next = max(self._next + self.period, self._clock())


class FrameSource(ABC):
    """Base class: paces, stamps and counts frames; subclasses produce raw RGB frames."""

    live = False  # a live camera keeps producing whether we keep up or not; a replayed file can wait

    def __init__(
        self,
        source: str,
        fps: float,
        loop: bool = True,
        clock: Callable[[], float] = time.monotonic,
        stats: CameraStats | None = None,
    ) -> None:
        self.source = source
        self.fps = fps
        self.loop = loop
        self.clock = clock
        self.stats = stats if stats is not None else CameraStats(source)
        self._seq = 0

    def _stamp(self, bgr: np.ndarray) -> CapturedFrame:
        self._seq += 1
        self.stats.on_captured()
        return CapturedFrame(bgr=bgr, captured_at=datetime.now(UTC), seq=self._seq)

    @abstractmethod
    def frames(self, stop: threading.Event) -> Iterator[CapturedFrame]:
        """Paced, stamped frames until `stop` is set or a non-looping source ends."""

    def close(self) -> None:  # noqa: B027 - an optional hook: most sources hold nothing open
        """Release whatever the source holds open."""


def _as_bgr(frame: np.ndarray) -> np.ndarray:
    """Three-channel BGR as OpenCV decodes most streams; grey and BGRA frames converted."""
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    return frame


class FolderSource(FrameSource):
    """Replays the images of a folder in file-name order; unreadable files are skipped with a warning."""

    def __init__(
        self,
        source: str,
        fps: float,
        loop: bool = True,
        clock: Callable[[], float] = time.monotonic,
        stats: CameraStats | None = None,
    ) -> None:
        super().__init__(source, fps, loop, clock, stats)
        self.folder = Path(source).expanduser()
        self._warned: set[str] = set()

    def _files(self) -> list[Path]:
        try:
            entries = sorted(p for p in self.folder.iterdir() if p.is_file() and not p.name.startswith("."))
        except OSError as exc:
            raise CaptureError(f"source={self.source!r}: cannot list folder ({exc})") from None
        return entries

    def _read(self, path: Path) -> np.ndarray | None:
        try:  # decode_image, not cv2.imread: the same decoder (and EXIF rotation) as the hub and the trainer
            return cv2.cvtColor(decode_image(path.read_bytes()), cv2.COLOR_RGB2BGR)
        except (ImageError, OSError) as exc:
            if path.name not in self._warned:  # once per file, not once per replay
                self._warned.add(path.name)
                self.stats.on_dropped("decode")
                log.warning("camera source %s: skipping %s: %s", self.source, path.name, exc)
            return None

    def frames(self, stop: threading.Event) -> Iterator[CapturedFrame]:
        pacer = Pacer(self.fps, self.clock)
        while not stop.is_set():
            delivered = 0
            for path in self._files():
                bgr = self._read(path)
                if bgr is None:
                    continue
                if not pacer.wait(stop):
                    return
                pacer.tick()
                delivered += 1
                yield self._stamp(bgr)
            if delivered == 0:
                raise CaptureError(f"source={self.source!r}: no readable image in the folder")
            if not self.loop:
                return


class VideoSource(FrameSource):
    """OpenCV VideoCapture: files replay frame by frame; streams and USB reconnect with backoff."""

    def __init__(
        self,
        source: str,
        fps: float,
        loop: bool = True,
        kind: SourceKind = "file",
        clock: Callable[[], float] = time.monotonic,
        stats: CameraStats | None = None,
        stall_timeout_s: float = STALL_TIMEOUT_S,
        backoff_start_s: float = BACKOFF_START_S,
        backoff_max_s: float = BACKOFF_MAX_S,
    ) -> None:
        super().__init__(source, fps, loop, clock, stats)
        self.kind = kind
        self.live = kind != "file"
        self.stall_timeout_s = stall_timeout_s
        self.backoff_start_s = backoff_start_s
        self.backoff_max_s = backoff_max_s
        self._cap: cv2.VideoCapture | None = None
        self._lock = threading.Lock()

    def _open(self) -> cv2.VideoCapture | None:
        if self.kind == "file":
            cap = cv2.VideoCapture(self.source, cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, DECODE_THREADS])
        else:  # bounded waits: a read blocked for stall_timeout_s is a stall, and the stream is reopened
            target: str | int = int(self.source) if self.kind == "usb" else self.source
            timeout_ms = max(1, round(self.stall_timeout_s * 1000))
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
            if self.kind == "stream":  # FFmpeg's option; a USB backend would refuse it
                params += [cv2.CAP_PROP_N_THREADS, DECODE_THREADS]
            cap = cv2.VideoCapture(target, cv2.CAP_ANY, params)
        if not cap.isOpened():
            cap.release()
            return None
        if self.kind != "file":
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        with self._lock:
            self._cap = cap
        return cap

    def _release(self) -> None:
        with self._lock:
            cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()

    def close(self) -> None:
        self._release()

    def frames(self, stop: threading.Event) -> Iterator[CapturedFrame]:
        try:
            if self.kind == "file":
                yield from self._file_frames(stop)
            else:
                yield from self._live_frames(stop)
        finally:
            self._release()

    def _file_frames(self, stop: threading.Event) -> Iterator[CapturedFrame]:
        pacer = Pacer(self.fps, self.clock)
        while not stop.is_set():
            cap = self._open()
            if cap is None:
                raise CaptureError(f"source={self.source!r}: OpenCV cannot open this video file")
            delivered = 0
            while not stop.is_set():
                ok, frame = cap.read()
                if not ok or frame is None:
                    break
                if not pacer.wait(stop):
                    return
                pacer.tick()
                delivered += 1
                yield self._stamp(_as_bgr(frame))
            self._release()
            if delivered == 0:
                raise CaptureError(f"source={self.source!r}: no decodable frame in the video file")
            if not self.loop:
                return

    def _live_frames(self, stop: threading.Event) -> Iterator[CapturedFrame]:
        pacer = Pacer(self.fps, self.clock)
        backoff = self.backoff_start_s
        stats = self.stats
        while not stop.is_set():
            cap = self._open()
            if cap is None:
                log.warning("camera source %s: cannot open, retrying in %.1f s", self.source, backoff)
                stats.on_error(f"cannot open {self.source}")
                if stop.wait(backoff):
                    return
                backoff = min(backoff * 2, self.backoff_max_s)
                continue
            log.info("camera source %s: opened", self.source)
            stats.on_connected(True)
            last_frame = self.clock()
            while not stop.is_set():
                if not cap.grab():  # keep draining so the frame we keep is the latest
                    stalled = self.clock() - last_frame >= self.stall_timeout_s * 0.9
                    what = f"no frame for {self.stall_timeout_s:.0f} s" if stalled else "read failed"
                    log.warning("camera source %s: %s, reconnecting in %.1f s", self.source, what, backoff)
                    stats.on_reconnect(stalled=stalled)
                    stats.on_error(what)
                    break
                last_frame = self.clock()
                if not pacer.due():
                    stats.on_dropped("rate_cap")
                    continue
                ok, frame = cap.retrieve()
                if not ok or frame is None:
                    log.warning("camera source %s: decode failed, reconnecting in %.1f s", self.source, backoff)
                    stats.on_dropped("decode")
                    stats.on_reconnect()
                    break
                backoff = self.backoff_start_s
                pacer.tick()
                yield self._stamp(_as_bgr(frame))
            stats.on_connected(False)
            self._release()
            if stop.wait(backoff):
                return
            backoff = min(backoff * 2, self.backoff_max_s)


def open_source(
    source: str,
    fps: float,
    loop: bool = True,
    clock: Callable[[], float] = time.monotonic,
    *,
    stats: CameraStats | None = None,
    stall_timeout_s: float = STALL_TIMEOUT_S,
    backoff_start_s: float = BACKOFF_START_S,
) -> FrameSource:
    """The right FrameSource for a camera's `source` string (`clock` and the back-off are injectable for tests)."""
    kind = source_kind(source)
    if kind == "folder":
        return FolderSource(source, fps, loop, clock, stats)
    return VideoSource(
        source,
        fps,
        loop,
        kind=kind,
        clock=clock,
        stats=stats,
        stall_timeout_s=stall_timeout_s,
        backoff_start_s=backoff_start_s,
    )
