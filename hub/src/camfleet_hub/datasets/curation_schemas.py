"""Request and response bodies of the curation API (bulk actions, history, undo, group changes, health, detail).

Kept apart from ``schemas.py`` so that parallel work on the other resources does not touch the same file.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, field_validator

from camfleet_contract.topics import validate_name
from camfleet_hub.core.schemas import Public, Request
from camfleet_hub.datasets.models import ImageStatus


class BulkAction(Request):
    ids: list[int] = Field(min_length=1, max_length=5000, description="image ids, all of this classifier")
    action: Literal["move", "delete", "restore"]
    group: str | None = Field(default=None, description="target group name (move only)")
    create_group: bool = Field(default=False, description="move: create the group when it is missing")
    expected_status: ImageStatus | None = Field(
        default=None, description="the status the client saw for every image; 409 when one changed meanwhile"
    )

    @field_validator("group")
    @classmethod
    def _group(cls, v: str | None) -> str | None:
        return None if v is None else validate_name(v, "group")


class HistoryPublic(Public):
    id: int
    classifier: str
    action: str
    summary: str
    username: str
    created_at: datetime
    undone_at: datetime | None = None
    undone_by: str | None = None
    image_ids: list[int] = Field(default_factory=list, description="images the change touched (at most 1000)")
    image_count: int = 0


class HistoryPage(Public):
    entries: list[HistoryPublic]
    next_before_id: int | None = Field(default=None, description="pass as before_id for the next (older) page")


class GroupUpdate(Request):
    name: str | None = Field(default=None, description="rename the group")
    parent: str | None = Field(default=None, description="put the group under this one ('' makes it a root group)")
    common: bool | None = Field(default=None, description="shared by every site's classifier of the same name")
    merge_into: str | None = Field(default=None, description="move every image and subgroup into this group")

    @field_validator("name", "merge_into")
    @classmethod
    def _names(cls, v: str | None) -> str | None:
        return None if v is None else validate_name(v, "name")

    @field_validator("parent")
    @classmethod
    def _parent(cls, v: str | None) -> str | None:
        return None if v is None or v == "" else validate_name(v, "parent")


class GroupHealth(Public):
    name: str
    common: bool
    images: int = Field(description="confirmed images, common groups of other sites included")
    shared: int = Field(description="of which from common groups of same-named classifiers in other sites")


class DatasetHealth(Public):
    classifier: str
    groups: list[GroupHealth]
    new: int
    deleted: int
    confirmed: int
    min_to_train: int
    under_min: list[str]
    imbalance_ratio: float
    imbalance_limit: float
    imbalanced: bool
    warnings: list[str]


class ImageDetail(Public):
    id: int
    site: str
    classifier: str
    status: str
    group: str | None = None
    source: str
    origin: str | None = None
    original_name: str | None = None
    import_job_id: int | None = None
    frame_id: str | None = None
    camera: str | None = None
    agent: str | None = None
    captured_at: datetime | None = None
    sha256: str
    size: int
    width: int
    height: int
    format: str
    labelled_by: str | None = None
    created_at: datetime
    updated_at: datetime
    content_url: str
    thumbnail_url: str
