"""The server-rendered web pages (Jinja2, no JS framework) and their form actions.

Pages: the overview (``/``), a classifier's Training page, a model page with its report, and the Errors view.
Form actions call the same services as the REST API and redirect back (POST → 303 → GET).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from camfleet_hub.auth.deps import (
    CurrentUserDep,
    HubAdminDep,
    SiteAdminDep,
    SiteLabellerDep,
    SiteViewerDep,
    require_in_classifier,
    visible_site_ids,
)
from camfleet_hub.auth.models import Role
from camfleet_hub.core.deps import ServicesDep, SessionDep
from camfleet_hub.core.errors import ServiceError
from camfleet_hub.core.http_errors import describe_errors
from camfleet_hub.datasets import crud, image_changes
from camfleet_hub.datasets.models import Classifier
from camfleet_hub.training import jobs, registry
from camfleet_hub.training import page_data as pages
from camfleet_hub.training.schemas import JobCreate
from camfleet_hub.web import overview
from camfleet_hub.web.render import page_context, page_path, render, templates

router = APIRouter(include_in_schema=False)
__all__ = ["router", "templates"]

REFRESH_SECONDS = 10
POLL_MS = 2000


def _back(next_url: str | None, default: str) -> RedirectResponse:
    """Redirect to ``next_url`` when it is a path of this site, else to ``default``."""
    ok = next_url is not None and next_url.startswith("/") and not next_url.startswith("//") and "\\" not in next_url
    return RedirectResponse(next_url if ok and next_url else default, status_code=303)


def _require_model(user: Any, session: SessionDep, model: Any, role: Role) -> None:
    """A site model needs ``role`` in its site; the ImageNet default: any login to read, hub admin to change."""
    if model.classifier_id is not None:
        require_in_classifier(user, session, model.classifier_id, role)
    elif role != Role.VIEWER:
        user.require_admin()


@router.get("/", response_class=HTMLResponse, name="ui.overview")
def index(request: Request, session: SessionDep, user: CurrentUserDep) -> HTMLResponse:
    context = page_context(overview.overview(session, visible_site_ids(user, session)), refresh=REFRESH_SECONDS)
    return render(request, "index.html", context)


def _index_error(request: Request, session: SessionDep, user: Any, detail: str, status_code: int) -> HTMLResponse:
    context = page_context(overview.overview(session, visible_site_ids(user, session)), refresh=REFRESH_SECONDS)
    return render(request, "index.html", {**context, "error": detail}, status_code)


@router.post("/ui/sites", response_model=None, name="ui.create_site")
def create_site(
    request: Request, session: SessionDep, user: HubAdminDep, name: Annotated[str, Form()] = ""
) -> Response:
    """The overview's New site form (hub admins); a bad or taken name shows the page again with the reason."""
    try:
        site = crud.create_site(session, name.strip())
    except ServiceError as exc:
        return _index_error(request, session, user, exc.detail, exc.status_code)
    return RedirectResponse(page_path(request, "ui.overview") + f"#site-{site.name}", status_code=303)


@router.post("/ui/sites/{site}/classifiers", response_model=None, name="ui.create_classifier")
def create_classifier(
    request: Request, site: str, session: SessionDep, user: SiteAdminDep, name: Annotated[str, Form()] = ""
) -> Response:
    """A site's New classifier form (site admins); goes on to the new classifier's page."""
    try:
        clf = crud.create_classifier(session, crud.get_site(session, site), name.strip())
    except ServiceError as exc:
        return _index_error(request, session, user, exc.detail, exc.status_code)
    return RedirectResponse(page_path(request, "ui.classifier", site=site, clf=clf.name), status_code=303)


@router.get("/ui/sites/{site}/classifiers/{clf}/training", response_class=HTMLResponse, name="ui.training")
def training(request: Request, site: str, clf: str, session: SessionDep, _user: SiteViewerDep) -> HTMLResponse:
    classifier = crud.get_classifier(session, site, clf)
    context = page_context(pages.training(session, classifier), poll_ms=POLL_MS)
    return render(request, "training.html", context, site=site, clf=clf)


