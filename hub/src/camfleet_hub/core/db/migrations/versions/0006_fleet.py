"""Fleet: stored events (full predictions, indexed by site and time), per-site fleet settings, agent settings
history (a row per version), commands sent to agents with their replies, staged rollouts and pins.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def _site_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["site_id"], ["sites.id"], name=op.f(f"fk_{table}_site_id_sites"), ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "fleet_agent_configs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("agent", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        _site_fk("fleet_agent_configs"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fleet_agent_configs")),
        sa.UniqueConstraint("site_id", "agent", "version", name=op.f("uq_fleet_agent_configs_site_id_agent_version")),
    )
    op.create_table(
        "fleet_commands",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("command_id", sa.String(length=64), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("agent", sa.String(length=64), nullable=False),
        sa.Column("command", sa.String(length=32), nullable=False),
        sa.Column("camera", sa.String(length=64), nullable=True),
        sa.Column("sent_by", sa.String(length=64), nullable=False),
        sa.Column("sent_at", TS, nullable=False),
        sa.Column("result", sa.String(length=16), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("replied_at", TS, nullable=True),
        _site_fk("fleet_commands"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fleet_commands")),
        sa.UniqueConstraint("command_id", name=op.f("uq_fleet_commands_command_id")),
    )
    op.create_index("ix_fleet_commands_site_id_agent", "fleet_commands", ["site_id", "agent"], unique=False)
    op.create_table(
        "fleet_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("camera", sa.String(length=64), nullable=False),
        sa.Column("agent", sa.String(length=64), nullable=False),
        sa.Column("classifier", sa.String(length=64), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("frame_id", sa.String(length=64), nullable=False),
        sa.Column("ts", TS, nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("anomaly", sa.Boolean(), nullable=False),
        sa.Column("anomaly_score", sa.Float(), nullable=False),
        sa.Column("motion", sa.Float(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("predictions", sa.JSON(), nullable=False),
        _site_fk("fleet_events"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fleet_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_fleet_events_event_id")),
    )
    for name, cols in EVENT_INDEXES:
        op.create_index(name, "fleet_events", cols, unique=False)
    op.create_table(
        "fleet_site_settings",
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("event_retention_days", sa.Integer(), nullable=False),
        sa.Column("homeassistant", sa.Boolean(), nullable=False),
        _site_fk("fleet_site_settings"),
        sa.PrimaryKeyConstraint("site_id", name=op.f("pk_fleet_site_settings")),
    )
    op.create_table(
        "fleet_rollouts",
        sa.Column("classifier_id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=True),
        sa.Column("agents", sa.JSON(), nullable=False),
        sa.Column("percent", sa.Integer(), nullable=False),
        sa.Column("highest_staged", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["classifier_id"],
            ["classifiers.id"],
            name=op.f("fk_fleet_rollouts_classifier_id_classifiers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["model_versions.id"],
            name=op.f("fk_fleet_rollouts_model_id_model_versions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("classifier_id", name=op.f("pk_fleet_rollouts")),
    )
    op.create_table(
        "fleet_pins",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("classifier_id", sa.Integer(), nullable=False),
        sa.Column("agent", sa.String(length=64), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["classifier_id"],
            ["classifiers.id"],
            name=op.f("fk_fleet_pins_classifier_id_classifiers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["model_id"], ["model_versions.id"], name=op.f("fk_fleet_pins_model_id_model_versions"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fleet_pins")),
        sa.UniqueConstraint("classifier_id", "agent", name=op.f("uq_fleet_pins_classifier_id_agent")),
    )


EVENT_INDEXES = [
    ("ix_fleet_events_site_id_ts", ["site_id", "ts"]),
    ("ix_fleet_events_site_id_camera_ts", ["site_id", "camera", "ts"]),
    ("ix_fleet_events_site_id_classifier_ts", ["site_id", "classifier", "ts"]),
    ("ix_fleet_events_site_id_label_ts", ["site_id", "label", "ts"]),
    ("ix_fleet_events_site_id_anomaly_ts", ["site_id", "anomaly", "ts"]),
]


def downgrade() -> None:
    op.drop_table("fleet_pins")
    op.drop_table("fleet_rollouts")
    op.drop_table("fleet_site_settings")
    for name, _cols in EVENT_INDEXES:
        op.drop_index(name, table_name="fleet_events")
    op.drop_table("fleet_events")
    op.drop_index("ix_fleet_commands_site_id_agent", table_name="fleet_commands")
    op.drop_table("fleet_commands")
    op.drop_table("fleet_agent_configs")
