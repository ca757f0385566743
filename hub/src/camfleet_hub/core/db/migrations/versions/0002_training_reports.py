"""Training progress history, GPU jobs, model reports, rollback marks and the per-image label-error scores.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("training_jobs") as batch:
        batch.add_column(sa.Column("gpu", sa.Boolean(), server_default=sa.false(), nullable=False))
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("rolled_back_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("report", sa.JSON(), nullable=True))

    op.create_table(
        "job_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("stage", sa.String(length=64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["training_jobs.id"], name=op.f("fk_job_events_job_id_training_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_events")),
    )
    op.create_index("ix_job_events_job_id_id", "job_events", ["job_id", "id"], unique=False)

    op.create_table(
        "image_label_scores",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("given_label", sa.String(length=64), nullable=False),
        sa.Column("predicted_label", sa.String(length=64), nullable=False),
        sa.Column("self_confidence", sa.Float(), nullable=False),
        sa.Column("predicted_confidence", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name=op.f("fk_image_label_scores_image_id_images"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_image_label_scores_model_version_id_model_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_image_label_scores")),
        sa.UniqueConstraint(
            "model_version_id", "image_id", name=op.f("uq_image_label_scores_model_version_id_image_id")
        ),
    )
    op.create_index(op.f("ix_image_label_scores_image_id"), "image_label_scores", ["image_id"], unique=False)
    op.create_index(
        "ix_image_label_scores_model_version_id_self_confidence",
        "image_label_scores",
        ["model_version_id", "self_confidence"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_image_label_scores_model_version_id_self_confidence", table_name="image_label_scores")
    op.drop_index(op.f("ix_image_label_scores_image_id"), table_name="image_label_scores")
    op.drop_table("image_label_scores")
    op.drop_index("ix_job_events_job_id_id", table_name="job_events")
    op.drop_table("job_events")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("report")
        batch.drop_column("rolled_back_at")
    with op.batch_alter_table("training_jobs") as batch:
        batch.drop_column("gpu")
