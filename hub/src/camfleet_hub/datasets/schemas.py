"""REST bodies of sites, cameras, classifiers, groups, images, duplicates and camera frames."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field, field_validator

from camfleet_contract.rest import (
    ModelPublic,
)
from camfleet_contract.topics import validate_name  # a TopicError is a ValueError: pydantic reports it
from camfleet_hub.core.schemas import NameCreate, Public, Request
from camfleet_hub.datasets.models import ImageStatus


class SiteCreate(NameCreate):
    pass


class SitePublic(Public):
    id: int
    name: str
    created_at: datetime


class CameraCreate(NameCreate):
    pass


class CameraPublic(Public):
    id: int
    site: str
    name: str
    created_at: datetime
    last_seen_at: datetime | None = None


class ClassifierCreate(NameCreate):
    pass


class ClassifierPublic(Public):
    id: int
    site: str
    name: str
    created_at: datetime


class GroupCreate(NameCreate):
    parent: str | None = Field(default=None, description="name of the parent group of the same classifier")
    common: bool = False

    @field_validator("parent")
    @classmethod
    def _parent(cls, v: str | None) -> str | None:
        return None if v is None else validate_name(v, "parent")


class GroupPublic(Public):
    id: int
    name: str
    parent: str | None = None
    common: bool = False
    counts: dict[str, int] = Field(default_factory=dict, description="images per status (NEW, GROUP, DELETED)")


class ClassifierDetail(ClassifierPublic):
    groups: list[GroupPublic]
    new_count: int = Field(description="images still to review (status NEW), in a group or not")
    counts: dict[str, int] = Field(description="all images of the classifier per status")
    models: list[ModelPublic]


class ImagePublic(Public):
    id: int
    classifier: str
    sha256: str
    status: str
    group: str | None = None
    source: str
    original_name: str | None = None
    frame_id: str | None = None
    width: int
    height: int
    created_at: datetime
    updated_at: datetime | None = None
    labelled_by: str | None = None
    content_url: str
    thumbnail_url: str


class ImageUpdate(Request):
    status: ImageStatus | None = None
    group: str | None = Field(default=None, description="group name of the same classifier (created if missing)")
    expected_status: ImageStatus | None = Field(
        default=None, description="the status the client saw; 409 when the image changed meanwhile"
    )
    expected_updated_at: datetime | None = Field(
        default=None, description="the updated_at the client saw; 409 when the image changed meanwhile"
    )

    @field_validator("group")
    @classmethod
    def _group(cls, v: str | None) -> str | None:
        return None if v is None else validate_name(v, "group")


class DuplicateImage(Public):
    id: int
    status: str
    group: str | None
    original_name: str | None
    source: str
    width: int
    height: int
    size: int
    thumbnail_url: str
    image_url: str


class DuplicatePair(Public):
    kind: str = Field(description="exact (same pixels) or near (embedding distance under max_equal_distance)")
    distance: float
    left: DuplicateImage
    right: DuplicateImage


class DuplicatesPage(Public):
    pairs: list[DuplicatePair]
    total: int
    max_equal_distance: float
    embedded: bool = Field(description="false when no default model exists yet, so no embeddings to compare")


class DuplicatesResolve(Request):
    keep: int
    drop: list[int] = Field(min_length=1, max_length=1000)


class DuplicatesResolved(Public):
    kept: int
    deleted: list[int]


class DuplicateSettings(Request):
    max_equal_distance: float = Field(ge=0.0, le=2.0, description="cosine distance under which images are equal")


class DuplicateSettingsPublic(Public):
    max_equal_distance: float


class FramePublic(Public):
    frame_id: str
    site: str
    camera: str
    agent: str
    captured_at: datetime
    received_at: datetime
    sha256: str
    width: int
    height: int
    reason: str | None = None
    predictions: list[Any] | None = None
    image_url: str
    thumbnail_url: str
