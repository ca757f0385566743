"""The older tools' operations over camfleet: temple_id → site, category → group, train_test → training or test set.

Every function raises ``ServiceError`` kinds for bad input (the router answers them in the old tools' shapes with
a 4xx status); nothing here knows HTTP.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from camfleet_contract.images import ImageError, probe_image, thumbnail_jpeg
from camfleet_hub.auth.models import Role
from camfleet_hub.compat.models import HoldoutImage
from camfleet_hub.compat.schemas import (
    NO_CATEGORY,
    CompatSettings,
    MakeModelAnswer,
    MakeModelRequest,
    PredictAnswer,
    PredictRequest,
    SaveDataAnswer,
    SaveDataRequest,
)
from camfleet_hub.core.db.types import utcnow
from camfleet_hub.core.errors import InvalidError, NotFoundError, ServiceError
from camfleet_hub.core.store.base import sha256_hex
from camfleet_hub.datasets import crud
from camfleet_hub.datasets.embeddings import decode_for_embedding, store_embeddings
from camfleet_hub.datasets.media import THUMB_PREFIX, THUMB_SIZE
from camfleet_hub.datasets.models import Blob, Classifier, Image, ImageSource, ImageStatus, Site
from camfleet_hub.imports.fetch import FetchError, fetch
from camfleet_hub.imports.jobs import fetch_limits
from camfleet_hub.ingest.persist import insert_ignore
from camfleet_hub.serving import classify as classify_service
from camfleet_hub.serving.service import LogContext, Scored, log_predictions, score_images
from camfleet_hub.training import announce, jobs, registry
from camfleet_hub.training.models import JobStatus, ModelStatus, ModelVersion, TrainingJob

if TYPE_CHECKING:
    from camfleet_hub.auth.principal import Principal
    from camfleet_hub.core.container import HubServices

POLL_S = 0.5
FINISHED = (JobStatus.SUCCEEDED.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value)


class BadRequest(ServiceError):
    """The old tools answered 400 for every bad request; their clients check for it."""

    status_code = 400


def settings_of(services: HubServices) -> CompatSettings:
    return services.settings.compat


def decode_base64(text: str, field: str) -> bytes:
    """Base64 (a ``data:image/...;base64,`` prefix allowed) → bytes; 400 naming the field otherwise."""
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{field}: not valid base64") from None
    if not data:
        raise BadRequest(f"{field}: empty image")
    return data


# --------------------------------------------------------------------------- temple_id → site + classifier


def classifier_name(cfg: CompatSettings, temple_id: str, asked: str | None = None) -> str:
    return asked or cfg.classifiers.get(temple_id, cfg.classifier)


def temple_classifier(
    services: HubServices,
    session: Session,
    user: Principal,
    temple_id: str,
    role: Role,
    create: bool = False,
    asked: str | None = None,
) -> Classifier:
    """The classifier that serves ``temple_id``; with ``create`` an unknown site/classifier is made (hub admins)."""
    cfg = settings_of(services)
    name = classifier_name(cfg, temple_id, asked)
    site = session.scalar(select(Site).where(Site.name == temple_id))
    if site is None:
        if not (create and cfg.create_sites):
            raise NotFoundError(f"temple_id={temple_id!r}: no such site on this hub")
        user.require_admin()
        site = crud.create_site(session, crud.checked_name(temple_id, "temple_id"))
    user.require(site.id, role, site.name)
    clf = session.scalar(select(Classifier).where(Classifier.site_id == site.id, Classifier.name == name))
    if clf is None:
        if not (create and cfg.create_sites):
            raise NotFoundError(f"temple_id={temple_id!r}: site has no classifier {name!r} (compat.classifier)")
        user.require(site.id, Role.ADMIN, site.name)
        clf = crud.create_classifier(session, site, name)
    return clf


# --------------------------------------------------------------------------- save_data


def save_data(services: HubServices, session: Session, user: Principal, req: SaveDataRequest) -> SaveDataAnswer:
    """Store one image in the category's group; ``test`` images are held out of training."""
    limits = services.settings.classify
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
    group = crud.ensure_group(session, classifier, req.category)
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
            original_name=(req.image_name or f"image.{req.image_type}")[:512],
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
    return SaveDataAnswer(error_msg="All OK", image_id=image.id)


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


