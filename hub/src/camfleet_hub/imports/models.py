"""SQL tables of import jobs and what each file became."""

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
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from camfleet_hub.core.db.base import NAME_LEN, SHA256_LEN, Base, one_of
from camfleet_hub.core.db.types import utcnow


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


class ImportJob(Base):
    """One import (zip, upload, URL list, server folder, web search) run in the background with progress."""

    __tablename__ = "import_jobs"
    __table_args__ = (
        CheckConstraint(one_of("kind", ImportKind), name="kind"),
        CheckConstraint(one_of("status", ImportStatus), name="status"),
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
        CheckConstraint(one_of("outcome", ImportOutcome), name="outcome"),
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
