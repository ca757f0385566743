"""Child processes of the cross-process tests (hub, trainer, agents), with their logs shown when a wait fails."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest


class Procs:
    """``python -m`` children logging into ``logs``; stopped in reverse order of start."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.items: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, *argv: str) -> None:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - the child writes it until stop()
        self.items.append((name, subprocess.Popen([sys.executable, "-m", *argv], stdout=log, stderr=subprocess.STDOUT)))

    def alive(self) -> None:
        """Fail the test, with the child's log, when a child has exited."""
        for name, p in self.items:
            if p.poll() is not None:
                pytest.fail(f"{name} exited with {p.returncode}:\n{self.log(name)}")

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-4000:]

    def wait_for(self, what: str, check: Callable[[], object], timeout: float, interval: float = 0.5) -> object:
        """Poll ``check`` until it answers something truthy, failing early when a child dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.alive()
            value = check()
            if value:
                return value
            time.sleep(interval)
        logs = "\n".join(f"--- {n}\n{self.log(n)}" for n, _ in self.items)
        pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{logs}")

    def stop(self) -> None:
        for _, p in reversed(self.items):
            p.terminate()
        for _, p in reversed(self.items):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
