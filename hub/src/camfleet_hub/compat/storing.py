"""``save_data``: one image into the category's group; ``train_test = test`` holds it out of training."""

from __future__ import annotations

from pathlib import PurePath
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from camfleet_contract.images import ImageError, probe_image, thumbnail_jpeg
from camfleet_hub.auth.models import Role
from camfleet_hub.compat.models import HoldoutImage
from camfleet_hub.compat.names import as_name
from camfleet_hub.compat.schemas import NONE_CATEGORIES, SaveDataAnswer, SaveDataRequest
from camfleet_hub.compat.temples import BadRequest, decode_base64, temple_classifier
from camfleet_hub.core.db.types import utcnow
from camfleet_hub.core.store.base import sha256_hex
from camfleet_hub.datasets import crud
from camfleet_hub.datasets.embeddings import decode_for_embedding, store_embeddings
from camfleet_hub.datasets.media import THUMB_PREFIX, THUMB_SIZE
from camfleet_hub.datasets.models import Blob, Image, ImageSource, ImageStatus
from camfleet_hub.ingest.persist import insert_ignore

if TYPE_CHECKING:
    from camfleet_hub.auth.principal import Principal
    from camfleet_hub.core.container import HubServices


def save_data(services: HubServices, session: Session, user: Principal, req: SaveDataRequest) -> SaveDataAnswer:
    """Store one image in the category's group; ``test`` images are held out of training."""
    limits = services.settings.classify
    group_name = as_name(req.category, "category")
    classifier = temple_classifier(
        services, session, user, req.temple_id, Role.LABELLER, create=True, asked=req.classifier
    )
    data = decode_base64(req.image, "image")
    if len(data) > limits.max_image_bytes:
        raise BadRequest(f"image: {len(data)} bytes, over classify.max_image_bytes={limits.max_image_bytes}")
    try:
        fmt, width, height = probe_image(data)
        rgb = decode_for_embedding(data, services.settings.ingest.max_pixels)
    except ImageError as exc:
        raise BadRequest(f"image ({req.image_name or 'unnamed'}): {exc}") from None
    new_group = crud.find_group(session, classifier, group_name) is None
    group = crud.ensure_group(session, classifier, group_name)
    if new_group and req.category.strip().casefold() in NONE_CATEGORIES:
        group.none_of_the_above = True
    sha = sha256_hex(data)
    image = session.scalar(select(Image).where(Image.classifier_id == classifier.id, Image.sha256 == sha))
    if image is None:
        store = services.store
        store.put(data)
        thumb = store.put(thumbnail_jpeg(rgb, size=THUMB_SIZE), prefix=THUMB_PREFIX)
        blob = {"sha256": sha, "size": len(data), "width": width, "height": height, "format": fmt}
        insert_ignore(session, Blob, [{**blob, "thumb_sha256": thumb, "created_at": utcnow()}], ["sha256"])
        image = Image(
            classifier_id=classifier.id,
            sha256=sha,
            source=ImageSource.UPLOAD.value,
            original_name=_file_name(req)[:512],
            origin=f"save_data {req.train_test}",
        )
        session.add(image)
    image.status = ImageStatus.GROUP.value
    image.group_id = group.id
    image.labelled_by = user.name[:64]
    session.flush()
    held = session.get(HoldoutImage, image.id)
    if req.train_test == "test" and held is None:
        session.add(HoldoutImage(image_id=image.id, classifier_id=classifier.id))
    elif req.train_test == "train" and held is not None:
        session.delete(held)
    _embed(services, session, classifier.id, image.id, sha, rgb)
    session.commit()
    return SaveDataAnswer(error_msg="All OK")


def _file_name(req: SaveDataRequest) -> str:
    """``image_name`` + ``.image_type``, the file the temple server wrote (a name with a suffix kept as it is)."""
    name = req.image_name or "image"
    return name if PurePath(name).suffix else f"{name}.{req.image_type}"


def _embed(services: HubServices, session: Session, classifier_id: int, image_id: int, sha: str, rgb: object) -> None:
    """The image's embedding under the default model, as imports store it (quick training and search use it)."""
    if services.embedder is None:
        return  # the back-fill of the serving hub embeds it later
    loaded = services.embedder.runtime(session)
    if loaded is None:
        return
    model, runtime = loaded
    vector = services.embedder.embed(runtime, [rgb])[0]  # type: ignore[list-item]
    store_embeddings(session, model, {sha: vector})
    if services.near_indexes is not None:
        services.near_indexes.add(classifier_id, model, image_id, vector)
