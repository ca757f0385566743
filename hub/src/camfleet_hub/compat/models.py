"""SQL table of the compat domain: images a person put in a site's held-out test set.

A test image is an ordinary image of its group (so it shows in the dataset) with a row here: the training set
(``services.datasets.training_images``) leaves it out, and ``make_model`` reports each model's accuracy on it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey
from sqlalchemy.orm import Mapped, mapped_column

from camfleet_hub.core.db.base import Base
from camfleet_hub.core.db.types import utcnow


class HoldoutImage(Base):
    """An image never trained on: the test set of its classifier."""

    __tablename__ = "holdout_images"

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    classifier_id: Mapped[int] = mapped_column(ForeignKey("classifiers.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
