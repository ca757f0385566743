"""The first README command's program: the all-in-one demo runs the loop and stops cleanly by itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def test_demo_runs_the_loop_and_stops(tmp_path: Path, free_port) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "camfleet_hub",
            "demo",
            "--data-dir",
            str(tmp_path / "demo"),
            "--port",
            str(free_port()),
            "--mqtt-port",
            str(free_port()),
            "--exit-after-events",
            "3",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "imported the sample" in out and '"dress": 15' in out
    assert "training: succeeded" in out
    assert "event shelf/clothing v1:" in out  # the agent runs the site model it pulled
    assert "stopped agent" in out and "stopped hub" in out
    assert "skipped" not in out  # the shipped sample is clean
