"""Bundle downloads: only from the hub's own origin, no larger than announced, with the announced sha256."""

from __future__ import annotations

import hashlib
import logging
import threading

import httpx

from camfleet_contract.messages import ModelAnnouncement

from .errors import ModelUpdateError, TransientUpdateError

log = logging.getLogger(__name__)

DOWNLOAD_ATTEMPTS = 3


class BundleDownloader:
    """Fetches announced bundles from the hub; the hub token goes only to the hub, never to another host."""

    def __init__(
        self,
        hub_url: str,
        *,
        stop: threading.Event,
        http: httpx.Client | None = None,
        backoff_s: float = 1.0,
        token: str | None = None,
    ) -> None:
        self.hub_url = hub_url.rstrip("/")
        self._origin = _origin(httpx.URL(self.hub_url))
        self._stop = stop
        self.backoff_s = backoff_s
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = http or httpx.Client(timeout=httpx.Timeout(60.0, connect=5.0), follow_redirects=False)
        self._owns_http = http is None

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def bundle_url(self, announced: str) -> str:
        """The announced URL resolved against hub_url; refused unless it is on the hub's origin."""
        if announced.startswith("/") and not announced.startswith("//"):
            url = self.hub_url + announced  # keeps a path prefix of hub_url (a hub behind a proxy path)
        elif "://" in announced or announced.startswith("//"):
            url = announced
        else:
            url = f"{self.hub_url}/{announced}"
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, ValueError) as exc:
            raise ModelUpdateError(f"url={announced!r} is not a valid URL ({exc})") from None
        if parsed.scheme not in ("http", "https") or _origin(parsed) != self._origin:
            # Bundles come from the configured hub only: an announcement cannot send the agent elsewhere.
            raise ModelUpdateError(f"url={announced!r} is not on the hub's origin {self.hub_url}")
        return str(parsed)

    def download(self, announcement: ModelAnnouncement) -> bytes:
        """The bundle's bytes, checked; a few quick retries here, the caller's backoff after that."""
        url = self.bundle_url(announcement.url)
        last: Exception | None = None
        for attempt in range(DOWNLOAD_ATTEMPTS):
            if attempt:
                if self._stop.wait(self.backoff_s * attempt):
                    break
            try:
                return self._fetch(url, announcement)
            except TransientUpdateError as exc:
                last = exc
                log.info("model download %s failed (attempt %d): %s", url, attempt + 1, exc)
        raise TransientUpdateError(str(last) if last else "stopped")

    def _fetch(self, url: str, announcement: ModelAnnouncement) -> bytes:
        limit = announcement.size
        digest = hashlib.sha256()
        buf = bytearray()
        try:
            with self._http.stream("GET", url, headers=self._auth) as resp:  # bundle_url: always the hub
                _check_response(url, resp, limit)
                for chunk in resp.iter_bytes():
                    buf += chunk
                    digest.update(chunk)
                    if len(buf) > limit:
                        raise ModelUpdateError(f"bundle is larger than the announced size={limit}")
        except httpx.HTTPError as exc:
            raise TransientUpdateError(f"GET {url} failed: {type(exc).__name__}: {exc}") from None
        if len(buf) != limit:
            raise ModelUpdateError(f"bundle is {len(buf)} bytes, not the announced size={limit}")
        if digest.hexdigest() != announcement.sha256:
            raise ModelUpdateError(f"bundle sha256 {digest.hexdigest()} != announced sha256={announcement.sha256}")
        return bytes(buf)


def _check_response(url: str, resp: httpx.Response, limit: int) -> None:
    """Status and declared length, before reading the body: retry on the hub's trouble, refuse the rest."""
    if resp.status_code in (408, 429) or resp.status_code >= 500:
        raise TransientUpdateError(f"GET {url} answered {resp.status_code}")
    if resp.status_code in (401, 403):
        raise ModelUpdateError(
            f"GET {url} answered {resp.status_code}: api_token must be a valid viewer token of this site"
        )
    if resp.status_code != 200:
        raise ModelUpdateError(f"GET {url} answered {resp.status_code}")
    declared = resp.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ModelUpdateError(f"bundle is {declared} bytes, more than the announced size={limit}")


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    """scheme, host, port (the default one when the URL names none): what 'the hub's origin' means."""
    port = url.port if url.port is not None else (443 if url.scheme == "https" else 80)
    return url.scheme, url.host.lower(), port
