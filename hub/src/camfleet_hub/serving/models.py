"""SQL table of the serving domain: every prediction made over REST, with all its probabilities.

Camera events live in the fleet domain's ``fleet_events``; this table holds what REST callers asked (the
classify API, the older tools' ``/api/predict`` and ``/cv``), so a site's log shows both.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from camfleet_hub.core.db.base import NAME_LEN, Base
from camfleet_hub.core.db.types import utcnow


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
    probabilities: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
