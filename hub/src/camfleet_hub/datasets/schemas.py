"""REST bodies of sites, cameras, classifiers, groups, images, duplicates and camera frames."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, field_validator

from camfleet_contract.envelope import UploadRuleName
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


class CameraUpdate(Request):
    """Release (``null``) or reassign the camera: only its owner may publish its frames and events."""

    agent: str | None = Field(description="the agent that owns the camera; null: nobody (the next status claims it)")

    @field_validator("agent")
    @classmethod
    def _agent(cls, v: str | None) -> str | None:
        return None if v is None else validate_name(v, "agent")


class CameraPublic(Public):
    id: int
    site: str
    name: str
    created_at: datetime
    last_seen_at: datetime | None = None
    agent: str | None = Field(default=None, description="the agent that owns it (the only one that may publish)")


class ClassifierCreate(NameCreate):
    pass


class ClassifierPublic(Public):
    id: int
    site: str
    name: str
    created_at: datetime


NONE_OF_THE_ABOVE = (
    "the site's rejected frames (none of the other groups): trained as a class, and a prediction of it flags the "
    "image as fitting no known group"
)


class GroupCreate(NameCreate):
    parent: str | None = Field(default=None, description="name of the parent group of the same classifier")
    common: bool = False
    none_of_the_above: bool = Field(default=False, description=NONE_OF_THE_ABOVE)

    @field_validator("parent")
    @classmethod
    def _parent(cls, v: str | None) -> str | None:
        return None if v is None else validate_name(v, "parent")


class GroupPublic(Public):
    id: int
    name: str
    parent: str | None = None
    common: bool = False
    none_of_the_above: bool = Field(default=False, description=NONE_OF_THE_ABOVE)
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


# Curation: bulk actions, history, undo, group changes, health, detail.
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
    none_of_the_above: bool | None = Field(default=None, description=NONE_OF_THE_ABOVE)
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
    none_of_the_above: bool = False
    images: int = Field(description="confirmed images, common groups of other sites included")
    shared: int = Field(description="of which from common groups of same-named classifiers in other sites")


class DeletedToNone(Request):
    """Use the classifier's deleted images as its none-of-the-above group (one history entry)."""

    group: str | None = Field(
        default=None,
        description="the group to fill (created and marked if needed); default: the group marked none of the above, "
        "else a new group 'none'",
    )
    expected_count: int | None = Field(
        default=None, ge=1, description="the number of images the caller confirmed; 409 when it is no longer so"
    )

    @field_validator("group")
    @classmethod
    def _group(cls, v: str | None) -> str | None:
        return None if v is None else validate_name(v, "group")


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


# Triage: NEW images with their camera, upload rule and the model's suggestion.
class Suggestion(Public):
    label: str = Field(description="the label the model predicted for the frame")
    probability: float = Field(ge=0.0, le=1.0)
    group: str | None = Field(default=None, description="the classifier's group of that name; None when it has none")


class TriageImage(ImagePublic):
    """An image as Triage shows it; the camera fields are None for images that did not come from a camera."""

    camera: str | None = None
    agent: str | None = None
    captured_at: datetime | None = None
    rule: UploadRuleName | None = Field(default=None, description="the agent's upload rule that sent the frame")
    rule_text: str | None = Field(default=None, description="the rule in plain words, e.g. 'low confidence'")
    suggestion: Suggestion | None = None


class AcceptSuggestions(Request):
    ids: list[int] = Field(min_length=1, max_length=5000, description="image ids, all of this classifier")
    expected_status: ImageStatus | None = Field(
        default=ImageStatus.NEW, description="the status the client saw for every image; 409 when one changed"
    )
