"""Frame sources: video files, image folders, RTSP/HTTP streams and USB cameras, paced to a capture rate.

Every source yields `CapturedFrame`s (RGB uint8 + UTC capture time) from `frames(stop)` until `stop` is set,
the source ends (a file or folder without `loop`), or it fails for good (`CaptureError`).
Files and folders are replayed one frame per tick (a stand-in camera at the configured rate); live
sources are read continuously so their buffers never lag, and one frame per tick is kept.
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

log = logging.getLogger(__name__)

SourceKind = Literal["file", "folder", "stream", "usb"]
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://")
BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 30.0
STREAM_TIMEOUT_MS = 10_000


class CaptureError(RuntimeError):
    """A source that cannot deliver frames at all (missing file, folder without any readable image)."""


@dataclass(frozen=True)
class CapturedFrame:
    """One captured frame."""

    rgb: np.ndarray
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

    def __init__(self, source: str, fps: float, loop: bool = True, clock: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self.fps = fps
        self.loop = loop
        self.clock = clock
        self._seq = 0

    def _stamp(self, rgb: np.ndarray) -> CapturedFrame:
        self._seq += 1
        return CapturedFrame(rgb=rgb, captured_at=datetime.now(UTC), seq=self._seq)

    @abstractmethod
    def frames(self, stop: threading.Event) -> Iterator[CapturedFrame]:
        """Paced, stamped frames until `stop` is set or a non-looping source ends."""

    def close(self) -> None:  # noqa: B027 - an optional hook: most sources hold nothing open
        """Release whatever the source holds open."""


def _bgr_to_rgb(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


class FolderSource(FrameSource):
    """Replays the images of a folder in file-name order; unreadable files are skipped with a warning."""

    def __init__(self, source: str, fps: float, loop: bool = True, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(source, fps, loop, clock)
        self.folder = Path(source).expanduser()
        self._warned: set[str] = set()

    def _files(self) -> list[Path]:
        try:
            entries = sorted(p for p in self.folder.iterdir() if p.is_file() and not p.name.startswith("."))
        except OSError as exc:
            raise CaptureError(f"source={self.source!r}: cannot list folder ({exc})") from None
        return entries

    def _read(self, path: Path) -> np.ndarray | None:
        try:
            return decode_image(path.read_bytes())
        except (ImageError, OSError) as exc:
            if path.name not in self._warned:  # once per file, not once per replay
                self._warned.add(path.name)
                log.warning("camera source %s: skipping %s: %s", self.source, path.name, exc)
            return None

    def frames(self, stop: threading.Event) -> Iterator[CapturedFrame]:
        pacer = Pacer(self.fps, self.clock)
        while not stop.is_set():
            delivered = 0
            for path in self._files():
                rgb = self._read(path)
                if rgb is None:
                    continue
                if not pacer.wait(stop):
                    return
                pacer.tick()
                delivered += 1
                yield self._stamp(rgb)
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
    ) -> None:
        super().__init__(source, fps, loop, clock)
        self.kind = kind
        self.live = kind != "file"
        self._cap: cv2.VideoCapture | None = None
        self._lock = threading.Lock()

    def _open(self) -> cv2.VideoCapture | None:
        if self.kind == "file":
            cap = cv2.VideoCapture(self.source)
        else:  # bounded waits, so a dead camera is noticed and reconnected instead of hanging the thread
            target: str | int = int(self.source) if self.kind == "usb" else self.source
            timeouts = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                STREAM_TIMEOUT_MS,
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                STREAM_TIMEOUT_MS,
            ]
            cap = cv2.VideoCapture(target, cv2.CAP_ANY, timeouts)
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
                yield self._stamp(_bgr_to_rgb(frame))
            self._release()
            if delivered == 0:
                raise CaptureError(f"source={self.source!r}: no decodable frame in the video file")
            if not self.loop:
                return

    def _live_frames(self, stop: threading.Event) -> Iterator[CapturedFrame]:
        pacer = Pacer(self.fps, self.clock)
        backoff = BACKOFF_START_S
        while not stop.is_set():
            cap = self._open()
            if cap is None:
                log.warning("camera source %s: cannot open, retrying in %.0f s", self.source, backoff)
                if stop.wait(backoff):
                    return
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            log.info("camera source %s: opened", self.source)
            while not stop.is_set():
                if not cap.grab():  # keep draining so the frame we keep is the latest
                    log.warning("camera source %s: read failed, reconnecting in %.0f s", self.source, backoff)
                    break
                if not pacer.due():
                    continue
                ok, frame = cap.retrieve()
                if not ok or frame is None:
                    log.warning("camera source %s: decode failed, reconnecting in %.0f s", self.source, backoff)
                    break
                backoff = BACKOFF_START_S
                pacer.tick()
                yield self._stamp(_bgr_to_rgb(frame))
            self._release()
            if stop.wait(backoff):
                return
            backoff = min(backoff * 2, BACKOFF_MAX_S)


def open_source(source: str, fps: float, loop: bool = True, clock: Callable[[], float] = time.monotonic) -> FrameSource:
    """The right FrameSource for a camera's `source` string (`clock` is injectable for tests)."""
    kind = source_kind(source)
    if kind == "folder":
        return FolderSource(source, fps, loop, clock)
    return VideoSource(source, fps, loop, kind=kind, clock=clock)
