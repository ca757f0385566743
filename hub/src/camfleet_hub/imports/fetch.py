"""Fetch images from a list of URLs for an import: http(s) only, bounded size, time and redirects.

Each URL gives one ``Entry`` with the bytes or the reason it was refused; one bad URL never stops the others.
The content type must say image (or be the generic ``application/octet-stream``); the bytes are checked again by
the importer's decode, so a lying server cannot slip a non-image in.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

from camfleet_hub.imports.sources import Entry

MAX_URLS = 5000
MAX_URL_LEN = 2048
REDIRECTS = {301, 302, 303, 307, 308}
GENERIC_TYPES = {"application/octet-stream", "binary/octet-stream", ""}


@dataclass(frozen=True)
class FetchLimits:
    """``imports.url_*`` settings: per-URL byte cap, total time per URL, redirects followed, private hosts."""

    max_bytes: int
    timeout_s: float
    max_redirects: int
    allow_private: bool = False


class FetchError(Exception):
    """Why one URL gave no image; the message is shown per file."""


def check_url(url: str) -> str:
    """The URL stripped, or FetchError when it is not an absolute http(s) URL."""
    url = url.strip()
    if len(url) > MAX_URL_LEN:
        raise FetchError(f"URL longer than {MAX_URL_LEN} characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchError(f"only http and https URLs can be imported, not {parts.scheme or 'a relative URL'!r}")
    if not parts.hostname:
        raise FetchError("URL has no host")
    return url


Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], list[str]]

NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
NOT_ALLOWED = "address not allowed"  # never the address itself: a refusal must not map the internal network


def system_resolve(host: str) -> list[str]:
    """Every address ``host`` resolves to (one lookup; the caller connects to what it checked)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"cannot resolve host {host!r} ({exc.__class__.__name__})") from None
    return [str(info[4][0]).split("%")[0] for info in infos]


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 transition form carries: mapped, compatible, NAT64, 6to4 or Teredo (client)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in net for net in NAT64) or (address in IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_allowed(address: Address) -> bool:
    """True for a public unicast address, judged on the IPv4 address inside any IPv6 transition form too."""
    if not address.is_global or address.is_multicast:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            return inner.is_global and not inner.is_multicast
    return True


def pinned_address(host: str, allow_private: bool, resolve: Resolver) -> str:
    """Resolve ``host`` once and check every answer; the fetch then connects to the returned address only.

    Checking and connecting on separate look-ups lets DNS rebinding swap a public answer for an internal one.
    """
    try:
        literal: Address | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    answers = [str(literal)] if literal is not None else resolve(host)
    if not answers:
        raise FetchError(f"cannot resolve host {host!r}")
    addresses = []
    for answer in answers:
        try:
            addresses.append(ipaddress.ip_address(answer))
        except ValueError:
            raise FetchError(f"host {host!r}: {NOT_ALLOWED}") from None
    if not allow_private and not all(address_allowed(a) for a in addresses):
        raise FetchError(
            f"host {host!r}: {NOT_ALLOWED}; URL imports reach public hosts only "
            "(set imports.url_allow_private = true to allow internal ones)"
        )
    return str(addresses[0])


def _pinned_request(client: httpx.Client, url: str, address: str) -> httpx.Request:
    """A GET to ``address`` that still names the host: Host header for HTTP, SNI and certificate check for TLS."""
    target = httpx.URL(url)
    host = target.raw_host.decode("ascii")
    host_header = host if target.port is None else f"{host}:{target.port}"
    if ":" in host and not host.startswith("["):
        host_header = f"[{host}]" if target.port is None else f"[{host}]:{target.port}"
    request = client.build_request("GET", target.copy_with(host=address), headers={"Host": host_header})
    if target.scheme == "https":
        request.extensions["sni_hostname"] = host  # httpcore verifies the certificate against this name
    return request


def fetch(client: httpx.Client, url: str, limits: FetchLimits, resolve: Resolver = system_resolve) -> bytes:
    """The body of ``url`` after at most ``max_redirects`` redirects; raises FetchError with the reason.

    Every hop is resolved once, checked, and fetched from exactly the address that was checked.
    """
    deadline = time.monotonic() + limits.timeout_s
    current = check_url(url)
    for _hop in range(limits.max_redirects + 1):
        address = pinned_address(httpx.URL(current).raw_host.decode("ascii"), limits.allow_private, resolve)
        try:
            response = client.send(_pinned_request(client, current, address), stream=True, follow_redirects=False)
            with contextlib.closing(response):
                if response.status_code in REDIRECTS:
                    location = response.headers.get("location")
                    if not location:
                        raise FetchError(f"HTTP {response.status_code} redirect without a Location")
                    current = check_url(urljoin(current, location))
                    continue
                if response.status_code != 200:
                    raise FetchError(f"HTTP {response.status_code} {response.reason_phrase}".strip())
                ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if not ctype.startswith("image/") and ctype not in GENERIC_TYPES:
                    raise FetchError(f"content-type {ctype!r} is not an image")
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > limits.max_bytes:
                    raise FetchError(f"{declared} bytes exceeds the limit of {limits.max_bytes} bytes")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body.extend(chunk)
                    if len(body) > limits.max_bytes:
                        raise FetchError(f"more than {limits.max_bytes} bytes (limit)")
                    if time.monotonic() > deadline:
                        raise FetchError(f"took longer than {limits.timeout_s:g} s")
                return bytes(body)
        except httpx.TimeoutException:
            raise FetchError(f"timed out after {limits.timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            # httpx names the address it connected to; say only the kind of failure
            raise FetchError(f"cannot fetch: {type(exc).__name__}") from None
    raise FetchError(f"more than {limits.max_redirects} redirects")


def iter_urls(urls: list[str], limits: FetchLimits) -> Iterator[Entry]:
    """One entry per URL, fetched one after the other (the importer checks the bytes)."""
    timeout = httpx.Timeout(limits.timeout_s)
    with httpx.Client(timeout=timeout, headers={"User-Agent": "camfleet-hub-import/1"}) as client:
        for url in urls:
            entry = Entry(name=url[:MAX_URL_LEN], origin=url[:MAX_URL_LEN])
            try:
                entry.data = fetch(client, url, limits)
            except FetchError as exc:
                entry.reason = str(exc)
            yield entry