# --------------------------------------------------------------------------- predict


@dataclass(frozen=True)
class Predicted:
    model: ModelVersion
    results: list[Scored]


def classify_bytes(
    services: HubServices,
    session: Session,
    cache: classify_service.RuntimeCache,
    model: ModelVersion,
    images: list[classify_service.NamedImage],
) -> list[Scored]:
    """Bounded like ``/classify`` (bytes, header pixels, reduced-scale decode), then every probability."""
    limits = services.settings.classify
    classify_service.check_request(images, limits)
    runtime = cache.get(model)
    spec = runtime.manifest.preprocessing
    side = max(spec.resize, spec.size)
    classify_service.check_pixels(images, limits, side)
    decoded = []
    for i, image in enumerate(images):
        try:
            decoded.append(classify_service.decode_bounded(image.data, limits.max_image_pixels, side))
        except ImageError as exc:
            raise InvalidError(f"images[{i}] ({image.name}): {exc}") from None
    return score_images(runtime, decoded)


def predict(
    services: HubServices,
    session: Session,
    cache: classify_service.RuntimeCache,
    user: Principal,
    req: PredictRequest,
) -> PredictAnswer:
    """Top class per image, or "No category (Anomaly)" under ``min_confidence`` or when the model flags it."""
    cfg = settings_of(services)
    classifier = temple_classifier(services, session, user, req.temple_id, Role.VIEWER, asked=req.classifier)
    texts = req.image if isinstance(req.image, list) else [req.image]
    names = req.image_name if isinstance(req.image_name, list) else [req.image_name]
    if not texts:
        raise BadRequest("image: send at least one base64 image")
    if len(names) != len(texts):
        raise BadRequest(f"image_name: {len(names)} names for {len(texts)} images")
    model = announce.production_model(session, classifier)
    if model is None:
        raise BadRequest(f"temple_id={req.temple_id!r}: no trained model yet; send /api/make_model first")
    images = [
        classify_service.NamedImage(names[i] or f"image[{i}]", decode_base64(t, f"image[{i}]"))
        for i, t in enumerate(texts)
    ]
    try:
        results = classify_bytes(services, session, cache, model, images)
    except InvalidError as exc:
        raise BadRequest(exc.detail) from None
    ctx = LogContext(classifier.site_id, classifier.name, model.id, model.version, user.name, "api/predict")
    log_predictions(session, ctx, [i.name for i in images], results)
    session.commit()
    floor = cfg.min_confidence if req.min_confidence is None else req.min_confidence
    labels = [r.label if r.probability >= floor and not r.anomaly else NO_CATEGORY for r in results]
    confidences = [r.probability for r in results]
    if isinstance(req.image, list):
        return PredictAnswer(image_class=labels, class_confidence=confidences, model_version=model.version)
    return PredictAnswer(image_class=labels[0], class_confidence=confidences[0], model_version=model.version)


# --------------------------------------------------------------------------- make_model


def holdout_rows(session: Session, classifier: Classifier) -> list[tuple[int, str, str]]:
    """(image id, sha256, group name) of the classifier's test set (confirmed images only)."""
    from camfleet_hub.datasets.models import Group

    rows = session.execute(
        select(Image.id, Image.sha256, Group.name)
        .join(HoldoutImage, HoldoutImage.image_id == Image.id)
        .join(Group, Image.group_id == Group.id)
        .where(HoldoutImage.classifier_id == classifier.id, Image.status == ImageStatus.GROUP.value)
        .order_by(Image.id)
    )
    return [(int(i), s, g) for i, s, g in rows]


