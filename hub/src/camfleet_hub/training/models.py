"""SQL tables of training jobs, their events, model versions and per-image label scores."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from camfleet_hub.core.db.base import NAME_LEN, SHA256_LEN, Base, one_of
from camfleet_hub.core.db.types import utcnow

if TYPE_CHECKING:
    from camfleet_hub.datasets.models import Classifier


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


class TrainingJob(Base):
    """A queued training request, claimed by a trainer worker under a renewable lease."""

    __tablename__ = "training_jobs"
    __table_args__ = (
        Index("ix_training_jobs_status_created_at", "status", "created_at"),
        CheckConstraint(one_of("status", JobStatus), name="status"),
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
    # A compare job's result (camfleet_contract.rest.ModelComparison); None for training jobs.
    comparison: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)

    classifier: Mapped[Classifier] = relationship()


class ModelVersion(Base):
    """A model bundle in the registry; ``classifier_id`` NULL is the ImageNet no-training default."""

    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("classifier_id", "version"),
        CheckConstraint(one_of("status", ModelStatus), name="status"),
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
