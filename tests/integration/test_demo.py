"""The first README command's program: the all-in-one demo runs the loop, then Ctrl-C stops it cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def test_demo_runs_the_loop_and_stops_on_ctrl_c(tmp_path: Path, free_port) -> None:
    cmd = [sys.executable, "-m", "camfleet_hub", "demo", "--data-dir", str(tmp_path / "demo")]
    cmd += ["--port", str(free_port()), "--mqtt-port", str(free_port())]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            # the trained model's events, and the frames the upload rules sent waiting in triage with suggestions
            if sum("event shelf/clothing v1:" in line for line in lines) >= 3 and any("triage:" in x for x in lines):
                break
            time.sleep(0.5)
        out = "".join(lines)
        assert proc.poll() is None, f"the demo stopped by itself:\n{out[-4000:]}"
        assert sum("event shelf/clothing v1:" in line for line in lines) >= 3, out[-4000:]
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert proc.wait(timeout=90) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(10)
    out = "".join(lines)
    assert "imported the sample" in out and '"dress": 15' in out
    assert "training: succeeded" in out
    assert "skipped" not in out  # the shipped sample is clean
    assert "motion gate on" in out and "upload rules: anomalous" in out
    triage = next(line for line in lines if "triage:" in line)
    assert "wait in triage with the model's suggestion" in triage
    assert "/ui/sites/demo/classifiers/clothing/triage" in out
    stops = [line.strip() for line in lines if line.strip().startswith("stopped ")]
    assert stops == ["stopped agent", "stopped trainer", "stopped hub"], out[-2000:]
