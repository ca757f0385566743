"""URL imports: one resolution per hop, checked, then connected to that address (no DNS rebinding); internal
addresses in IPv6 transition forms are refused too, and refusals never show the resolved address."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from camfleet_hub.imports.fetch import FetchError, FetchLimits, address_allowed, fetch

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64

INTERNAL = [
    "127.0.0.1",
    "10.1.2.3",
    "169.254.169.254",
    "::1",
    "fc00::1",
    "fe80::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:10.0.0.1",
    "::127.0.0.1",  # IPv4-compatible
    "::a9fe:a9fe",
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of the metadata service
    "64:ff9b:1::a00:1",  # local-use NAT64 of 10.0.0.1
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo whose client is 127.0.0.1 (stored inverted)
]
PUBLIC = ["8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808", "2002:808:808::1"]


@pytest.mark.parametrize("address", INTERNAL)
def test_internal_forms_are_refused(address: str) -> None:
    assert not address_allowed(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert address_allowed(ipaddress.ip_address(address))


class _Handler(BaseHTTPRequestHandler):
    hosts: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        _Handler.hosts.append(self.headers.get("Host", ""))
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", f"http://metadata.camfleet.test:{self.server.server_address[1]}/latest")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(PNG)))
        self.end_headers()
        self.wfile.write(PNG)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    _Handler.hosts = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()


def _limits(allow_private: bool) -> FetchLimits:
    return FetchLimits(max_bytes=1 << 20, timeout_s=10.0, max_redirects=3, allow_private=allow_private)


def test_fetch_connects_to_the_checked_address_and_keeps_the_host(server: int) -> None:
    """The name does not resolve anywhere but in the resolver the check used: only a pinned connection works."""
    looked_up: list[str] = []

    def resolve(host: str) -> list[str]:
        looked_up.append(host)
        return ["127.0.0.1"]

    url = f"http://images.camfleet.test:{server}/a.png"
    with httpx.Client() as client:
        assert fetch(client, url, _limits(allow_private=True), resolve) == PNG
    assert looked_up == ["images.camfleet.test"]  # one look-up, whose answer was connected to
    assert _Handler.hosts == [f"images.camfleet.test:{server}"]


def test_rebinding_answer_is_never_used(server: int) -> None:
    """First answer checked, a second (rebinding) answer would be internal: the fetch never asks again."""
    answers = iter([["127.0.0.1"], ["10.0.0.1"]])

    def resolve(_host: str) -> list[str]:
        return next(answers)

    with httpx.Client() as client:
        assert fetch(client, f"http://rebind.camfleet.test:{server}/a.png", _limits(True), resolve) == PNG
    assert next(answers) == ["10.0.0.1"]  # still unused


@pytest.mark.parametrize("answer", ["::ffff:127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::1", "10.0.0.7"])
def test_refusal_does_not_reveal_the_address(answer: str) -> None:
    with httpx.Client() as client, pytest.raises(FetchError) as err:
        fetch(client, "http://sneaky.camfleet.test/a.png", _limits(False), lambda _h: [answer])
    assert "address not allowed" in str(err.value)
    assert answer not in str(err.value) and "127.0.0.1" not in str(err.value)


def test_a_mixed_answer_is_refused() -> None:
    """One public and one internal answer: refused, whichever the client would have picked."""
    with httpx.Client() as client, pytest.raises(FetchError, match="address not allowed"):
        fetch(client, "http://mixed.camfleet.test/a.png", _limits(False), lambda _h: ["8.8.8.8", "127.0.0.1"])


def test_every_redirect_hop_is_resolved_checked_and_pinned(server: int) -> None:
    """The redirect target goes through the same resolve-check-pin as the first hop (the check is unit-tested above)."""
    seen: list[str] = []

    def resolve(host: str) -> list[str]:
        seen.append(host)
        return ["127.0.0.1"]

    with httpx.Client() as client:
        fetch(client, f"http://images.camfleet.test:{server}/redirect", _limits(True), resolve)
    assert seen == ["images.camfleet.test", "metadata.camfleet.test"]
    assert _Handler.hosts == [f"images.camfleet.test:{server}", f"metadata.camfleet.test:{server}"]
