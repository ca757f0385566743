"""Fetch images from a list of URLs for an import: http(s) only, bounded size, time and redirects.

Each URL gives one ``Entry`` with the bytes or the reason it was refused; one bad URL never stops the others.
The content type must say image (or be the generic ``application/octet-stream``); the bytes are checked again by
the importer's decode, so a lying server cannot slip a non-image in.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

from camfleet_hub.services.imports import Entry

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


def check_public(url: str) -> None:
    """FetchError when the URL's host resolves to a loopback, private, link-local or otherwise internal address.

    A labeller's URL list must not make the hub read its own network (metadata services, admin consoles).
    Every redirect hop is checked again; ``imports.url_allow_private`` lifts the rule for closed networks.
    """
    host = urlsplit(url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"cannot resolve host {host!r} ({exc})") from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not address.is_global or address.is_multicast:
            raise FetchError(
                f"host {host!r} is the internal address {address}; URL imports reach public hosts only "
                "(set imports.url_allow_private = true to allow)"
            )


def fetch(client: httpx.Client, url: str, limits: FetchLimits) -> bytes:
    """The body of ``url`` after at most ``max_redirects`` redirects; raises FetchError with the reason."""
    deadline = time.monotonic() + limits.timeout_s
    current = check_url(url)
    for _hop in range(limits.max_redirects + 1):
        if not limits.allow_private:
            check_public(current)
        try:
            with client.stream("GET", current, follow_redirects=False) as response:
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
            raise FetchError(f"cannot fetch: {type(exc).__name__}: {exc}") from None
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
