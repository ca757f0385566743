"""Outliers: the grouped images farthest from the rest of their own group, from the stored embeddings.

Distance is the cosine distance of an image's stored ImageNet-default embedding to the centroid of the *other*
images of its group (leave-one-out, so a small group's odd image does not pull the centroid to itself). The
nearest other group's centroid is offered as where the image may belong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from camfleet_hub.core import urls
from camfleet_hub.datasets.embeddings import load_vectors
from camfleet_hub.datasets.models import Classifier, Group, Image, ImageStatus

if TYPE_CHECKING:
    from camfleet_hub.core.container import HubServices

SHOWN = 60


@dataclass(frozen=True)
class Outlier:
    image_id: int
    group: str
    distance: float  # to the centroid of the other images of its group (0 = typical, up to 2)
    nearest_group: str | None  # the other group whose centroid is closest, if any
    nearest_distance: float | None
    thumbnail_url: str


@dataclass(frozen=True)
class OutlierList:
    rows: list[Outlier]
    note: str | None  # why the list is empty or partial


def _unit(m: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(m, axis=-1, keepdims=True)
    return np.asarray(m / np.maximum(norms, 1e-12), dtype=np.float32)


def find(services: HubServices, session: Session, classifier: Classifier, limit: int = SHOWN) -> OutlierList:
    """The ``limit`` grouped images farthest from their group, farthest first."""
    if services.embedder is None:
        return OutlierList([], "this hub computes no embeddings, so it cannot measure distances")
    model = services.embedder.current_model(session)
    if model is None:
        return OutlierList([], "no ImageNet default model: upload one (PUT /api/v1/models/default) to find outliers")
    rows = session.execute(
        select(Image.id, Image.sha256, Group.name)
        .join(Group, Group.id == Image.group_id)
        .where(Image.classifier_id == classifier.id, Image.status == ImageStatus.GROUP.value)
        .order_by(Image.id)
    ).all()
    vectors = load_vectors(session, [sha for _, sha, _ in rows], model)
    members: dict[str, list[tuple[int, np.ndarray]]] = {}
    missing = 0
    for image_id, sha, group in rows:
        v = vectors.get(sha)
        if v is None:
            missing += 1
            continue
        members.setdefault(group, []).append((image_id, v))
    sums = {g: _unit(np.stack([v for _, v in m])).sum(axis=0) for g, m in members.items()}
    names = sorted(sums)
    centroids = _unit(np.stack([sums[g] for g in names])) if names else np.zeros((0, 1), np.float32)
    out: list[Outlier] = []
    for group, items in members.items():
        if len(items) < 2:  # one image is its own group's centroid: no distance to speak of
            continue
        for image_id, v in items:
            u = _unit(v)
            rest = _unit(sums[group] - u)
            distance = float(1.0 - np.dot(u, rest))
            sims = centroids @ u
            others = [(1.0 - float(s), g) for g, s in zip(names, sims, strict=True) if g != group]
            best = min(others) if others else None
            out.append(
                Outlier(
                    image_id,
                    group,
                    distance,
                    best[1] if best else None,
                    best[0] if best else None,
                    urls.image_thumbnail(image_id),
                )
            )
    out.sort(key=lambda o: (-o.distance, o.image_id))
    note = None
    if missing:
        note = f"{missing} grouped image(s) have no embedding yet (computed in the background) and are not ranked"
    elif not out:
        note = "no group has two or more images with embeddings"
    return OutlierList(out[:limit], note)