def holdout_accuracy(
    services: HubServices, session: Session, cache: classify_service.RuntimeCache, model: ModelVersion
) -> tuple[float, int] | None:
    """Share of the classifier's test images the model classifies as their group; stored in its metrics."""
    assert model.classifier is not None
    rows = holdout_rows(session, model.classifier)
    if not rows:
        return None
    runtime = cache.get(model)
    limit = services.settings.ingest.max_pixels
    right = 0
    for start in range(0, len(rows), 32):
        chunk = rows[start : start + 32]
        decoded = [decode_for_embedding(services.store.get(sha), limit) for _i, sha, _g in chunk]
        for (_i, _sha, group), r in zip(chunk, score_images(runtime, decoded), strict=True):
            right += r.label == group
    accuracy = right / len(rows)
    model.metrics = {**(model.metrics or {}), "test_accuracy": accuracy, "test_images": len(rows)}
    session.commit()
    return accuracy, len(rows)


def make_model(
    services: HubServices,
    session: Session,
    cache: classify_service.RuntimeCache,
    user: Principal,
    req: MakeModelRequest,
) -> tuple[int, MakeModelAnswer]:
    """Queue a training job, wait for a trainer to finish it, test it on the test set, promote it."""
    cfg = settings_of(services)
    answer = MakeModelAnswer()
    classifier = temple_classifier(services, session, user, req.temple_id, Role.ADMIN, asked=req.classifier)
    current = announce.production_model(session, classifier)
    if current is not None and not req.forceful:
        answer.error_msg.append(
            f"temple_id={req.temple_id!r} already has a trained model (version {current.version}); "
            "send forceful=true to replace it"
        )
        return 400, answer
    counts = jobs.trainable_groups(session, classifier)
    ready = {g: n for g, n in counts.items() if n >= jobs.MIN_IMAGES_PER_GROUP}
    answer.got_training_data_flag = len(ready) >= jobs.MIN_GROUPS
    answer.test_images = len(holdout_rows(session, classifier))
    answer.got_testing_data_flag = answer.test_images > 0
    if not answer.got_training_data_flag:
        have = ", ".join(f"{g} ({n})" for g, n in sorted(counts.items())) or "none"
        answer.error_msg.append(
            f"training data: need at least {jobs.MIN_GROUPS} categories with at least "
            f"{jobs.MIN_IMAGES_PER_GROUP} train images each; have {have}"
        )
    if not answer.got_testing_data_flag:
        answer.error_msg.append(f"testing data: no test images for temple_id={req.temple_id!r} (train_test='test')")
    if answer.error_msg:
        return 400, answer
    try:
        job = jobs.create_job(session, classifier, mode=cfg.make_model_mode, auto_promote=False)
    except ServiceError as exc:
        answer.error_msg.append(exc.detail)
        return 409 if exc.status_code == 409 else 400, answer
    answer.job_id = job.id
    answer.made_model_architecture_flag = True
    finished = _wait(session, job.id, cfg.make_model_wait_s)
    if finished is None:
        answer.error_msg.append(
            f"training job id={job.id} still running after compat.make_model_wait_s={cfg.make_model_wait_s:g}; "
            f"follow it at GET /api/v1/jobs/{job.id}"
        )
        return 202, answer
    if finished.status != JobStatus.SUCCEEDED.value or finished.model_version_id is None:
        answer.error_msg.append(f"training job id={job.id} {finished.status}: {finished.message or 'no reason'}")
        return 400, answer
    answer.trained_model_flag = True
    model = registry.get_model(session, finished.model_version_id)
    answer.model_version = model.version
    tested = holdout_accuracy(services, session, cache, model)
    if tested is not None:
        answer.test_accuracy, answer.test_images = tested
        answer.tested_model_flag = True
    if model.status != ModelStatus.PRODUCTION.value:
        registry.promote(services, session, model)
    answer.saved_model_flag = True
    return 200, answer


def _wait(session: Session, job_id: int, wait_s: float) -> TrainingJob | None:
    """The job once it finished, or None when ``wait_s`` passed first (polled; a trainer does the work)."""
    deadline = time.monotonic() + wait_s
    while True:
        session.expire_all()
        job = jobs.get_job(session, job_id)
        if job.status in FINISHED:
            return job
        session.rollback()  # end the read transaction so the trainer's writes become visible
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL_S)


