"""The Import and Duplicates pages of a classifier; both drive the REST API from small vanilla scripts."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from camfleet_hub.auth.deps import SiteViewerDep
from camfleet_hub.core.deps import ServicesDep, SessionDep
from camfleet_hub.core.errors import UnavailableError
from camfleet_hub.datasets import crud
from camfleet_hub.datasets import page_data as curation_pages
from camfleet_hub.datasets.models import Group
from camfleet_hub.imports import search
from camfleet_hub.web.render import render

router = APIRouter(include_in_schema=False)

POLL_MS = 1500


@router.get("/ui/sites/{site}/classifiers/{clf}/import", response_class=HTMLResponse, name="ui.import")
def import_page(
    request: Request, site: str, clf: str, session: SessionDep, services: ServicesDep, user: SiteViewerDep
) -> HTMLResponse:
    classifier = crud.get_classifier(session, site, clf)
    groups = list(session.scalars(select(Group.name).where(Group.classifier_id == classifier.id).order_by(Group.name)))
    try:
        search.make_provider(services.settings.imports)
        search_message = None
    except UnavailableError as exc:
        search_message = exc.detail
    context = {
        **curation_pages.base(classifier),
        "groups": groups,
        "admin": user.admin,
        "search_message": search_message,
        "poll_ms": POLL_MS,
        "max_upload_mb": services.settings.imports.max_upload_bytes // (1024 * 1024),
    }
    return render(request, "imports.html", context, site=site, clf=clf)


@router.get("/ui/sites/{site}/classifiers/{clf}/duplicates", response_class=HTMLResponse, name="ui.duplicates")
def duplicates_page(request: Request, site: str, clf: str, session: SessionDep, _user: SiteViewerDep) -> HTMLResponse:
    classifier = crud.get_classifier(session, site, clf)
    context = {**curation_pages.base(classifier), "threshold": classifier.max_equal_distance}
    return render(request, "duplicates.html", context, site=site, clf=clf)
