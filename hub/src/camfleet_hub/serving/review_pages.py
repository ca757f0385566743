"""A classifier's review pages: Outliers (grouped images farthest from the rest of their group) and the Errors
view's bulk form (move or delete the ticked images). Both call the same services as REST
(``datasets.image_changes``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from camfleet_hub.auth.deps import SiteLabellerDep, SiteViewerDep
from camfleet_hub.auth.models import Role
from camfleet_hub.core.deps import ServicesDep, SessionDep
from camfleet_hub.core.errors import InvalidError, ServiceError
from camfleet_hub.datasets import crud, image_changes
from camfleet_hub.datasets import page_data as cp
from camfleet_hub.serving import outliers
from camfleet_hub.training import page_data as pages
from camfleet_hub.web.render import CLASSIFIER_PATH as CLF
from camfleet_hub.web.render import page_context, page_path, render

router = APIRouter(include_in_schema=False)


@router.get(CLF + "/outliers", response_class=HTMLResponse, name="serving.outliers")
def outliers_page(
    request: Request, site: str, clf: str, session: SessionDep, services: ServicesDep, user: SiteViewerDep
) -> HTMLResponse:
    """Grouped images farthest from the rest of their group; keys move (m / 1-9) or delete (d) via REST bulk."""
    classifier = crud.get_classifier(session, site, clf)
    found = outliers.find(services, session, classifier)
    role = user.role_in(classifier.site_id)
    context = {
        **cp.base(classifier),
        "rows": found.rows,
        "note": found.note,
        "groups": [g.name for g in crud.list_groups(session, classifier)],
        "can_label": role is not None and role.rank >= Role.LABELLER.rank,
    }
    return render(request, "serving/outliers.html", context, site=site, clf=clf)


@router.post(CLF + "/errors/action", response_model=None, name="serving.errors_action")
def errors_action(
    request: Request,
    site: str,
    clf: str,
    session: SessionDep,
    user: SiteLabellerDep,
    action: Annotated[str, Form()],
    image_id: Annotated[list[int] | None, Form()] = None,
    group: Annotated[str, Form()] = "",
) -> Response:
    """The Errors view's form: move the ticked images to any group (created when new) or delete them; one history
    entry, so one undo puts them all back."""
    classifier = crud.get_classifier(session, site, clf)
    ids = sorted(set(image_id or []))
    try:
        if not ids:
            raise InvalidError("image_id: tick at least one image")
        if action == "move":
            name = crud.checked_name(group.strip(), "group")
            image_changes.move_images(session, classifier, ids, name, user.name, None, True)
        elif action == "delete":
            image_changes.delete_images(session, classifier, ids, user.name)
        else:
            raise InvalidError(f"action={action!r} is not one of move, delete")
    except ServiceError as exc:
        session.rollback()
        context = page_context(pages.errors(session, classifier), error=exc.detail)
        return render(request, "errors.html", context, exc.status_code, site=site, clf=clf)
    return RedirectResponse(page_path(request, "ui.errors", site=site, clf=clf), status_code=303)
