"""SQL tables of datasets: sites, cameras, classifiers, groups, blobs, images, frames, history, embeddings."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from camfleet_hub.core.db.base import NAME_LEN, SHA256_LEN, Base, one_of
from camfleet_hub.core.db.types import utcnow


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


class Site(Base):
    """A place with cameras (a shop, a plant); owns its classifiers."""

    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    cameras: Mapped[list[Camera]] = relationship(back_populates="site", cascade="all, delete-orphan")
    classifiers: Mapped[list[Classifier]] = relationship(back_populates="site", cascade="all, delete-orphan")


class Camera(Base):
    """A camera of a site, created by hand or registered from an agent's settings or status.

    ``agent`` owns it: the agent whose settings name it, else the first whose status does (trust on first use), or
    whom a site admin sets. Only the owner may publish its frames and events; None (unowned) leaves them open to
    every agent of the site.
    """

    __tablename__ = "cameras"
    __table_args__ = (UniqueConstraint("site_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime | None] = mapped_column(default=None)
    agent: Mapped[str | None] = mapped_column(String(NAME_LEN), default=None)

    site: Mapped[Site] = relationship(back_populates="cameras")


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
    """A class of a classifier; groups form a tree (``parent_id``), ``common`` ones are shared by every site.

    A ``none_of_the_above`` group holds the site's rejected frames (none of the other groups): trained as a class,
    a prediction of it flags the image as fitting no known group.
    """

    __tablename__ = "groups"
    __table_args__ = (UniqueConstraint("classifier_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    classifier_id: Mapped[int] = mapped_column(ForeignKey("classifiers.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("groups.id", ondelete="SET NULL"), default=None)
    common: Mapped[bool] = mapped_column(Boolean, default=False)
    none_of_the_above: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
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
        CheckConstraint(one_of("status", ImageStatus), name="status"),
        CheckConstraint(one_of("source", ImageSource), name="source"),
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


class Embedding(Base):
    """A blob's embedding under one embedding model (the default bundle's sha256): computed once, reused."""

    __tablename__ = "embeddings"

    sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256", ondelete="CASCADE"), primary_key=True)
    model: Mapped[str] = mapped_column(String(SHA256_LEN), primary_key=True)
    dim: Mapped[int] = mapped_column(Integer)
    # L2-normalised float16 vector, little-endian.
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


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
