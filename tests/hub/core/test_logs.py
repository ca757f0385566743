"""Logs of a real ``camfleet-hub serve``: with ``log.format = "json"`` every line (the hub's and uvicorn's) is one
JSON object; the access log is on only when asked; lines of a request carry its request id (the caller's
``X-Request-ID`` when well-formed, else a fresh one, returned in the response)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.polling import wait_for


def _serve(tmp_path: Path, port: int, mqtt_port: int, access_log: bool) -> tuple[subprocess.Popen[bytes], Path]:
    cfg = tmp_path / "hub.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[http]\nport = {port}\n'
        f"[mqtt]\nembedded = false\nport = {mqtt_port}\n[ingest]\nenabled = false\n"
        '[auth]\nadmin_password = "admin-password-1"\n'
        f'[log]\nformat = "json"\naccess_log = {"true" if access_log else "false"}\n'
    )
    log = tmp_path / "hub.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "camfleet_hub", "serve", "--config", str(cfg)], stdout=out, stderr=out
        )
    return proc, log


def _lines(log: Path) -> list[dict[str, object]]:
    out = []
    for line in log.read_text().splitlines():
        if line.startswith("camfleet hub running at"):
            continue  # the one banner printed (not logged) for people at a terminal
        out.append(json.loads(line))  # fails the test on any line that is not JSON
    return out


@pytest.mark.parametrize("access_log", [True, False])
def test_json_logs_with_request_ids(tmp_path: Path, free_port, mosquitto, access_log: bool) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    proc, log = _serve(tmp_path, port, mosquitto.port, access_log)
    base = f"http://127.0.0.1:{port}/api/v1"
    try:

        def up() -> bool:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, "the hub to answer", 90)
        given = httpx.post(f"{base}/auth/login", json={"username": "admin", "password": "wrong-password"},
                           headers={"X-Request-ID": "req-abc.123"})  # fmt: skip
        assert given.status_code == 401 and given.headers["x-request-id"] == "req-abc.123"
        made = httpx.get(f"{base}/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
        rid = made.headers["x-request-id"]
        assert rid != "bad id\twith spaces" and len(rid) == 32
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    lines = _lines(log)
    assert {"ts", "level", "logger", "request_id", "message"} <= set(lines[0])
    access = [r for r in lines if r["logger"] == "uvicorn.access"]
    if not access_log:
        assert access == []
        return
    assert any(r["request_id"] == "req-abc.123" and "/auth/login" in str(r["message"]) for r in access), access
    assert any(r["request_id"] == rid and "/healthz" in str(r["message"]) for r in access), access
    # uvicorn's own lines (start-up, shutdown) are in the same format, outside any request
    assert any(str(r["logger"]).startswith("uvicorn.error") and r["request_id"] is None for r in lines)


def test_hub_secrets_are_never_printed() -> None:
    from camfleet_contract.config import load_config
    from camfleet_hub.core.config import ENV_PREFIX, HubSettings, reveal

    env = {
        "CAMFLEET_HUB__MQTT__PASSWORD": "mqtt-s3cret",
        "CAMFLEET_HUB__STORE__ACCESS_KEY": "store-access",
        "CAMFLEET_HUB__STORE__SECRET_KEY": "store-s3cret",
        "CAMFLEET_HUB__AUTH__ADMIN_PASSWORD": "admin-s3cret",
        "CAMFLEET_HUB__IMPORTS__SEARCH_API_KEY": "search-s3cret",
    }
    s = load_config(HubSettings, None, ENV_PREFIX, env)
    for text in (repr(s), str(s), s.model_dump_json(), str(s.model_dump())):
        for secret in env.values():
            assert secret not in text
    assert reveal(s.mqtt.password) == "mqtt-s3cret" and reveal(s.auth.admin_password) == "admin-s3cret"
