"""Shared by the benchmarks: a private Mosquitto on loopback, real frames from the shared clip, timing helpers."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CAMFLEET_TEST_DATA", REPO.parent / "shared" / "data"))
CLIP = SHARED_DATA / "video" / "plaza.avi"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


@contextmanager
def mosquitto() -> Iterator[int]:
    """A private broker with persistence off; yields its port."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "m.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000000\n"
            "max_inflight_messages 1000\nmessage_size_limit 10000000\n"
        )
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port)
            yield port
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def clip_frames(limit: int, width: int = 0) -> Iterator:
    """RGB frames of the shared clip (optionally resized to `width`), looping."""
    if not CLIP.exists():
        raise SystemExit(f"the shared clip {CLIP} is missing (set CAMFLEET_TEST_DATA)")
    n = 0
    while n < limit:
        cap = cv2.VideoCapture(str(CLIP))
        while n < limit:
            ok, bgr = cap.read()
            if not ok:
                break
            if width:
                bgr = cv2.resize(bgr, (width, round(bgr.shape[0] * width / bgr.shape[1])), interpolation=cv2.INTER_AREA)
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            n += 1
        cap.release()
