"""SQL table of the serving domain: every prediction made over REST, with all its probabilities.

Camera events live in the fleet domain's ``fleet_events``; this table holds what REST callers asked (the
classify API, the older tools' ``/api/predict`` and ``/cv``), so a site's log shows both.

A row keeps its probabilities as float32 in the model's output order, and the group names once per model in
``prediction_class_lists``: as a JSON object per row, a 1,000-group model's log row took 31 kB in SQLite, and
scoring, answering and logging an image 1.4-1.8 ms of the hub's CPU; packed, 4 kB and 0.4-0.5 ms.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from camfleet_hub.core.db.base import NAME_LEN, Base
from camfleet_hub.core.db.types import utcnow
from camfleet_hub.serving.ranking import SCORE_DTYPE, ranked


class PredictionClassList(Base):
    """A model's groups in output order, stored once and shared by every log row of models with the same groups."""

    __tablename__ = "prediction_class_lists"

    id: Mapped[int] = mapped_column(primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the JSON list: the look-up key
    classes: Mapped[list[str]] = mapped_column(JSON)


class PredictionLog(Base):
    """One image classified for a REST caller: who, which model, the top label and every probability."""

    __tablename__ = "prediction_logs"
    __table_args__ = (Index("ix_prediction_logs_site_id_created_at", "site_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    classifier: Mapped[str] = mapped_column(String(NAME_LEN))
    model_id: Mapped[int | None] = mapped_column(Integer, default=None)
    model_version: Mapped[int] = mapped_column(Integer)
    caller: Mapped[str] = mapped_column(String(NAME_LEN))
    route: Mapped[str] = mapped_column(String(32))
    image_name: Mapped[str] = mapped_column(String(512), default="")
    label: Mapped[str] = mapped_column(String(NAME_LEN))
    probability: Mapped[float] = mapped_column(Float)
    anomaly: Mapped[bool] = mapped_column(Boolean, default=False)
    anomaly_score: Mapped[float] = mapped_column(Float, default=0.0)
    class_list_id: Mapped[int] = mapped_column(ForeignKey("prediction_class_lists.id"))
    scores: Mapped[bytes] = mapped_column(LargeBinary)  # SCORE_DTYPE, one per group in class_list's order
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    # selectin: a page of rows loads each distinct list once (a join would repeat 1,000 names on every row)
    class_list: Mapped[PredictionClassList] = relationship(lazy="selectin")

    @property
    def probabilities(self) -> dict[str, float]:
        """Every group's probability, most likely first (as the answer gave them)."""
        return self.top(None)

    def top(self, k: int | None) -> dict[str, float]:
        """The `k` most likely groups (a page row shows three of a model's 1,000), or all of them."""
        return ranked(self.class_list.classes, np.frombuffer(self.scores, dtype=SCORE_DTYPE), k)
