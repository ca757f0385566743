"""Request bodies are bounded before they are read (a real uvicorn server, raw sockets), and ids above 2^63 are
refused cleanly on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import uvicorn

from camfleet_hub.api import create_app

API = "/api/v1"
MiB = 1024 * 1024
SOCKET_TIMEOUT_S = 30.0  # the old hub waited for the whole body: the test fails on this instead of hanging


@pytest.fixture
def server(sqlite_api, free_port: Callable[[], int]) -> Iterator[tuple[str, int, str]]:  # type: ignore[no-untyped-def]
    """The hub's app served by uvicorn on loopback: (host, port, admin token)."""
    port = free_port()
    config = uvicorn.Config(create_app(sqlite_api.services), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(600):
        if srv.started:
            break
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    try:
        yield "127.0.0.1", port, sqlite_api.admin_token
    finally:
        srv.should_exit = True
        thread.join(timeout=30)


def _status_and_body(sock: socket.socket) -> tuple[int, dict]:  # type: ignore[type-arg]
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(head.split(b" ")[1]), json.loads(body or b"{}")


def _send_head(host: str, port: int, method: str, path: str, headers: dict[str, str]) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=SOCKET_TIMEOUT_S)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", *(f"{k}: {v}" for k, v in headers.items())]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


@pytest.mark.parametrize(
    ("method", "path", "auth"),
    [
        # FastAPI parses a File() body before the route's dependencies run: this one used to spool 200 MiB first.
        ("PUT", f"{API}/models/default", ""),
        ("PUT", f"{API}/models/default", "Bearer not-a-token"),
        ("POST", f"{API}/sites/s/classifiers/c/import", ""),
    ],
)
def test_unauthenticated_200_mib_upload_is_refused_before_it_is_sent(server, method, path, auth) -> None:  # type: ignore[no-untyped-def]
    host, port, _token = server
    headers = {"Content-Type": "multipart/form-data; boundary=xyz", "Content-Length": str(200 * MiB)}
    if auth:
        headers["Authorization"] = auth
    with _send_head(host, port, method, path, headers) as sock:
        sock.sendall(b"--xyz\r\n" + b"\0" * (64 * 1024))  # 64 KiB of the announced 200 MiB, then wait
        status, body = _status_and_body(sock)
    assert status == 401, body


def test_declared_length_over_the_route_limit_is_413_at_once(server) -> None:  # type: ignore[no-untyped-def]
    host, port, token = server
    auth = {"Authorization": f"Bearer {token}"}
    cases = [
        ("POST", f"{API}/classify", "multipart/form-data; boundary=xyz", 200 * MiB, "classify.max_request_bytes"),
        ("POST", f"{API}/sites", "application/json", 64 * MiB, "limits.json_max_bytes"),
        ("PUT", f"{API}/models/default", "multipart/form-data; boundary=xyz", 600 * MiB, "limits.bundle_max_bytes"),
    ]
    for method, path, ctype, size, setting in cases:
        headers = {**auth, "Content-Type": ctype, "Content-Length": str(size)}
        with _send_head(host, port, method, path, headers) as sock:
            status, body = _status_and_body(sock)
        assert status == 413, (path, body)
        assert setting in body["detail"] and str(size) in body["detail"]
    # the anonymous 64 MiB JSON body of the review: refused without reading it, like any other
    with _send_head(host, port, "POST", f"{API}/sites", {"Content-Length": str(64 * MiB)}) as sock:
        assert _status_and_body(sock)[0] == 413


def test_the_older_tools_routes_refuse_in_their_own_shape(server) -> None:  # type: ignore[no-untyped-def]
    """A client written from the old documentation reads ``error_msg``; either spelling of the path has one limit."""
    host, port, token = server
    json_head = {"Content-Type": "application/json"}
    over = str(200 * MiB)
    cases = [
        ("/api/save_data", {**json_head, "Content-Length": "10"}, 401, str),
        ("/api/predict/", {**json_head, "Content-Length": "10"}, 401, list),
        ("/api/save_data/", {**json_head, "Authorization": f"Bearer {token}", "Content-Length": over}, 413, str),
        ("/api/predict", {**json_head, "Authorization": f"Bearer {token}", "Content-Length": over}, 413, list),
    ]
    for path, headers, expected, shape in cases:
        with _send_head(host, port, "POST", path, headers) as sock:
            status, body = _status_and_body(sock)
        assert status == expected, (path, body)
        assert isinstance(body["error_msg"], shape) and body["detail"], (path, body)
        if expected == 413:
            assert "classify.max_request_bytes" in body["detail"]  # not the 1 MiB JSON limit
    # a 20 MiB base64 image through the slash spelling is redirected (307 keeps the body), not refused as too large
    headers = {**json_head, "Authorization": f"Bearer {token}", "Content-Length": str(20 * MiB)}
    with _send_head(host, port, "POST", "/api/predict/", headers) as sock:
        head = sock.recv(4096)
    assert head.split(b" ")[1] == b"307" and b"location: http" in head.lower() and b"/api/predict\r\n" in head


def test_chunked_body_is_cut_off_at_the_limit(server) -> None:  # type: ignore[no-untyped-def]
    host, port, token = server
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    chunk = b"x" * (256 * 1024)
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    with _send_head(host, port, "POST", f"{API}/sites", headers) as sock:
        for _ in range(800):  # up to 200 MiB; the hub must answer long before
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(framed)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        status, body = _status_and_body(sock)
    assert status == 413, body
    assert "limits.json_max_bytes" in body["detail"]
    assert sent < 64 * MiB, f"sent {sent} bytes before the hub answered"


def test_small_bodies_still_pass(sqlite_api) -> None:  # type: ignore[no-untyped-def]
    r = sqlite_api.client.post(f"{API}/sites", json={"name": "fine"})
    assert r.status_code == 201, r.text


HUGE = "99999999999999999999"  # above 2^63 - 1


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"{API}/images/{HUGE}"),
        ("GET", f"{API}/images/{HUGE}/content"),
        ("PATCH", f"{API}/images/{HUGE}"),
        ("GET", f"{API}/models/{HUGE}"),
        ("POST", f"{API}/models/{HUGE}/promote"),
        ("GET", f"{API}/imports/{HUGE}"),
        ("GET", f"{API}/imports/1/items?after={HUGE}"),
        ("POST", f"{API}/jobs/{HUGE}/cancel"),
        ("GET", f"{API}/history/{HUGE}"),
    ],
)
def test_ids_above_2_63_are_404_or_422(api, method: str, path: str) -> None:  # type: ignore[no-untyped-def]
    r = api.client.request(method, path, json={} if method == "PATCH" else None)
    assert r.status_code in (404, 405, 422), (path, r.status_code, r.text)
    assert "Traceback" not in r.text
