"""Fleet: what agents report of a model version's first frames after a swap (issue 13).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "fleet_model_behaviour",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("agent", sa.String(length=64), nullable=False),
        sa.Column("classifier", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("since", TS, nullable=False),
        sa.Column("frames", sa.Integer(), nullable=False),
        sa.Column("anomaly_rate", sa.Float(), nullable=False),
        sa.Column("mean_confidence", sa.Float(), nullable=False),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_fleet_model_behaviour_site_id_sites"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fleet_model_behaviour")),
        sa.UniqueConstraint(
            "site_id",
            "agent",
            "classifier",
            "version",
            name=op.f("uq_fleet_model_behaviour_site_id_agent_classifier_version"),
        ),
    )


def downgrade() -> None:
    op.drop_table("fleet_model_behaviour")
