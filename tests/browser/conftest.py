"""Browser-test fixtures: a real hub process (``python -m camfleet_hub serve``) on the session Mosquitto."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.polling import unique


@pytest.fixture
def start_hub(tmp_path: Path, mosquitto, free_port) -> Iterator[Callable[..., str]]:  # type: ignore[no-untyped-def]
    """``start_hub(admin_password, extra_toml="", root=None)`` starts a hub with its own data dir and MQTT topic root
    (``root``, or a unique one) and returns its URL once /health answers; every hub started is stopped afterwards."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(admin_password: str, extra_toml: str = "", root: str | None = None) -> str:
        port = free_port()
        home = tmp_path / unique("hub-")
        home.mkdir()
        cfg = home / "hub.toml"
        cfg.write_text(
            f'data_dir = "{home / "data"}"\n[http]\nport = {port}\n'
            f'[mqtt]\nembedded = false\nport = {mosquitto.port}\nroot = "{root or unique("b")}"\n'
            f'client_id = "{unique("hub-")}"\n'
            f'[auth]\nadmin_password = "{admin_password}"\n{extra_toml}'
        )
        log_path = home / "hub.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "camfleet_hub", "serve", "--config", str(cfg)], stdout=log, stderr=log
            )
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            try:
                if httpx.get(f"{url}/api/v1/health").status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the hub did not answer /health within 60 s"
            time.sleep(0.3)

    try:
        yield start
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
