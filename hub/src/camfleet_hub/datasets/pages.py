"""Curation pages: a classifier's groups and health, Triage (keyboard first), History with undo, image detail.

Form actions call ``services.curation`` like the REST API and redirect back (POST → 303 → GET); a refused change
shows the page again with the reason. The Triage page's script talks to the REST API directly.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from camfleet_hub.auth.deps import CurrentUserDep, SiteLabellerDep, SiteViewerDep, require_in_classifier
from camfleet_hub.auth.models import Role
from camfleet_hub.core.deps import SessionDep
from camfleet_hub.core.errors import InvalidError, ServiceError
from camfleet_hub.datasets import crud, group_changes, history, image_changes, none_group, undo
from camfleet_hub.datasets import page_data as cp
from camfleet_hub.datasets.models import Classifier
from camfleet_hub.web.pages import _back
from camfleet_hub.web.render import CLASSIFIER_PATH as CLF
from camfleet_hub.web.render import page_context, page_path, render

router = APIRouter(include_in_schema=False)


def _classifier_view(
    request: Request,
    session: SessionDep,
    classifier: Classifier,
    group: str | None = None,
    after: int | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    context = cp.base(classifier) | page_context(cp.classifier_page(session, classifier, group, after), error=error)
    return render(request, "classifier.html", context, status_code, site=classifier.site.name, clf=classifier.name)


@router.get(CLF, response_class=HTMLResponse, name="ui.classifier")
def classifier_page(
    request: Request,
    site: str,
    clf: str,
    session: SessionDep,
    _user: SiteViewerDep,
    group: str | None = None,
    after: int | None = None,
) -> HTMLResponse:
    return _classifier_view(request, session, crud.get_classifier(session, site, clf), group, after)


@router.post(CLF + "/groups/action", response_model=None, name="ui.group_action")
def group_action(
    request: Request,
    site: str,
    clf: str,
    session: SessionDep,
    user: SiteLabellerDep,
    action: Annotated[str, Form()],
    group: Annotated[str, Form()] = "",
    value: Annotated[str, Form()] = "",
    common: Annotated[str, Form()] = "",
    none_of_the_above: Annotated[str, Form()] = "",
    parent: Annotated[str, Form()] = "",
    expected_count: Annotated[int | None, Form()] = None,
) -> Response:
    """The classifier page's group forms: create, rename, parent, common, none (of the above), merge, delete, and
    deleted_to_none (the deleted images into the none-of-the-above group; ``expected_count`` as confirmed)."""
    classifier = crud.get_classifier(session, site, clf)
    group, value = group.strip(), value.strip()
    shown = group or None
    try:
        if action == "create":
            group_changes.create_group(
                session, classifier, value, user.name, parent.strip() or None, bool(common), bool(none_of_the_above)
            )
            shown = value
        elif action == "rename":
            group_changes.rename_group(session, classifier, group, value, user.name)
            shown = value
        elif action == "parent":
            group_changes.set_parent(session, classifier, group, value or None, user.name)
        elif action == "common":
            group_changes.set_common(session, classifier, group, bool(common), user.name)
        elif action == "none":
            group_changes.set_none_of_the_above(session, classifier, group, bool(none_of_the_above), user.name)
        elif action == "deleted_to_none":
            entry = none_group.deleted_to_none(session, classifier, user.name, group or None, expected_count)
            shown = str(entry.changes["group"]["after"]["name"])
        elif action == "merge":
            group_changes.merge_groups(session, classifier, group, value, user.name)
            shown = value
        elif action == "delete":
            group_changes.delete_group(session, classifier, group, user.name)
            shown = None
        else:
            raise InvalidError(
                f"action={action!r} is not one of create, rename, parent, common, none, merge, delete, deleted_to_none"
            )
    except ServiceError as exc:
        session.rollback()
        return _classifier_view(request, session, classifier, shown, None, exc.detail, exc.status_code)
    target = page_path(request, "ui.classifier", site=site, clf=clf) + (f"?group={shown}" if shown else "")
    return RedirectResponse(target, status_code=303)


@router.get(CLF + "/triage", response_class=HTMLResponse, name="ui.triage")
def triage_page(
    request: Request,
    site: str,
    clf: str,
    session: SessionDep,
    _user: SiteViewerDep,
    view: str = "new",
    rule: str | None = None,
    camera: str | None = None,
) -> HTMLResponse:
    """Triage; ``rule`` / ``camera`` show only the camera frames sent by that upload rule / from that camera."""
    classifier = crud.get_classifier(session, site, clf)
    context = cp.base(classifier) | page_context(
        cp.triage_page(session, classifier, view, rule or None, camera or None)
    )
    return render(request, "triage.html", context, site=site, clf=clf)


@router.get(CLF + "/history", response_class=HTMLResponse, name="ui.history")
def history_page(
    request: Request, site: str, clf: str, session: SessionDep, _user: SiteViewerDep, before: int | None = None
) -> HTMLResponse:
    classifier = crud.get_classifier(session, site, clf)
    context = cp.base(classifier) | page_context(cp.history_page(session, classifier, before))
    return render(request, "history.html", context, site=site, clf=clf)


@router.post("/ui/history/{entry_id}/undo", response_model=None, name="ui.undo")
def undo_entry(request: Request, entry_id: int, session: SessionDep, user: CurrentUserDep) -> Response:
    entry = history.get_entry(session, entry_id)
    require_in_classifier(user, session, entry.classifier_id, Role.LABELLER)
    classifier = session.get(Classifier, entry.classifier_id)
    assert classifier is not None
    site = classifier.site.name
    try:
        undo.undo(session, entry_id, user.name, classifier)
    except ServiceError as exc:
        session.rollback()
        context = cp.base(classifier) | page_context(cp.history_page(session, classifier, None), error=exc.detail)
        return render(request, "history.html", context, exc.status_code, site=site, clf=classifier.name)
    return RedirectResponse(page_path(request, "ui.history", site=site, clf=classifier.name), 303)


@router.get("/ui/images/{image_id}", response_class=HTMLResponse, name="ui.image")
def image_page(request: Request, image_id: int, session: SessionDep, user: CurrentUserDep) -> HTMLResponse:
    page, classifier = cp.image_page(session, image_id)
    user.require(classifier.site_id, Role.VIEWER, classifier.site.name)
    context = cp.base(classifier) | page_context(page)
    return render(request, "image.html", context, site=classifier.site.name, clf=classifier.name)


@router.post("/ui/images/{image_id}/action", response_model=None, name="ui.image_action")
def image_action(
    request: Request,
    image_id: int,
    session: SessionDep,
    user: CurrentUserDep,
    action: Annotated[str, Form()],
    group: Annotated[str, Form()] = "",
    next_url: Annotated[str | None, Form(alias="next")] = None,
) -> Response:
    """The image page's buttons: move to a group, delete, restore (each one history entry)."""
    image = crud.get_image(session, image_id)
    require_in_classifier(user, session, image.classifier_id, Role.LABELLER)
    classifier = session.get(Classifier, image.classifier_id)
    assert classifier is not None
    try:
        if action == "move":
            image_changes.move_images(session, classifier, [image_id], group, user.name)
        elif action == "delete":
            image_changes.delete_images(session, classifier, [image_id], user.name)
        elif action == "restore":
            image_changes.restore_images(session, classifier, [image_id], user.name)
        else:
            raise InvalidError(f"action={action!r} is not one of move, delete, restore")
    except ServiceError as exc:
        session.rollback()
        page, _ = cp.image_page(session, image_id)
        context = cp.base(classifier) | page_context(page, error=exc.detail)
        return render(request, "image.html", context, exc.status_code, site=classifier.site.name, clf=classifier.name)
    return _back(next_url, page_path(request, "ui.image", image_id=image_id))
