"""The hub's SQL schema: one typed SQLAlchemy model per domain table, the same on SQLite and PostgreSQL.

Status-like columns are plain strings guarded by a CHECK constraint (portable, easy to migrate); the allowed
values live in the ``*Status`` enums below so code never spells them by hand.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from camfleet_hub.db.types import UTCDateTime, utcnow

NAME_LEN = 64
SHA256_LEN = 64

# Deterministic constraint names, so Alembic (batch mode on SQLite included) can find and alter them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every hub table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


class ImageStatus(StrEnum):
    """Lifecycle of a dataset image: NEW (to review), GROUP (confirmed, trained on), DELETED (never offer again)."""

    NEW = "NEW"
    GROUP = "GROUP"
    DELETED = "DELETED"


class ImageSource(StrEnum):
    """Where a dataset image came from."""

    CAMERA = "camera"
    UPLOAD = "upload"
    IMPORT = "import"
    URL = "url"
    FOLDER = "folder"
    SEARCH = "search"


class Role(StrEnum):
    """A user's role in one site, strongest first: admin (everything, users), labeller (curate), viewer (read)."""

    ADMIN = "admin"
    LABELLER = "labeller"
    VIEWER = "viewer"

    @property
    def rank(self) -> int:
        return {"admin": 3, "labeller": 2, "viewer": 1}[self.value]


class ImportKind(StrEnum):
    """Where an import job reads its images from."""

    ZIP = "zip"
    UPLOAD = "upload"
    URLS = "urls"
    FOLDER = "folder"
    SEARCH = "search"


class ImportStatus(StrEnum):
    """Import job states: queued → running → succeeded | failed | cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ImportOutcome(StrEnum):
    """What happened to one file of an import."""

    IMPORTED = "imported"
    DUPLICATE = "duplicate"
    NEAR_DUPLICATE = "near_duplicate"
    PREVIOUSLY_DELETED = "previously_deleted"
    REJECTED = "rejected"


class JobStatus(StrEnum):
    """Training job states; queued → running → succeeded | failed | cancelled (running → queued on lease loss)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ModelStatus(StrEnum):
    """Model version states in the registry."""

    CANDIDATE = "candidate"
    PRODUCTION = "production"
    RETIRED = "retired"


class AgentState(StrEnum):
    """Agent liveness as last reported (``offline`` comes from the status last-will)."""

    ONLINE = "online"
    OFFLINE = "offline"


def _in(column: str, values: type[StrEnum]) -> str:
    """SQL ``column IN (...)`` text for a CHECK constraint over an enum's values."""
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


class Site(Base):
    """A place with cameras (a shop, a plant); owns its classifiers."""

    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    cameras: Mapped[list[Camera]] = relationship(back_populates="site", cascade="all, delete-orphan")
    classifiers: Mapped[list[Classifier]] = relationship(back_populates="site", cascade="all, delete-orphan")


