"""A loopback HTTP server (http.server in a thread) serving test images and misbehaving endpoints.

Routes: ``/img/<name>`` the registered bytes (image/jpeg), ``/missing`` 404, ``/loop`` a redirect to itself,
``/to/<name>`` a redirect to ``/img/<name>``, ``/huge`` an endless image/jpeg body without a length,
``/page.html`` text/html, ``/slow/<name>`` the image after ``slow_s`` seconds, ``/json/<name>`` registered JSON,
``/pexels/search?…`` ``json["pexels"]`` when the Authorization header equals ``json["pexels_key"]``.
Every request path is logged in ``requests``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class LoopbackServer:
    def __init__(self) -> None:
        self.images: dict[str, bytes] = {}
        self.json: dict[str, Any] = {}
        self.requests: list[str] = []
        self.slow_s = 3.0
        self.url = ""

    def image_url(self, name: str) -> str:
        return f"{self.url}/img/{name}"


def _handler(server: LoopbackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *_args: Any) -> None:  # quiet
            pass

        def _send(self, code: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = self.path
            server.requests.append(path)
            try:
                if path.startswith("/img/") and path[5:] in server.images:
                    self._send(200, server.images[path[5:]], "image/jpeg")
                elif path.startswith("/slow/") and path[6:] in server.images:
                    time.sleep(server.slow_s)
                    self._send(200, server.images[path[6:]], "image/jpeg")
                elif path.startswith("/to/"):
                    self._send(302, b"", "text/plain", {"Location": f"/img/{path[4:]}"})
                elif path == "/loop":
                    self._send(302, b"", "text/plain", {"Location": "/loop"})
                elif path == "/page.html":
                    self._send(200, b"<html><body>not an image</body></html>", "text/html; charset=utf-8")
                elif path == "/huge":
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.end_headers()
                    chunk = b"\xff" * 65536
                    for _ in range(2000):  # ~128 MB unless the client hangs up first
                        self.wfile.write(chunk)
                elif path.startswith("/pexels/search?"):  # the Pexels API's shape, for the provider's test
                    if self.headers.get("Authorization") != server.json.get("pexels_key"):
                        self._send(401, b'{"error": "bad key"}', "application/json")
                    else:
                        self._send(200, json.dumps(server.json["pexels"]).encode(), "application/json")
                elif path.startswith("/json/") and path[6:] in server.json:
                    self._send(200, json.dumps(server.json[path[6:]]).encode(), "application/json")
                else:
                    self._send(404, b"not found", "text/plain")
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler


@contextmanager
def loopback_server() -> Iterator[LoopbackServer]:
    state = LoopbackServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, name="loopback-http", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
