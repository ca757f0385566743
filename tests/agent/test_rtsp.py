"""A real RTSP stream on loopback (GStreamer's RTSP server serving the test clip): frames arrive; the server
stalls (SIGSTOP) and the source notices and reconnects; the server is killed and restarted and the source
reconnects and goes on."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import pytest

from camfleet_agent.capture import CapturedFrame, VideoSource
from camfleet_agent.stats import CameraStats

SERVER = Path(__file__).with_name("rtsp_server.py")
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's python3-gi lives there, not in the virtualenv
PACKAGES = "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-base"


class RtspServer:
    """The helper server as a child process; `start` waits for its "ready" line."""

    def __init__(self, clip: Path, port: int, log: Path) -> None:
        self.clip, self.port, self.log = clip, port, log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam"

    def start(self) -> None:
        out = self.log.open("ab")
        cmd = [SYSTEM_PYTHON, str(SERVER), "--port", str(self.port), "--clip", str(self.clip)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=out)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # bounded: the child prints "ready" or exits
        if line.strip() != b"ready":
            self.proc.wait(10)
            pytest.fail(f"RTSP server did not start: {self.log.read_text()[-2000:]}")

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def rtsp_clip(test_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plaza test clip as MJPG, 480x272 (RTP/JPEG wants multiples of 8), looped to 48 s at 10 frames/s."""
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"], check=False)
    if probe.returncode != 0:
        pytest.fail(f"GStreamer's RTSP server is missing (as root: apt-get install {PACKAGES})")
    cap = cv2.VideoCapture(str(test_data / "video" / "plaza.avi"))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.resize(bgr, (480, 272), interpolation=cv2.INTER_AREA))
    cap.release()
    path = tmp_path_factory.mktemp("rtsp") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (480, 272))
    for _ in range(8):
        for f in frames:
            writer.write(f)
    writer.release()
    return path


@pytest.fixture
def rtsp_server(rtsp_clip: Path, tmp_path: Path, free_port: Callable[[], int]) -> Iterator[RtspServer]:
    server = RtspServer(rtsp_clip, free_port(), tmp_path / "rtsp.log")
    server.start()
    try:
        yield server
    finally:
        server.kill()


class Reader:
    """Reads a source in a thread, keeping every frame."""

    def __init__(self, source: VideoSource) -> None:
        self.source = source
        self.frames: list[CapturedFrame] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for frame in self.source.frames(self.stop):
            self.frames.append(frame)

    def wait_for(self, what: str, cond: Callable[[], bool], limit_s: float = 60.0) -> None:
        for _ in range(int(limit_s * 10)):
            if cond():
                return
            self.thread.join(0.1)
        pytest.fail(f"timed out waiting for {what}: {self.source.stats.snapshot()}")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


def test_rtsp_frames_stall_kill_restart(rtsp_server: RtspServer) -> None:
    stats = CameraStats("door")
    source = VideoSource(
        rtsp_server.url, fps=5, kind="stream", stats=stats, stall_timeout_s=2, backoff_start_s=0.2, backoff_max_s=1
    )
    reader = Reader(source)
    try:
        reader.wait_for("the first frames", lambda: len(reader.frames) >= 5)
        assert reader.frames[0].bgr.shape == (272, 480, 3)
        assert stats.snapshot().connected

        rtsp_server.signal(signal.SIGSTOP)  # the server hangs: the connection stays open, no frame comes
        reader.wait_for("a stall", lambda: stats.snapshot().stalls >= 1)
        rtsp_server.signal(signal.SIGCONT)
        seen = len(reader.frames)
        reader.wait_for("frames after the stall", lambda: len(reader.frames) >= seen + 5)

        before = stats.snapshot().reconnects
        rtsp_server.kill()  # a crash: the connection drops
        reader.wait_for("the reconnect attempt", lambda: stats.snapshot().reconnects > before)
        assert not stats.snapshot().connected
        seen = len(reader.frames)
        rtsp_server.start()  # same port, new process
        reader.wait_for("frames after the restart", lambda: len(reader.frames) >= seen + 5)
    finally:
        reader.close()
    snap = stats.snapshot()
    assert snap.stalls >= 1 and snap.reconnects >= 2
    assert snap.captured == len(reader.frames)
    assert snap.dropped["rate_cap"] > 0  # the stream sends 10 frames/s; the camera keeps at most 5
    assert [f.seq for f in reader.frames] == list(range(1, len(reader.frames) + 1))
    assert all(f.bgr.shape == (272, 480, 3) for f in reader.frames)
