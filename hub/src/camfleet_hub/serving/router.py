"""REST classification: multipart ``files`` + form ``site``/``classifier``, or JSON with base64 images."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from camfleet_hub.auth.deps import CurrentUserDep, SiteViewerDep
from camfleet_hub.auth.models import Role
from camfleet_hub.core.config import ClassifySettings
from camfleet_hub.core.deps import ServicesDep, SessionDep
from camfleet_hub.core.errors import InvalidError, TooLargeError
from camfleet_hub.core.http_errors import invalid_from
from camfleet_hub.datasets import crud
from camfleet_hub.serving import analyse as analysis
from camfleet_hub.serving import classify as service
from camfleet_hub.serving.schemas import (
    DEFAULT_NEIGHBOURS,
    MAX_NEIGHBOURS,
    AnalyseAnswer,
    AnalyseRequest,
    ClassifyAnswer,
    ClassifyRequest,
)

router = APIRouter(tags=["classify"])
MAX_TOP_K = 1000

BODIES: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files", "site", "classifier"],
                    "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        "site": {"type": "string"},
                        "classifier": {"type": "string"},
                        "urls": {"type": "array", "items": {"type": "string"}},
                        "top_k": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K},
                    },
                }
            },
            "application/json": {"schema": ClassifyRequest.model_json_schema()},
        },
    }
}


def _form_text(form: Any, field: str) -> str:
    value = form.get(field)
    if not isinstance(value, str):
        raise InvalidError(f"{field}: missing form field {field!r}")
    return value


def _top_k(value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip().isdigit() or not 1 <= int(value) <= MAX_TOP_K:
        raise InvalidError(f"top_k: {str(value)[:20]!r} is not a whole number from 1 to {MAX_TOP_K}")
    return int(value)


@dataclass(frozen=True)
class ClassifyInput:
    site: str
    classifier: str
    images: list[service.NamedImage]
    urls: list[str]
    top_k: int | None


async def _from_form(request: Request, limits: ClassifySettings) -> ClassifyInput:
    # The body itself is bounded by the limits middleware before this reads it.
    form = await request.form(max_files=limits.max_images + 1, max_fields=8 + limits.max_images)
    try:
        images = []
        for i, upload in enumerate(form.getlist("files")):
            if not isinstance(upload, UploadFile):
                raise InvalidError(f"files[{i}]: expected a file upload, got a text field")
            data = await upload.read(limits.max_image_bytes + 1)
            images.append(service.NamedImage(upload.filename or f"files[{i}]", data))
        urls = [u for u in form.getlist("urls") if isinstance(u, str)]
        site, clf = _form_text(form, "site"), _form_text(form, "classifier")
        return ClassifyInput(site, clf, images, urls, _top_k(form.get("top_k")))
    finally:
        await form.close()


def _from_json(raw: bytes, limits: ClassifySettings) -> ClassifyInput:
    try:
        body = ClassifyRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise invalid_from(exc) from None
    if len(body.images) + len(body.urls) > limits.max_images:
        raise TooLargeError(
            f"images: {len(body.images) + len(body.urls)} images in one request, "
            f"over classify.max_images={limits.max_images}"
        )
    images = []
    for i, text in enumerate(body.images):
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidError(f"images[{i}]: not valid base64 ({exc})") from None
        images.append(service.NamedImage(f"images[{i}]", data))
    return ClassifyInput(body.site, body.classifier, images, body.urls, body.top_k)


@router.post("/classify", operation_id="classify", response_model=ClassifyAnswer, openapi_extra=BODIES)
async def classify(
    request: Request, session: SessionDep, services: ServicesDep, user: CurrentUserDep
) -> ClassifyAnswer:
    """Needs the viewer role in the named site. Images as multipart ``files``, base64 JSON ``images`` or ``urls``
    (fetched through the URL-import guard); ``top_k`` predictions per image. Concurrent requests for one model
    run as one batch. 503 with Retry-After while ``classify.concurrency`` requests decode, or when the model's
    queue holds ``classify.queue_images``."""
    limits = services.settings.classify
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith(("multipart/form-data", "application/json")):
        raise InvalidError(
            f"content-type={ctype!r}: send multipart/form-data with 'files', 'site' and 'classifier', "
            'or JSON {"site", "classifier", "images": [base64, ...]}'
        )
    services.runtimes.slots.acquire()  # before the body is read: a busy hub holds no more request bodies
    in_thread = False  # the thread releases the slot once it runs (it always finishes: the wait is not abandoned)
    try:
        if ctype.startswith("multipart/form-data"):
            body = await _from_form(request, limits)
        else:
            body = _from_json(await request.body(), limits)
        if len(body.images) + len(body.urls) > limits.max_images:
            raise TooLargeError(
                f"images: {len(body.images) + len(body.urls)} images in one request, "
                f"over classify.max_images={limits.max_images}"
            )

        def run() -> ClassifyAnswer:
            # One thread hop per request: decode, then wait for the batch and the log.
            nonlocal in_thread
            in_thread = True
            try:
                classifier = crud.get_classifier(session, body.site, body.classifier)
                user.require(classifier.site_id, Role.VIEWER, body.site)
                fetched = service.fetch_urls(body.urls, services.settings) if body.urls else []
                prepared = service.prepare(services, session, services.runtimes, classifier, body.images + fetched)
                session.close()  # the wait for the batch and the log holds no database connection
            finally:
                services.runtimes.slots.release()  # nor a slot: only the tensors wait, bounded by queue_images
            return service.finish(services.prediction_log, prepared, user.name, body.top_k)

        return await run_in_threadpool(run)
    finally:
        if not in_thread:
            services.runtimes.slots.release()


ANALYSE_BODIES: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
            "application/json": {"schema": AnalyseRequest.model_json_schema()},
        },
    }
}


async def _analyse_input(request: Request, limits: ClassifySettings) -> tuple[service.NamedImage | None, int | None]:
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("application/json"):
        try:
            return None, AnalyseRequest.model_validate_json(await request.body()).image_id
        except ValidationError as exc:
            raise invalid_from(exc) from None
    if not ctype.startswith("multipart/form-data"):
        raise InvalidError(
            f"content-type={ctype!r}: send multipart/form-data with one 'file', or JSON {{\"image_id\": N}}"
        )
    form = await request.form(max_files=2, max_fields=2)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidError("file: missing multipart file field 'file'")
        data = await upload.read(limits.max_image_bytes + 1)
        return service.NamedImage(upload.filename or "file", data), None
    finally:
        await form.close()


@router.post(
    "/sites/{site}/classifiers/{clf}/analyse",
    operation_id="analyse_image",
    response_model=AnalyseAnswer,
    openapi_extra=ANALYSE_BODIES,
)
async def analyse(
    site: str,
    clf: str,
    request: Request,
    session: SessionDep,
    services: ServicesDep,
    _user: SiteViewerDep,
    k: Annotated[int, Query(ge=1, le=MAX_NEIGHBOURS, description="how many similar images")] = DEFAULT_NEIGHBOURS,
) -> AnalyseAnswer:
    """Every group's probability under the production model (else the ImageNet default), the anomaly score against
    its threshold in words, and the ``k`` nearest dataset images. Needs the viewer role in the site."""
    limits = services.settings.classify
    services.runtimes.slots.acquire()  # the same slots as /classify: one more model run per request
    try:
        upload, image_id = await _analyse_input(request, limits)

        def run() -> AnalyseAnswer:
            classifier = crud.get_classifier(session, site, clf)
            return analysis.analyse(services, session, services.runtimes, classifier, upload, image_id, k)

        return await run_in_threadpool(run)
    finally:
        services.runtimes.slots.release()