# --------------------------------------------------------------------------- GET /cv


@dataclass(frozen=True)
class CvQuery:
    target: str
    how_many: int | None
    site: str
    classifier: str


def parse_cv_query(raw: str, cfg: CompatSettings) -> CvQuery:
    """``PATH_OR_URL[:HOW_MANY]`` as the dataset tool took it, or ``path=…&how_many=…&site=…&classifier=…``."""
    text = unquote(raw)
    params = parse_qs(raw, keep_blank_values=True) if raw.startswith(("path=", "site=", "classifier=")) else {}
    if params:
        text = params.get("path", [""])[0]
        count = params.get("how_many", [""])[0]
        site = params.get("site", [cfg.cv_site])[0]
        clf = params.get("classifier", [cfg.cv_classifier])[0]
        how_many = int(count) if count.isdigit() else None
        if count and how_many is None:
            raise BadRequest(f"how_many={count!r}: expected a whole number")
    else:
        site, clf, how_many = cfg.cv_site, cfg.cv_classifier, None
        head, sep, tail = text.rpartition(":")
        if sep and tail.isdigit() and head:
            text, how_many = head, int(tail)
    if not text:
        raise BadRequest("give a file path or an http(s) URL: /cv?PATH_OR_URL[:HOW_MANY]")
    if not site or not clf:
        raise BadRequest("no classifier: set compat.cv_site and compat.cv_classifier, or pass site= and classifier=")
    if how_many is not None and how_many < 1:
        raise BadRequest(f"how_many={how_many}: at least 1")
    return CvQuery(text, how_many, site, clf)


def read_cv_target(services: HubServices, target: str) -> bytes:
    """An http(s) URL through the URL-import guard, or a file inside one of ``compat.cv_roots``."""
    limits = services.settings.classify
    if target.lower().startswith(("http://", "https://")):
        fl = fetch_limits(services)
        try:
            with httpx.Client(timeout=httpx.Timeout(fl.timeout_s)) as client:
                return fetch(client, target, fl)
        except FetchError as exc:
            raise BadRequest(f"url: {exc}") from None
    roots = [Path(r).expanduser().resolve() for r in settings_of(services).cv_roots]
    if not roots:
        raise BadRequest("local paths are off: set compat.cv_roots to the folders /cv may read, or send a URL")
    try:
        path = Path(target).expanduser().resolve(strict=True)
    except (OSError, RuntimeError):
        raise BadRequest(f"path={target!r} does not exist on the hub") from None
    if not any(path.is_relative_to(r) for r in roots):
        raise BadRequest(f"path={target!r} is outside compat.cv_roots")
    if not path.is_file():
        raise BadRequest(f"path={target!r} is not a file")
    if path.stat().st_size > limits.max_image_bytes:
        raise BadRequest(f"path={target!r}: over classify.max_image_bytes={limits.max_image_bytes}")
    return path.read_bytes()


def cv(
    services: HubServices, session: Session, cache: classify_service.RuntimeCache, user: Principal, raw_query: str
) -> dict[str, float]:
    """``{group: probability}`` of the top HOW_MANY groups (every group without it), most likely first."""
    q = parse_cv_query(raw_query, settings_of(services))
    classifier = crud.get_classifier(session, q.site, q.classifier)
    user.require(classifier.site_id, Role.VIEWER, q.site)
    model, _default = classify_service.choose_model(session, classifier)
    data = read_cv_target(services, q.target)
    name = q.target.rsplit("/", 1)[-1] or q.target
    try:
        results = classify_bytes(services, session, cache, model, [classify_service.NamedImage(name, data)])
    except InvalidError as exc:
        raise BadRequest(exc.detail) from None
    ctx = LogContext(classifier.site_id, classifier.name, model.id, model.version, user.name, "cv")
    log_predictions(session, ctx, [q.target], results)
    session.commit()
    ranked = list(results[0].probabilities.items())
    return dict(ranked[: q.how_many] if q.how_many else ranked)
