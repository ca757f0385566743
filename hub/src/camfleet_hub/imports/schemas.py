"""REST bodies of import jobs, their items and web search results."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field, field_validator

from camfleet_contract.topics import validate_name  # a TopicError is a ValueError: pydantic reports it
from camfleet_hub.core.schemas import Public, Request


class ImportSearch(Request):
    term: str = Field(min_length=1, max_length=200, description="what was searched for (kept as the images' origin)")
    urls: list[str] | None = Field(
        default=None, max_length=500, description="the chosen results' image URLs; none = the first `count` results"
    )
    count: int = Field(default=20, ge=1, le=80, description="how many results to import when `urls` is not given")


class ImportRequest(Request):
    """A JSON import: exactly one of ``urls``, ``path`` (server folder, hub admins only) or ``search``."""

    urls: list[str] | None = Field(default=None, max_length=5000, description="http(s) image URLs")
    path: str | None = Field(
        default=None, min_length=1, max_length=4096, description="a folder-per-class directory on the hub's host"
    )
    search: ImportSearch | None = None
    group: str | None = Field(
        default=None, description="put every image in this group (status GROUP); default: folder per class / NEW"
    )

    @field_validator("group")
    @classmethod
    def _group(cls, v: str | None) -> str | None:
        return None if v is None else validate_name(v, "group")


class ImportJobPublic(Public):
    id: int
    site: str
    classifier: str
    kind: str
    status: str = Field(description="queued, running, succeeded, failed or cancelled")
    target_group: str | None
    params: dict[str, Any]
    total: int = Field(description="files in the source (0 until the job has looked)")
    done: int
    counts: dict[str, Any] = Field(description="files per outcome, and `groups`: images added per group")
    message: str | None
    cancel_requested: bool
    created_by: str
    created_at: datetime
    finished_at: datetime | None


class ImportItemPublic(Public):
    id: int
    name: str
    outcome: str = Field(description="imported, duplicate, near_duplicate, previously_deleted or rejected")
    reason: str | None
    sha256: str | None
    image_id: int | None
    thumbnail_url: str | None
    similar_image_id: int | None
    similar_thumbnail_url: str | None
    distance: float | None


class ImportItemsPage(Public):
    items: list[ImportItemPublic]
    total: int = Field(description="items matching the filter, all pages")
    next_after: int | None = Field(description="pass as `after` for the next page; null on the last")


class SearchResultPublic(Public):
    thumbnail_url: str
    image_url: str
    title: str
    source_page: str
