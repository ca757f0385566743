"""REST request and response bodies: a Create / Update / Public schema per resource, separate from the SQL models."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# The bodies the agent and the trainer use live in the contract; re-exported here for the hub's routes.
from camfleet_contract.rest import (  # noqa: F401
    BACKBONE_PATTERN,
    MAX_EPOCHS_PER_BEAT,
    Dataset,
    DatasetImage,
    EpochMetrics,
    FleetKey,
    HeartbeatAnswer,
    JobClaim,
    JobClaimed,
    JobFail,
    JobHeartbeat,
    JobParams,
    JobPublic,
    ModelPublic,
    WorkerRequest,
)
from camfleet_contract.topics import validate_name  # a TopicError is a ValueError: pydantic reports it
from camfleet_hub.db.models import ImageStatus


class Request(BaseModel):
    """Base of request bodies: unknown fields are a client mistake, not something to ignore."""

    model_config = ConfigDict(extra="forbid")


class Public(BaseModel):
    """Base of response bodies."""

    model_config = ConfigDict(from_attributes=True)


class NameCreate(Request):
    """A body that only names the new thing."""

    name: str = Field(description="1-64 letters, digits, '_', '-' or '.', starting with a letter or digit")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return validate_name(v, "name")


# --------------------------------------------------------------------------- health


class Health(Public):
    status: Literal["ok"] = "ok"
    hub_version: str
    contract_version: str
    protocol: str
    database: str = Field(description="the SQL dialect in use (sqlite, postgresql)")
    mqtt_connected: bool = Field(description="whether the hub's publisher is connected to the broker")


# --------------------------------------------------------------------------- sites, cameras


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


# --------------------------------------------------------------------------- classifiers, groups


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


class MisclassifiedImage(Public):
    image_id: int | None = Field(default=None, description="None when the image is no longer in the dataset")
    sha256: str | None = None
    label: str
    predicted: str
    probability: float | None = Field(default=None, description="the model's probability of its prediction")
    thumbnail_url: str | None = None


class ModelReport(Public):
    """A model version's report, normalised: every part is empty when an older bundle did not carry it."""

    model_id: int
    version: int
    status: str
    classes: list[str]
    metrics: dict[str, Any] = Field(default_factory=dict, description="the manifest's metrics")
    per_class: dict[str, dict[str, Any]] = Field(default_factory=dict, description="precision, recall, support")
    confusion: list[list[int]] | None = Field(default=None, description="rows: true class, columns: predicted")
    confusion_url: str | None = None
    misclassified: list[MisclassifiedImage] = Field(default_factory=list)
    thresholds: dict[str, Any] = Field(default_factory=dict, description="calibrated anomaly thresholds")
    int8: dict[str, Any] | None = Field(default=None, description="INT8 accuracy and speed versus FP32")
    label_errors: int = Field(default=0, description="images ranked by the out-of-fold label check")
    report: dict[str, Any] = Field(default_factory=dict, description="the bundle's report.json (minus the ranking)")


class LabelErrorPublic(Public):
    image_id: int
    sha256: str
    given_label: str
    predicted_label: str
    self_confidence: float = Field(description="out-of-fold probability of the given label (low: doubtful)")
    predicted_confidence: float | None = None
    group: str | None = Field(default=None, description="the image's group now")
    model_version_id: int
    thumbnail_url: str
    content_url: str


class ClassifierDetail(ClassifierPublic):
    groups: list[GroupPublic]
    new_count: int = Field(description="images still to review (status NEW), in a group or not")
    counts: dict[str, int] = Field(description="all images of the classifier per status")
    models: list[ModelPublic]


# --------------------------------------------------------------------------- images


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


# --------------------------------------------------------------------------- import


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


# --------------------------------------------------------------------------- jobs


class JobCreate(Request):
    mode: Literal["quick", "full"] = "quick"
    auto_promote: bool = False
    params: JobParams = Field(default_factory=JobParams)


