"""The model registry: versions per classifier, promotion (and rollback), signed bundles, the default, the key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Query, Response, UploadFile

from camfleet_contract import charts
from camfleet_contract.rest import FleetKey, ModelPublic  # what agents and the trainer read
from camfleet_contract.signing import public_key_of
from camfleet_hub.auth.deps import CurrentUserDep, HubAdminDep, SiteViewerDep
from camfleet_hub.auth.models import Role
from camfleet_hub.auth.principal import Principal
from camfleet_hub.core.deps import ServicesDep, SessionDep
from camfleet_hub.core.errors import NotFoundError, TooLargeError
from camfleet_hub.datasets import crud
from camfleet_hub.datasets import public as views
from camfleet_hub.training import announce, label_errors, registry, reports
from camfleet_hub.training.models import ModelVersion
from camfleet_hub.training.schemas import LabelErrorPublic, ModelReport

router = APIRouter(tags=["models"])


def _require(user: Principal, model: ModelVersion, role: Role) -> ModelVersion:
    """A site model needs ``role`` in its site; the ImageNet default is readable by anyone logged in."""
    if model.classifier is not None:
        user.require(model.classifier.site_id, role, model.classifier.site.name)
    elif role != Role.VIEWER:
        user.require_admin()
    return model


MAX_BUNDLE_UPLOAD = 512 * 1024 * 1024


@router.get("/sites/{site}/classifiers/{clf}/models", operation_id="list_models", response_model=list[ModelPublic])
def list_models(site: str, clf: str, session: SessionDep, _user: SiteViewerDep) -> list[ModelPublic]:
    classifier = crud.get_classifier(session, site, clf)
    return [views.model(m) for m in crud.list_models(session, classifier)]


@router.get("/models/default", operation_id="get_default_model", response_model=ModelPublic)
def get_default(session: SessionDep, _user: CurrentUserDep) -> ModelPublic:
    model = announce.default_model(session)
    if model is None:
        raise NotFoundError("no default model has been uploaded (PUT /api/v1/models/default)")
    return views.model(model)


@router.put("/models/default", operation_id="put_default_model", response_model=ModelPublic)
def put_default(
    file: Annotated[UploadFile, File(description="the ImageNet default bundle zip")],
    session: SessionDep,
    services: ServicesDep,
    _admin: HubAdminDep,
) -> ModelPublic:
    data = file.file.read(MAX_BUNDLE_UPLOAD + 1)
    if len(data) > MAX_BUNDLE_UPLOAD:
        raise TooLargeError(f"file: bundle over the limit of {MAX_BUNDLE_UPLOAD} bytes")
    model = registry.put_default(services, session, data)
    return views.model(model)


@router.get("/models/{model_id}", operation_id="get_model", response_model=ModelPublic)
def get_model(model_id: int, session: SessionDep, user: CurrentUserDep) -> ModelPublic:
    return views.model(_require(user, registry.get_model(session, model_id), Role.VIEWER))


@router.post("/models/{model_id}/promote", operation_id="promote_model", response_model=ModelPublic)
def promote(model_id: int, session: SessionDep, services: ServicesDep, user: CurrentUserDep) -> ModelPublic:
    """Deploy to the site's agents: needs the admin role in the site."""
    model = registry.promote(services, session, _require(user, registry.get_model(session, model_id), Role.ADMIN))
    return views.model(model)


@router.post("/models/{model_id}/rollback", operation_id="rollback_model", response_model=ModelPublic)
def rollback(model_id: int, session: SessionDep, services: ServicesDep, user: CurrentUserDep) -> ModelPublic:
    """Retire this production version and re-promote the one before it (409 when there is none); site admin."""
    model = registry.rollback(services, session, _require(user, registry.get_model(session, model_id), Role.ADMIN))
    return views.model(model)


@router.get("/models/{model_id}/report", operation_id="get_model_report", response_model=ModelReport)
def report(model_id: int, session: SessionDep, user: CurrentUserDep) -> ModelReport:
    model = _require(user, registry.get_model(session, model_id), Role.VIEWER)
    return reports.normalised(session, model)


@router.get(
    "/models/{model_id}/confusion.png",
    operation_id="get_model_confusion",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "the confusion matrix as a picture"}},
)
def confusion(model_id: int, session: SessionDep, user: CurrentUserDep) -> Response:
    model = _require(user, registry.get_model(session, model_id), Role.VIEWER)
    matrix = reports.confusion_of(model)
    if matrix is None:
        raise NotFoundError(f"model id={model_id} has no confusion matrix in its report")
    png = charts.confusion_png(matrix, reports.classes_of(model))
    return Response(content=png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.get(
    "/sites/{site}/classifiers/{clf}/label-errors",
    operation_id="list_label_errors",
    response_model=list[LabelErrorPublic],
)
def list_label_errors(
    site: str,
    clf: str,
    session: SessionDep,
    _user: SiteViewerDep,
    limit: Annotated[int, Query(ge=1, le=label_errors.MAX_LIMIT)] = 50,
) -> list[LabelErrorPublic]:
    """Images whose label the latest model doubts most (out-of-fold probability of the label, lowest first)."""
    classifier = crud.get_classifier(session, site, clf)
    return label_errors.ranked(session, classifier, limit)


@router.get(
    "/models/{model_id}/bundle",
    operation_id="get_model_bundle",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}, "description": "the bundle signed with the fleet key"}},
)
def bundle(model_id: int, session: SessionDep, services: ServicesDep, user: CurrentUserDep) -> Response:
    """What agents download: needs a viewer token of the model's site (any login for the default model)."""
    model = _require(user, registry.get_model(session, model_id), Role.VIEWER)
    name = model.classifier.name if model.classifier is not None else announce.DEFAULT_CLASSIFIER
    return Response(
        content=registry.bundle_bytes(services, model),
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{name}-{model.version}.zip"',
            "ETag": f'"{model.sha256}"',
            "X-Content-SHA256": model.sha256,
        },
    )


@router.get("/keys/fleet", operation_id="get_fleet_key", response_model=FleetKey, tags=["keys"])
def fleet_key(services: ServicesDep, _user: CurrentUserDep) -> FleetKey:
    return FleetKey(public_key=public_key_of(services.fleet_signing_key))
