"""The Try it page (``/ui/try``): an image from an upload, paste, webcam or drawing, classified by the ImageNet
default or a visible classifier; its script posts to ``/ui/try/classify`` (JSON) and adds to a dataset through the
REST import API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from camfleet_hub.auth.deps import CurrentUserDep, visible_site_ids
from camfleet_hub.auth.models import Role
from camfleet_hub.auth.principal import Principal
from camfleet_hub.core.deps import ServicesDep, SessionDep
from camfleet_hub.core.errors import InvalidError, UnavailableError
from camfleet_hub.datasets import crud
from camfleet_hub.datasets.models import Classifier, Site
from camfleet_hub.serving import classify as clf_service
from camfleet_hub.serving.schemas import AnalysedModel, PredictionPublic, TryAnswer
from camfleet_hub.serving.service import LogContext, score_images
from camfleet_hub.training import announce
from camfleet_hub.web.render import render

router = APIRouter(include_in_schema=False)

TRY_TOP = 5


@dataclass(frozen=True, slots=True)
class TryTarget:
    """A classifier the Try page offers: ``value`` is what its form posts, ``groups`` what an image may be added to."""

    value: str
    site: str
    clf: str
    can_label: bool
    groups: list[str]


def _visible_classifiers(session: Session, user: Principal) -> list[TryTarget]:
    ids = visible_site_ids(user, session)
    query = select(Classifier).join(Site, Site.id == Classifier.site_id).order_by(Site.name, Classifier.name)
    if ids is not None:
        query = query.where(Classifier.site_id.in_(ids))
    out = []
    for c in session.scalars(query):
        role = user.role_in(c.site_id)
        out.append(
            TryTarget(
                value=f"{c.site.name}/{c.name}",
                site=c.site.name,
                clf=c.name,
                can_label=role is not None and role.rank >= Role.LABELLER.rank,
                groups=[g.name for g in crud.list_groups(session, c)],
            )
        )
    return out


@router.get("/ui/try", response_class=HTMLResponse, name="serving.try")
def try_page(request: Request, session: SessionDep, user: CurrentUserDep) -> HTMLResponse:
    """Upload, paste, webcam or drawing → top-5 of the ImageNet default or a visible classifier."""
    return render(request, "serving/try.html", {"classifiers": _visible_classifiers(session, user), "top": TRY_TOP})


def _score(
    services: Any, session: Any, cache: clf_service.RuntimeCache, classifier: Classifier | None, image: Any
) -> tuple[Any, bool, Any, Any]:
    """(model, is_default, runtime, scored) for one image; the ImageNet default when ``classifier`` is None."""
    limits = services.settings.classify
    clf_service.check_request([image], limits)
    if classifier is None:
        model = announce.default_model(session)
        if model is None:
            raise UnavailableError("no ImageNet default model: upload one with PUT /api/v1/models/default")
        is_default = True
    else:
        model, is_default = clf_service.choose_model(session, classifier)
    runtime = cache.get(model)
    spec = runtime.manifest.preprocessing
    side = max(spec.resize, spec.size)
    clf_service.check_pixels([image], limits, side)
    try:
        decoded = clf_service.decode_bounded(image.data, limits.max_image_pixels, side)
    except Exception as exc:  # ImageError and PIL's own: a bad image is the caller's 422
        raise InvalidError(f"file ({image.name}): {exc}") from None
    return model, is_default, runtime, score_images(runtime, [decoded])[0]


@router.post("/ui/try/classify", response_model=None, name="serving.try_classify")
async def try_classify(
    request: Request, session: SessionDep, services: ServicesDep, user: CurrentUserDep
) -> JSONResponse:
    """Multipart ``file`` and ``target`` ('' = ImageNet default, else 'site/classifier') → top-5, anomaly flag.
    A site classifier's prediction is logged (route 'try') like REST classify."""
    limits = services.settings.classify
    services.runtimes.slots.acquire()
    try:
        form = await request.form(max_files=2, max_fields=4)
        try:
            upload = form.get("file")
            target = form.get("target")
            if target is not None and not isinstance(target, str):
                raise InvalidError("target: expected text ('' or 'site/classifier')")
            image = None
            if isinstance(upload, UploadFile):
                data = await upload.read(limits.max_image_bytes + 1)
                image = clf_service.NamedImage(upload.filename or "file", data)
        finally:
            await form.close()

        def run() -> TryAnswer:
            classifier = None
            if target:
                site, _, name = target.partition("/")
                if not name:
                    raise InvalidError(f"target={target!r}: expected 'site/classifier' or '' for the ImageNet default")
                classifier = crud.get_classifier(session, site, name)
                user.require(classifier.site_id, Role.VIEWER, site)
            if image is None:  # after the role check: a caller learns nothing of a site it cannot see
                raise InvalidError("file: missing multipart file field 'file'")
            model, is_default, runtime, scored = _score(services, session, services.runtimes, classifier, image)
            shown = runtime.manifest.classifier if is_default or classifier is None else classifier.name
            if classifier is not None:
                ctx = LogContext(classifier.site_id, shown, model.id, model.version, user.name, "try")
                services.prediction_log.write(ctx, [image.name], [scored])
            return TryAnswer(
                model=AnalysedModel(id=model.id, classifier=shown, version=model.version, default=is_default),
                top=[PredictionPublic(label=g, probability=p) for g, p in scored.top(TRY_TOP).items()],
                anomaly=scored.anomaly,
                anomaly_score=scored.anomaly_score,
                threshold=scored.threshold,
            )

        answer = await run_in_threadpool(run)
        return JSONResponse(answer.model_dump(mode="json"))
    finally:
        services.runtimes.slots.release()