class JobEventPublic(Public):
    id: int
    created_at: datetime
    progress: float
    stage: str | None = None
    message: str | None = None
    metrics: list[dict[str, Any]] | None = None


class JobProgress(Public):
    """A job with its heartbeat history and the per-epoch curve (one point per epoch, the latest figures)."""

    job: JobPublic
    events: list[JobEventPublic]
    epochs: list[dict[str, Any]]
    eta_s: float | None = Field(default=None, description="seconds left, from the latest heartbeat that said")
    last_event_id: int | None = None


# --------------------------------------------------------------------------- keys, classify


class ClassifyRequest(Request):
    site: str
    classifier: str
    images: list[str] = Field(default_factory=list, description="base64-encoded image files (JPEG, PNG, ...)")
    urls: list[str] = Field(
        default_factory=list, description="http(s) image URLs, fetched through the URL-import guard (imports.url_*)"
    )
    top_k: int | None = Field(default=None, ge=1, le=1000, description="predictions per image (default 5)")

    @field_validator("site", "classifier")
    @classmethod
    def _names(cls, v: str, info: Any) -> str:
        return validate_name(v, info.field_name)


class PredictionPublic(Public):
    label: str
    probability: float


class ClassifyResult(Public):
    label: str
    probability: float
    predictions: list[PredictionPublic]
    anomaly: bool
    anomaly_score: float


class ModelRef(Public):
    id: int
    classifier: str
    version: int
    default: bool
    precision: Literal["fp32", "int8"] = Field(default="fp32", description="the model file that ran")


class ClassifyAnswer(Public):
    model: ModelRef
    results: list[ClassifyResult]


# --------------------------------------------------------------------------- frames, ingest


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


class IngestStats(Public):
    worker: dict[str, Any] = Field(description="counters of this process's ingest worker since it started")
    frames: int = Field(description="frames stored in the database")
    dead_letters: int = Field(description="rejected messages recorded in the database")
    dead_letters_by_reason: dict[str, int]


class DeadLetterPublic(Public):
    id: int
    received_at: datetime
    topic: str
    reason: str
    detail: str
    size: int
    payload_sha256: str | None = None


# --------------------------------------------------------------------------- users, roles, tokens (auth)

RoleName = Literal["admin", "labeller", "viewer"]


class LoginRequest(Request):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class UserPublic(Public):
    id: int
    username: str
    is_admin: bool = Field(description="hub-wide administrator: every site, users, every-site tokens")
    disabled: bool
    created_at: datetime
    last_login_at: datetime | None = None
    roles: dict[str, RoleName] = Field(default_factory=dict, description="role per site name")


class MePublic(Public):
    name: str = Field(description="the username, or 'token:<name>' for an API token")
    user_id: int | None = None
    is_admin: bool
    roles: dict[str, RoleName] = Field(default_factory=dict, description="role per site name")
    every_site: RoleName | None = Field(default=None, description="an every-site token's role in each site")


class UserCreate(Request):
    username: str = Field(description="1-64 letters, digits, '.', '_', '@' or '-'")
    password: str = Field(min_length=8, max_length=1024)
    is_admin: bool = False


class UserUpdate(Request):
    password: str | None = Field(default=None, min_length=8, max_length=1024)
    current_password: str | None = Field(
        default=None, max_length=1024, description="required when changing your own password"
    )
    disabled: bool | None = None
    is_admin: bool | None = None


class SiteRoleSet(Request):
    role: RoleName | None = Field(description="the user's role in the site; null removes it")


class TokenCreate(Request):
    name: str = Field(min_length=1, max_length=128, description="what the token is for, e.g. 'agent shop-1'")
    site: str | None = Field(default=None, description="the one site it may act in; null = every site (hub admins)")
    role: RoleName = "viewer"


class TokenPublic(Public):
    id: int
    name: str
    site: str | None = None
    role: RoleName
    owner: str | None = None
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class TokenCreated(TokenPublic):
    token: str = Field(description="the secret: send as 'Authorization: Bearer <token>'; shown only this once")