@router.post("/ui/sites/{site}/classifiers/{clf}/jobs", response_model=None, name="ui.start_job")
def start_job(
    request: Request,
    site: str,
    clf: str,
    session: SessionDep,
    _user: SiteLabellerDep,
    mode: Annotated[str, Form()] = "quick",
    epochs: Annotated[str, Form()] = "",
    gpu: Annotated[str, Form()] = "",
    auto_promote: Annotated[str, Form()] = "",
) -> Response:
    """The Training page's Start form; a bad value or a refused job shows the page again with the reason."""
    classifier = crud.get_classifier(session, site, clf)
    body: dict[str, Any] = {"mode": mode, "auto_promote": bool(auto_promote), "params": {"gpu": bool(gpu)}}
    if epochs.strip():
        body["params"]["epochs"] = epochs.strip()
    try:
        create = JobCreate.model_validate(body)
        jobs.create_job(
            session, classifier, create.mode, create.auto_promote, create.params.model_dump(exclude_none=True)
        )
    except ValidationError as exc:
        return _error(request, session, classifier, describe_errors(exc.errors()), 422)
    except ServiceError as exc:
        return _error(request, session, classifier, exc.detail, exc.status_code)
    return RedirectResponse(page_path(request, "ui.training", site=site, clf=clf), status_code=303)


def _error(request: Request, session: SessionDep, classifier: Any, detail: str, status_code: int) -> HTMLResponse:
    context = page_context(pages.training(session, classifier), poll_ms=POLL_MS, error=detail)
    return render(request, "training.html", context, status_code, site=classifier.site.name, clf=classifier.name)


@router.post("/ui/jobs/{job_id}/cancel", name="ui.cancel_job")
def cancel_job(request: Request, job_id: int, session: SessionDep, user: CurrentUserDep) -> RedirectResponse:
    require_in_classifier(user, session, jobs.get_job(session, job_id).classifier_id, Role.LABELLER)
    job = jobs.cancel(session, job_id)
    clf = job.classifier
    return RedirectResponse(page_path(request, "ui.training", site=clf.site.name, clf=clf.name), status_code=303)


@router.get("/ui/jobs/{job_id}/chart.svg", name="ui.job_chart")
def job_chart(job_id: int, session: SessionDep, user: CurrentUserDep) -> Response:
    """The loss / accuracy curves of a job (two SVGs in a div), re-fetched by the Training page as epochs arrive."""
    require_in_classifier(user, session, jobs.get_job(session, job_id).classifier_id, Role.VIEWER)
    return HTMLResponse(pages.job_chart(session, job_id), headers={"Cache-Control": "no-store"})


@router.get("/ui/models/{model_id}", response_class=HTMLResponse, name="ui.model")
def model_page(request: Request, model_id: int, session: SessionDep, user: CurrentUserDep) -> HTMLResponse:
    model = registry.get_model(session, model_id)
    _require_model(user, session, model, Role.VIEWER)
    clf = session.get(Classifier, model.classifier_id) if model.classifier_id is not None else None
    if clf is None:  # the ImageNet default belongs to no site
        return render(request, "model.html", page_context(pages.model(session, model)))
    return render(request, "model.html", page_context(pages.model(session, model)), site=clf.site.name, clf=clf.name)


@router.post("/ui/models/{model_id}/promote", name="ui.promote")
def promote(
    request: Request,
    model_id: int,
    session: SessionDep,
    services: ServicesDep,
    user: CurrentUserDep,
    next_url: Annotated[str | None, Form(alias="next")] = None,
) -> RedirectResponse:
    model = registry.get_model(session, model_id)
    _require_model(user, session, model, Role.ADMIN)
    registry.promote(services, session, model)
    return _back(next_url, page_path(request, "ui.overview"))


@router.post("/ui/models/{model_id}/rollback", name="ui.rollback")
def rollback(
    request: Request, model_id: int, session: SessionDep, services: ServicesDep, user: CurrentUserDep
) -> RedirectResponse:
    model = registry.get_model(session, model_id)
    _require_model(user, session, model, Role.ADMIN)
    previous = registry.rollback(services, session, model)
    return RedirectResponse(page_path(request, "ui.model", model_id=previous.id), status_code=303)


@router.get("/ui/sites/{site}/classifiers/{clf}/errors", response_class=HTMLResponse, name="ui.errors")
def errors(request: Request, site: str, clf: str, session: SessionDep, _user: SiteViewerDep) -> HTMLResponse:
    context = page_context(pages.errors(session, crud.get_classifier(session, site, clf)))
    return render(request, "errors.html", context, site=site, clf=clf)


@router.post("/ui/images/{image_id}/group", name="ui.move_image")
def move_image(
    request: Request,
    image_id: int,
    session: SessionDep,
    user: CurrentUserDep,
    group: Annotated[str, Form()],
    next_url: Annotated[str | None, Form(alias="next")] = None,
) -> RedirectResponse:
    """The Errors view's one-click fix: the same change as PATCH /api/v1/images/{id} {"group": …}."""
    name = crud.checked_name(group, "group")
    image = crud.get_image(session, image_id)
    require_in_classifier(user, session, image.classifier_id, Role.LABELLER)
    image_changes.edit_image(session, image, None, name, user.name)
    return _back(next_url, page_path(request, "ui.overview"))