class Camera(Base):
    """A camera of a site, created by hand or registered from an agent's status."""

    __tablename__ = "cameras"
    __table_args__ = (UniqueConstraint("site_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime | None] = mapped_column(default=None)

    site: Mapped[Site] = relationship(back_populates="cameras")


class Agent(Base):
    """An edge agent of a site, as last reported on its retained status topic."""

    __tablename__ = "agents"
    __table_args__ = (UniqueConstraint("site_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    state: Mapped[str] = mapped_column(String(32), default=AgentState.ONLINE.value)
    software_version: Mapped[str | None] = mapped_column(String(64), default=None)
    status: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    last_seen_at: Mapped[datetime | None] = mapped_column(default=None)

    site: Mapped[Site] = relationship()


class Classifier(Base):
    """One question asked of a site's cameras (e.g. "door state"), with its own groups and models."""

    __tablename__ = "classifiers"
    __table_args__ = (UniqueConstraint("site_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Cosine distance between embeddings under which two images count as near-duplicates; 0.05 is calibrated on
    # the clothing data (re-encoded copies vs distinct images of a class; see docs/BENCHMARKS.md).
    max_equal_distance: Mapped[float] = mapped_column(Float, default=0.05, server_default="0.05")

    site: Mapped[Site] = relationship(back_populates="classifiers")
    groups: Mapped[list[Group]] = relationship(back_populates="classifier", cascade="all, delete-orphan")


class Group(Base):
    """A class of a classifier; groups form a tree (``parent_id``), ``common`` ones are shared by every site."""

    __tablename__ = "groups"
    __table_args__ = (UniqueConstraint("classifier_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    classifier_id: Mapped[int] = mapped_column(ForeignKey("classifiers.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("groups.id", ondelete="SET NULL"), default=None)
    common: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    classifier: Mapped[Classifier] = relationship(back_populates="groups")
    parent: Mapped[Group | None] = relationship(remote_side="Group.id")


class Blob(Base):
    """Metadata of every image object in the store (content-addressed by sha256)."""

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(SHA256_LEN), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(16))
    # sha256 of the cached thumbnail (stored under the ``thumbs`` prefix), once one was made.
    thumb_sha256: Mapped[str | None] = mapped_column(String(SHA256_LEN), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Image(Base):
    """A blob as a member of one classifier's dataset, with its review status and group."""

    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint("classifier_id", "sha256"),
        # Pages list one classifier's images by status or group in id order (keyset pagination).
        Index("ix_images_classifier_id_status_id", "classifier_id", "status", "id"),
        # Also covers the per-(group, status) counts of the classifier page without reading the rows.
        Index("ix_images_classifier_id_group_id_status_id", "classifier_id", "group_id", "status", "id"),
        CheckConstraint(_in("status", ImageStatus), name="status"),
        CheckConstraint(_in("source", ImageSource), name="source"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    classifier_id: Mapped[int] = mapped_column(ForeignKey("classifiers.id", ondelete="CASCADE"))
    sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=ImageStatus.NEW.value)
    group_id: Mapped[int | None] = mapped_column(ForeignKey("groups.id", ondelete="SET NULL"), index=True)
    source: Mapped[str] = mapped_column(String(16))
    original_name: Mapped[str | None] = mapped_column(String(512), default=None)
    frame_id: Mapped[str | None] = mapped_column(String(64), default=None)
    # Where it came from beyond the kind: the URL, the search term, the server folder.
    origin: Mapped[str | None] = mapped_column(String(2048), default=None)
    # Who last put it in a group / deleted / restored it (a username), and the import job that added it.
    labelled_by: Mapped[str | None] = mapped_column(String(NAME_LEN), default=None)
    import_job_id: Mapped[int | None] = mapped_column(
        ForeignKey("import_jobs.id", ondelete="SET NULL"), index=True, default=None
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    blob: Mapped[Blob] = relationship()
    group: Mapped[Group | None] = relationship()


class Frame(Base):
    """A camera frame received over MQTT (idempotent on ``frame_id``); the JPEG is the blob ``sha256``."""

    __tablename__ = "frames"
    __table_args__ = (Index("ix_frames_site_id_camera_id_captured_at", "site_id", "camera_id", "captured_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    frame_id: Mapped[str] = mapped_column(String(64), unique=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    camera_id: Mapped[int] = mapped_column(ForeignKey("cameras.id", ondelete="CASCADE"))
    agent: Mapped[str] = mapped_column(String(NAME_LEN))
    captured_at: Mapped[datetime] = mapped_column()
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"), index=True)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(String(64), default=None)
    predictions: Mapped[list[Any] | None] = mapped_column(default=None)


class DeadLetter(Base):
    """A rejected ingest message; its payload is kept in the store under ``dead/`` so nothing is lost."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(primary_key=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    topic: Mapped[str] = mapped_column(String(512))
    reason: Mapped[str] = mapped_column(String(64), index=True)
    detail: Mapped[str] = mapped_column(Text, default="")
    size: Mapped[int] = mapped_column(Integer)
    payload_sha256: Mapped[str | None] = mapped_column(String(SHA256_LEN), default=None)


class TrainingJob(Base):
    """A queued training request, claimed by a trainer worker under a renewable lease."""

    __tablename__ = "training_jobs"
    __table_args__ = (
        Index("ix_training_jobs_status_created_at", "status", "created_at"),
        CheckConstraint(_in("status", JobStatus), name="status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    classifier_id: Mapped[int] = mapped_column(ForeignKey("classifiers.id", ondelete="CASCADE"), index=True)
    mode: Mapped[str] = mapped_column(String(32), default="quick")
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value)
    worker: Mapped[str | None] = mapped_column(String(128), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    stage: Mapped[str | None] = mapped_column(String(64), default=None)
    message: Mapped[str | None] = mapped_column(Text, default=None)
    auto_promote: Mapped[bool] = mapped_column(Boolean, default=False)
    # Only a worker that says it has a GPU may claim this job.
    gpu: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The model this job produced; a plain column because model_versions.job_id already links back (no FK cycle).
    model_version_id: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)

    classifier: Mapped[Classifier] = relationship()


class ModelVersion(Base):
    """A model bundle in the registry; ``classifier_id`` NULL is the ImageNet no-training default."""

    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("classifier_id", "version"),
        CheckConstraint(_in("status", ModelStatus), name="status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    classifier_id: Mapped[int | None] = mapped_column(
        ForeignKey("classifiers.id", ondelete="CASCADE"), index=True, default=None
    )
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=ModelStatus.CANDIDATE.value)
    sha256: Mapped[str] = mapped_column(String(SHA256_LEN))
    size: Mapped[int] = mapped_column(Integer)
    manifest: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("training_jobs.id", ondelete="SET NULL"), unique=True, default=None
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    promoted_at: Mapped[datetime | None] = mapped_column(default=None)
    # Set when a rollback took this version out of production, so the next rollback skips it.
    rolled_back_at: Mapped[datetime | None] = mapped_column(default=None)
    # The bundle's report.json (metrics, per-class figures, confusion, …) minus the per-image ranking.
    report: Mapped[dict[str, Any] | None] = mapped_column(default=None)

    classifier: Mapped[Classifier | None] = relationship()


class JobEvent(Base):
    """One heartbeat of a job as received: progress, stage, message and, during training, the epoch's figures."""

    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job_id_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("training_jobs.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    stage: Mapped[str | None] = mapped_column(String(64), default=None)
    message: Mapped[str | None] = mapped_column(Text, default=None)
    metrics: Mapped[list[Any] | None] = mapped_column(default=None)


class ImageLabelScore(Base):
    """Out-of-fold judgement of one image's label by one model version: the data behind the Errors view."""

    __tablename__ = "image_label_scores"
    __table_args__ = (
        UniqueConstraint("model_version_id", "image_id"),
        Index("ix_image_label_scores_model_version_id_self_confidence", "model_version_id", "self_confidence"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    given_label: Mapped[str] = mapped_column(String(NAME_LEN))
    predicted_label: Mapped[str] = mapped_column(String(NAME_LEN))
    self_confidence: Mapped[float] = mapped_column(Float)
    predicted_confidence: Mapped[float | None] = mapped_column(Float, default=None)


class Embedding(Base):
    """A blob's embedding under one embedding model (the default bundle's sha256): computed once, reused."""

    __tablename__ = "embeddings"

    sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256", ondelete="CASCADE"), primary_key=True)
    model: Mapped[str] = mapped_column(String(SHA256_LEN), primary_key=True)
    dim: Mapped[int] = mapped_column(Integer)
    # L2-normalised float16 vector, little-endian.
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    """A person who logs in to the hub; ``is_admin`` is a hub-wide administrator (every site, users)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    # KDF string "scrypt$n$r$p$salt_hex$hash_hex".
    password_hash: Mapped[str] = mapped_column(String(512))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(default=None)


class SiteRole(Base):
    """One user's role in one site."""

    __tablename__ = "site_roles"
    __table_args__ = (
        UniqueConstraint("user_id", "site_id"),
        CheckConstraint(_in("role", Role), name="role"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))


class ApiToken(Base):
    """A revocable bearer token for scripts, agents and trainers; scoped to one site (NULL: every site)."""

    __tablename__ = "api_tokens"
    __table_args__ = (CheckConstraint(_in("role", Role), name="role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    # sha256 of the secret; the secret itself is shown once, at creation.
    token_sha256: Mapped[str] = mapped_column(String(SHA256_LEN), unique=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class LoginSession(Base):
    """A browser session (cookie holds the secret, the table its sha256), ended by logout or expiry."""

    __tablename__ = "login_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(SHA256_LEN), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()


class HistoryEntry(Base):
    """One change to a classifier's dataset (move, delete, restore, rename, merge …), undoable.

    ``changes`` holds what undo needs: e.g. ``[{"image_id": 1, "before": {...}, "after": {...}}]``.
    """

    __tablename__ = "history"
    __table_args__ = (Index("ix_history_classifier_id_id", "classifier_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    classifier_id: Mapped[int] = mapped_column(ForeignKey("classifiers.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(32))
    summary: Mapped[str] = mapped_column(Text, default="")
    changes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    username: Mapped[str] = mapped_column(String(NAME_LEN))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    undone_at: Mapped[datetime | None] = mapped_column(default=None)
    undone_by: Mapped[str | None] = mapped_column(String(NAME_LEN), default=None)


class ImportJob(Base):
    """One import (zip, upload, URL list, server folder, web search) run in the background with progress."""

    __tablename__ = "import_jobs"
    __table_args__ = (
        CheckConstraint(_in("kind", ImportKind), name="kind"),
        CheckConstraint(_in("status", ImportStatus), name="status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    classifier_id: Mapped[int] = mapped_column(ForeignKey("classifiers.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=ImportStatus.QUEUED.value)
    # Where the images go: a group name (status GROUP) or none (status NEW, the triage inbox).
    target_group: Mapped[str | None] = mapped_column(String(NAME_LEN), default=None)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    total: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    message: Mapped[str | None] = mapped_column(Text, default=None)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str] = mapped_column(String(NAME_LEN))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class ImportItem(Base):
    """What one file of an import became, with the reason when it was not imported."""

    __tablename__ = "import_items"
    __table_args__ = (
        Index("ix_import_items_job_id_id", "job_id", "id"),
        CheckConstraint(_in("outcome", ImportOutcome), name="outcome"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("import_jobs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(2048))
    outcome: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    sha256: Mapped[str | None] = mapped_column(String(SHA256_LEN), default=None)
    image_id: Mapped[int | None] = mapped_column(ForeignKey("images.id", ondelete="SET NULL"), default=None)
    # For near-duplicates: the existing image it is close to, and the distance.
    similar_image_id: Mapped[int | None] = mapped_column(Integer, default=None)
    distance: Mapped[float | None] = mapped_column(Float, default=None)


class LoginAttempt(Base):
    """A failed login, kept for the login limits' window in SQL so every hub process counts the same failures."""

    __tablename__ = "login_attempts"
    __table_args__ = (
        Index("ix_login_attempts_username_at", "username", "at"),
        Index("ix_login_attempts_address_at", "address", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(NAME_LEN))  # lower-cased, cut to NAME_LEN
    address: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow)


class MqttAccountKind(StrEnum):
    """What an issued MQTT account may do (topic rules in ``camfleet_hub.comms.acl``)."""

    AGENT = "agent"
    OBSERVER = "observer"


class MqttAccount(Base):
    """MQTT credentials the hub issued: an agent bound to its site and agent name, or an observer of a site
    (``site_id`` NULL: every site). The password is shown once; only its hash is kept (Mosquitto's ``$7$`` form)."""

    __tablename__ = "mqtt_accounts"
    __table_args__ = (CheckConstraint(_in("kind", MqttAccountKind), name="kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # "agent/{site}/{agent}" or "observer/{site|*}/{name}": never "hub", and never a bare site name.
    username: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    password_hash: Mapped[str] = mapped_column(String(256))
    created_by: Mapped[str] = mapped_column(String(NAME_LEN))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


# Domain packages keep their tables next to their code; importing them here registers them on Base.metadata.
import camfleet_hub.compat.models  # noqa: E402, F401
import camfleet_hub.fleet.models  # noqa: E402, F401
import camfleet_hub.serving.models  # noqa: E402, F401
