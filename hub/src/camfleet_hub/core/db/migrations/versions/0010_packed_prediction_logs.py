"""Serving: prediction log rows keep float32 probabilities in the model's order; group names are stored once.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np
import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 1000
lists = sa.table(
    "prediction_class_lists", sa.column("id", sa.Integer), sa.column("digest", sa.String), sa.column("classes", sa.JSON)
)
logs = sa.table(
    "prediction_logs",
    sa.column("id", sa.Integer),
    sa.column("probabilities", sa.JSON),
    sa.column("class_list_id", sa.Integer),
    sa.column("scores", sa.LargeBinary),
)


def upgrade() -> None:
    op.create_table(
        "prediction_class_lists",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("classes", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prediction_class_lists")),
        sa.UniqueConstraint("digest", name=op.f("uq_prediction_class_lists_digest")),
    )
    with op.batch_alter_table("prediction_logs") as batch:
        batch.add_column(sa.Column("class_list_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("scores", sa.LargeBinary(), nullable=True))
    _pack_rows()
    with op.batch_alter_table("prediction_logs") as batch:
        batch.drop_column("probabilities")
        batch.alter_column("class_list_id", existing_type=sa.Integer(), nullable=False)
        batch.alter_column("scores", existing_type=sa.LargeBinary(), nullable=False)
        batch.create_foreign_key(
            op.f("fk_prediction_logs_class_list_id_prediction_class_lists"),
            "prediction_class_lists",
            ["class_list_id"],
            ["id"],
        )


def _pack_rows() -> None:
    """Existing rows: their JSON object becomes the sorted group names (stored once) and float32 values."""
    conn = op.get_bind()
    ids: dict[str, int] = {}
    last = 0
    while True:
        rows = conn.execute(
            sa.select(logs.c.id, logs.c.probabilities).where(logs.c.id > last).order_by(logs.c.id).limit(BATCH)
        ).all()
        if not rows:
            return
        for row_id, probabilities in rows:
            names = sorted(probabilities)
            text = json.dumps(names, separators=(",", ":"))
            digest = hashlib.sha256(text.encode()).hexdigest()
            if digest not in ids:
                conn.execute(sa.insert(lists).values(digest=digest, classes=names))
                ids[digest] = conn.execute(sa.select(lists.c.id).where(lists.c.digest == digest)).scalar_one()
            scores = np.asarray([probabilities[n] for n in names], dtype="<f4").tobytes()
            conn.execute(sa.update(logs).where(logs.c.id == row_id).values(class_list_id=ids[digest], scores=scores))
        last = rows[-1][0]


def downgrade() -> None:
    with op.batch_alter_table("prediction_logs") as batch:
        batch.add_column(sa.Column("probabilities", sa.JSON(), nullable=True))
    conn = op.get_bind()
    names = {i: c for i, c in conn.execute(sa.select(lists.c.id, lists.c.classes))}
    for row_id, list_id, scores in conn.execute(sa.select(logs.c.id, logs.c.class_list_id, logs.c.scores)).all():
        values = np.frombuffer(scores, dtype="<f4").astype(float).round(6).tolist()
        probabilities = dict(sorted(zip(names[list_id], values, strict=True), key=lambda kv: -kv[1]))
        conn.execute(sa.update(logs).where(logs.c.id == row_id).values(probabilities=probabilities))
    with op.batch_alter_table("prediction_logs") as batch:
        batch.drop_constraint(op.f("fk_prediction_logs_class_list_id_prediction_class_lists"), type_="foreignkey")
        batch.drop_column("scores")
        batch.drop_column("class_list_id")
        batch.alter_column("probabilities", existing_type=sa.JSON(), nullable=False)
    op.drop_table("prediction_class_lists")
