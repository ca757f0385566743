"""``predict`` and ``GET /cv``: the production (or chosen) model's answer in the old tools' shapes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote

import httpx
from sqlalchemy.orm import Session

from camfleet_contract.images import ImageError
from camfleet_hub.auth.models import Role
from camfleet_hub.compat.names import from_name
from camfleet_hub.compat.schemas import NO_CATEGORY, CompatSettings, PredictAnswer, PredictRequest
from camfleet_hub.compat.temples import BadRequest, decode_base64, settings_of, temple_classifier
from camfleet_hub.core.errors import InvalidError
from camfleet_hub.datasets import crud
from camfleet_hub.imports.fetch import FetchError, fetch
from camfleet_hub.imports.jobs import fetch_limits
from camfleet_hub.serving import classify as classify_service
from camfleet_hub.serving.service import LogContext, Scored, score_images
from camfleet_hub.training import announce
from camfleet_hub.training.models import ModelVersion

if TYPE_CHECKING:
    from camfleet_hub.auth.principal import Principal
    from camfleet_hub.core.container import HubServices


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
    if not texts:
        raise BadRequest("image: send at least one base64 image")
    names = _names(req.image_name, len(texts))
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
    services.prediction_log.write(ctx, [i.name for i in images], results)
    floor = cfg.min_confidence if req.min_confidence is None else req.min_confidence
    # A none-of-the-above group on top is answered by its own name, as the temple server answered any category.
    none = set(model.manifest.get("none_classes") or ())
    labels = [
        from_name(r.label) if r.probability >= floor and (r.label in none or not r.anomaly) else NO_CATEGORY
        for r in results
    ]
    confidences = [r.probability for r in results]
    if isinstance(req.image, list):
        return PredictAnswer(image_class=labels, class_confidence=confidences, model_version=model.version)
    return PredictAnswer(image_class=labels[0], class_confidence=confidences[0], model_version=model.version)


def _names(given: str | list[str], count: int) -> list[str]:
    """One name per image: a list as sent, one name for a single image (indexed for a list), or none at all."""
    if isinstance(given, list):
        if len(given) != count:
            raise BadRequest(f"image_name: {len(given)} names for {count} images")
        return given
    if count == 1 or not given:
        return [given] * count
    return [f"{given}[{i}]" for i in range(count)]


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
    # One answer whether the file is missing, elsewhere or not a file: a caller learns nothing of the hub's disk.
    refused = BadRequest(f"path={target!r} is not a file inside compat.cv_roots")
    path = Path(target).expanduser()
    if not any(path.resolve().is_relative_to(r) for r in roots):
        raise refused
    try:
        path = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise refused from None
    if not any(path.is_relative_to(r) for r in roots) or not path.is_file():
        raise refused
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
    services.prediction_log.write(ctx, [q.target], results)
    ranked = [(from_name(group), p) for group, p in results[0].probabilities.items()]
    return dict(ranked[: q.how_many] if q.how_many else ranked)
