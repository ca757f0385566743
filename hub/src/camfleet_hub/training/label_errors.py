"""The Errors view: a classifier's images whose label the latest model's out-of-fold check doubts most."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from camfleet_hub.core import urls
from camfleet_hub.datasets.models import Classifier, Group, Image, ImageStatus
from camfleet_hub.training.models import ImageLabelScore, ModelVersion
from camfleet_hub.training.schemas import LabelErrorPublic

MAX_LIMIT = 1000


def latest_scored_model(session: Session, classifier: Classifier) -> ModelVersion | None:
    """The newest version of the classifier that carries a label ranking."""
    has_scores = select(ImageLabelScore.id).where(ImageLabelScore.model_version_id == ModelVersion.id).exists()
    return session.scalar(
        select(ModelVersion)
        .where(ModelVersion.classifier_id == classifier.id, has_scores)
        .order_by(ModelVersion.version.desc())
        .limit(1)
    )


def ranked(session: Session, classifier: Classifier, limit: int = 100) -> list[LabelErrorPublic]:
    """Lowest self-confidence first; only images still confirmed in the group the model was trained on."""
    model = latest_scored_model(session, classifier)
    if model is None:
        return []
    rows = session.execute(
        select(ImageLabelScore, Image.sha256, Group.name)
        .join(Image, Image.id == ImageLabelScore.image_id)
        .join(Group, Group.id == Image.group_id)
        .where(
            ImageLabelScore.model_version_id == model.id,
            Image.status == ImageStatus.GROUP.value,
            Group.name == ImageLabelScore.given_label,
        )
        .order_by(ImageLabelScore.self_confidence, ImageLabelScore.id)
        .limit(max(1, min(limit, MAX_LIMIT)))
    )
    return [
        LabelErrorPublic(
            image_id=score.image_id,
            sha256=sha,
            given_label=score.given_label,
            predicted_label=score.predicted_label,
            self_confidence=score.self_confidence,
            predicted_confidence=score.predicted_confidence,
            group=group,
            model_version_id=model.id,
            thumbnail_url=urls.image_thumbnail(score.image_id),
            content_url=urls.image_content(score.image_id),
        )
        for score, sha, group in rows
    ]
