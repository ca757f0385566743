"""Web image search behind a small provider interface; the chosen results are imported through the URL importer.

Providers (``imports.search_provider``):

- ``pexels``: the Pexels API (https://www.pexels.com/api/), free key from a Pexels account, sent as the
  ``Authorization`` header; ``GET https://api.pexels.com/v1/search?query=…&per_page=…`` answers JSON
  ``{"photos": [{"url", "alt", "src": {"medium", "large2x", "original"}}]}``. ``imports.search_endpoint``
  overrides the base URL (a proxy, a test server).
- ``fixture``: for tests and offline demos; ``imports.search_endpoint`` is a JSON file path or an http URL
  holding ``[{"thumbnail_url", "image_url", "title", "source_page"}]``; results whose title contains the term
  come first.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from camfleet_hub.core.config import ImportSettings
from camfleet_hub.core.errors import InvalidError, UnavailableError

NOT_CONFIGURED = "no image search provider is configured (set imports.search_provider and imports.search_api_key)"
MAX_RESULTS = 80
MAX_TERM = 200
PEXELS_ENDPOINT = "https://api.pexels.com/v1"


@dataclass(frozen=True)
class SearchResult:
    """One image found: a preview, the full image to import, and where it was found."""

    thumbnail_url: str
    image_url: str
    title: str
    source_page: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


class SearchProvider(Protocol):
    """Searches the web for images; ``search`` raises UnavailableError when the provider cannot answer."""

    name: str

    def search(self, term: str, count: int) -> list[SearchResult]: ...


class PexelsProvider:
    """Pexels image search (free API key)."""

    name = "pexels"

    def __init__(self, api_key: str, endpoint: str | None = None, timeout_s: float = 15.0) -> None:
        self.api_key = api_key
        self.endpoint = (endpoint or PEXELS_ENDPOINT).rstrip("/")
        self.timeout_s = timeout_s

    def search(self, term: str, count: int) -> list[SearchResult]:
        try:
            response = httpx.get(
                f"{self.endpoint}/search",
                params={"query": term, "per_page": count},
                headers={"Authorization": self.api_key},
                timeout=self.timeout_s,
            )
        except httpx.HTTPError as exc:
            raise UnavailableError(f"image search (pexels) failed: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise UnavailableError(f"image search (pexels) answered HTTP {response.status_code}: {response.text[:200]}")
        try:
            photos = response.json().get("photos", [])
            return [
                SearchResult(
                    thumbnail_url=str(p["src"]["medium"]),
                    image_url=str(p["src"].get("large2x") or p["src"]["original"]),
                    title=str(p.get("alt") or ""),
                    source_page=str(p.get("url") or ""),
                )
                for p in photos[:count]
            ]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UnavailableError(f"image search (pexels) gave an unexpected answer: {exc}") from None


class FixtureProvider:
    """Results from a JSON file or URL (tests, offline demos)."""

    name = "fixture"

    def __init__(self, source: str, timeout_s: float = 15.0) -> None:
        self.source = source
        self.timeout_s = timeout_s

    def _load(self) -> Any:
        try:
            if self.source.startswith(("http://", "https://")):
                response = httpx.get(self.source, timeout=self.timeout_s)
                response.raise_for_status()
                return response.json()
            return json.loads(Path(self.source).read_text())
        except (OSError, ValueError, httpx.HTTPError) as exc:
            raise UnavailableError(f"image search (fixture) cannot read {self.source!r}: {exc}") from None

    def search(self, term: str, count: int) -> list[SearchResult]:
        try:
            results = [
                SearchResult(
                    thumbnail_url=str(r["thumbnail_url"]),
                    image_url=str(r["image_url"]),
                    title=str(r.get("title", "")),
                    source_page=str(r.get("source_page", "")),
                )
                for r in self._load()
            ]
        except (KeyError, TypeError) as exc:
            raise UnavailableError(f"image search (fixture) {self.source!r} is malformed: {exc}") from None
        needle = term.lower()
        results.sort(key=lambda r: needle not in r.title.lower())
        return results[:count]


def make_provider(settings: ImportSettings) -> SearchProvider:
    """The configured provider; UnavailableError (503) with a plain message when none is."""
    name = settings.search_provider.strip().lower()
    if name == "pexels":
        if not settings.search_api_key:
            raise UnavailableError(NOT_CONFIGURED)
        return PexelsProvider(
            settings.search_api_key.get_secret_value(), settings.search_endpoint, settings.url_timeout_s
        )
    if name == "fixture":
        if not settings.search_endpoint:
            raise UnavailableError("imports.search_provider='fixture' needs imports.search_endpoint (file or URL)")
        return FixtureProvider(settings.search_endpoint, settings.url_timeout_s)
    if not name:
        raise UnavailableError(NOT_CONFIGURED)
    raise UnavailableError(f"imports.search_provider={name!r} is not known; use 'pexels' or 'fixture'")


def search(settings: ImportSettings, term: str, count: int) -> list[SearchResult]:
    term = term.strip()
    if not term or len(term) > MAX_TERM:
        raise InvalidError(f"q={term[:40]!r}: give a search term of 1 to {MAX_TERM} characters")
    return make_provider(settings).search(term, max(1, min(count, MAX_RESULTS)))
