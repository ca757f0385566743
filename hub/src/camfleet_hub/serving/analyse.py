"""Analyse one image for a classifier: every group's probability, the anomaly score explained, and its nearest
dataset images.

Neighbours come from the hub's per-classifier index (``duplicates.NearIndexes``) over the stored ImageNet-default
embeddings. The index is kept current without rebuilds: imports, the older tools' save_data and the embedding
back-fill add to it; a move changes only the image's group, read here at query time; deleted images stay in the
index and are skipped here (``live_ids``), so a restore needs no re-add.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from camfleet_contract.anomaly import AnomalyCalibration
from camfleet_contract.images import ImageError
from camfleet_hub.core import urls
from camfleet_hub.core.errors import InvalidError, NotFoundError
from camfleet_hub.core.store.base import ObjectNotFound
from camfleet_hub.datasets.duplicates import live_ids
from camfleet_hub.datasets.embeddings import decode_for_embedding, load_vectors
from camfleet_hub.datasets.models import Classifier, Group, Image
from camfleet_hub.serving import classify
from camfleet_hub.serving.schemas import AnalyseAnswer, Neighbour
from camfleet_hub.serving.service import Scored, score_images

if TYPE_CHECKING:
    from camfleet_hub.core.container import HubServices


def explain(scored: Scored, cal: AnomalyCalibration) -> str:
    """The anomaly score against the threshold, for a person."""
    rate = f"about {cal.target_flag_rate:.0%} of normal images"
    if scored.anomaly:
        verdict = (
            f"Anomalous: the score {scored.anomaly_score:.2f} is above the model's threshold {scored.threshold:.2f}, "
            "so the image looks unlike the images of every group the model was trained on"
        )
    else:
        verdict = (
            f"Not anomalous: the score {scored.anomaly_score:.2f} is not above the model's threshold "
            f"{scored.threshold:.2f}, so the image looks like the images the model was trained on"
        )
    return (
        f"{verdict}. The score ranks how untypical the image is among held-out normal images (0 = most typical, "
        f"1 = less typical than all of them); the threshold flags {rate}. The top group is "
        f"{scored.label!r} at {scored.probability:.0%}."
    )


def _dataset_image(session: Session, classifier: Classifier, image_id: int) -> Image:
    image = session.get(Image, image_id)
    if image is None or image.classifier_id != classifier.id:
        raise NotFoundError(f"image_id={image_id}: no such image in classifier {classifier.name!r}")
    return image


def _query_vector(
    services: HubServices, session: Session, model: str, image: Image | None, data: bytes
) -> np.ndarray | None:
    """The stored embedding of a dataset image, else the upload embedded as imports embed (same decode)."""
    if image is not None:
        stored = load_vectors(session, [image.sha256], model).get(image.sha256)
        if stored is not None:
            return stored
    assert services.embedder is not None
    loaded = services.embedder.runtime(session)
    if loaded is None or loaded[0] != model:
        return None
    decoded = decode_for_embedding(data, services.settings.ingest.max_pixels)
    vector: np.ndarray = services.embedder.embed(loaded[1], [decoded])[0]
    return vector


def neighbours(
    services: HubServices, session: Session, classifier: Classifier, image: Image | None, data: bytes, k: int
) -> tuple[list[Neighbour], str | None]:
    """The k nearest non-deleted images (the analysed one excluded), and a note when fewer could be found."""
    if services.embedder is None or services.near_indexes is None:
        return [], "this hub computes no embeddings, so it cannot look for similar images"
    model = services.embedder.current_model(session)
    if model is None:
        return [], "no ImageNet default model: upload one (PUT /api/v1/models/default) to find similar images"
    index = services.near_indexes.get(session, classifier.id, model)
    vector = _query_vector(services, session, model, image, data)
    if index is None or vector is None:
        return [], "no image of this classifier has an embedding yet (they are computed in the background)"
    exclude = image.id if image is not None else None
    size = len(index.keys)
    want = k + 1
    while True:  # deleted images stay indexed: widen the search until k live ones are found or all were seen
        found = [(i, d) for i, d in index.nearest(vector, want)[0] if i != exclude]
        alive = live_ids(session, classifier.id, {i for i, _ in found})
        live = [(i, d) for i, d in found if i in alive][:k]
        if len(live) == k or want >= size:
            break
        want = min(size, want * 2)
    groups = dict(
        session.execute(
            select(Image.id, Group.name).join(Group, Group.id == Image.group_id).where(Image.id.in_(alive))
        ).all()
    )
    out = [
        Neighbour(
            image_id=i,
            group=groups.get(i),
            status=alive[i],
            distance=d,
            thumbnail_url=urls.image_thumbnail(i),
            url=f"{urls.API_PREFIX}/images/{i}",
        )
        for i, d in live
    ]
    note = None if len(out) == k else f"the dataset has only {len(out)} other non-deleted images with embeddings"
    return out, note


def analyse(
    services: HubServices,
    session: Session,
    cache: classify.RuntimeCache,
    classifier: Classifier,
    upload: classify.NamedImage | None,
    image_id: int | None,
    k: int,
) -> AnalyseAnswer:
    """Probabilities of every group, the anomaly explained and the k nearest dataset images of one image."""
    limits = services.settings.classify
    image = None
    if image_id is not None:
        image = _dataset_image(session, classifier, image_id)
        try:
            upload = classify.NamedImage(f"image_id={image_id}", services.store.get(image.sha256))
        except ObjectNotFound:
            raise NotFoundError(f"image_id={image_id}: its file is missing from the store") from None
    if upload is None:
        raise InvalidError("send an image as multipart 'file' or JSON {\"image_id\": N}")
    classify.check_request([upload], limits)
    model, is_default = classify.choose_model(session, classifier)
    runtime = cache.get(model)
    spec = runtime.manifest.preprocessing
    side = max(spec.resize, spec.size)
    classify.check_pixels([upload], limits, side)
    try:
        decoded = classify.decode_bounded(upload.data, limits.max_image_pixels, side)
    except ImageError as exc:
        raise InvalidError(f"{upload.name}: {exc}") from None
    scored = score_images(runtime, [decoded])[0]
    cal = runtime.manifest.anomaly
    near, note = neighbours(services, session, classifier, image, upload.data, k)
    return AnalyseAnswer.model_validate(
        {
            "model": {
                "id": model.id,
                "classifier": runtime.manifest.classifier if is_default else classifier.name,
                "version": model.version,
                "default": is_default,
            },
            "image_id": image_id,
            "label": scored.label,
            "probability": scored.probability,
            "probabilities": [{"group": g, "probability": p} for g, p in scored.probabilities.items()],
            "anomaly": {
                "anomaly": scored.anomaly,
                "score": scored.anomaly_score,
                "threshold": scored.threshold,
                "target_flag_rate": cal.target_flag_rate,
                "explanation": explain(scored, cal),
            },
            "k": k,
            "neighbours": near,
            "neighbours_note": note,
        }
    )
