"""Groups (classes) of a classifier: create, list, rename / re-parent / mark common or none of the above / merge,
delete (all in history)."""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlalchemy.orm import Session

from camfleet_hub.auth.deps import SiteLabellerDep, SiteViewerDep
from camfleet_hub.core.deps import SessionDep
from camfleet_hub.core.errors import InvalidError, NotFoundError
from camfleet_hub.datasets import crud, group_changes, history
from camfleet_hub.datasets import public as views
from camfleet_hub.datasets.models import Classifier
from camfleet_hub.datasets.schemas import GroupCreate, GroupPublic, GroupUpdate, HistoryPublic

router = APIRouter(tags=["groups"])

GROUPS = "/sites/{site}/classifiers/{clf}/groups"


def _public(session: Session, classifier: Classifier, group_id: int) -> GroupPublic:
    found = next((g for g in views.groups(session, classifier) if g.id == group_id), None)
    if found is None:
        raise NotFoundError(f"group id={group_id} not found")
    return found


@router.post(GROUPS, operation_id="create_group", response_model=GroupPublic, status_code=status.HTTP_201_CREATED)
def create_group(site: str, clf: str, body: GroupCreate, session: SessionDep, user: SiteLabellerDep) -> GroupPublic:
    classifier = crud.get_classifier(session, site, clf)
    group = group_changes.create_group(
        session, classifier, body.name, user.name, body.parent, body.common, body.none_of_the_above
    )
    return _public(session, classifier, group.id)


@router.get(GROUPS, operation_id="list_groups", response_model=list[GroupPublic])
def list_groups(site: str, clf: str, session: SessionDep, _user: SiteViewerDep) -> list[GroupPublic]:
    classifier = crud.get_classifier(session, site, clf)
    return views.groups(session, classifier)


@router.patch(GROUPS + "/{group}", operation_id="update_group", response_model=GroupPublic)
def update_group(
    site: str, clf: str, group: str, body: GroupUpdate, session: SessionDep, user: SiteLabellerDep
) -> GroupPublic:
    """One change per request: ``name`` (rename), ``parent`` ('' = root), ``common``, ``none_of_the_above``, or
    ``merge_into``."""
    classifier = crud.get_classifier(session, site, clf)
    given = body.model_dump(exclude_unset=True)
    if len(given) != 1:
        raise InvalidError(
            "body: give exactly one of name, parent, common, none_of_the_above, merge_into "
            f"(got {sorted(given) or 'none'})"
        )
    if body.merge_into is not None:
        group_changes.merge_groups(session, classifier, group, body.merge_into, user.name)
        target = crud.find_group(session, classifier, body.merge_into)
        assert target is not None
        return _public(session, classifier, target.id)
    if body.name is not None:
        group_changes.rename_group(session, classifier, group, body.name, user.name)
        group = body.name
    elif "parent" in given:
        group_changes.set_parent(session, classifier, group, body.parent, user.name)
    elif body.common is not None:
        group_changes.set_common(session, classifier, group, body.common, user.name)
    elif body.none_of_the_above is not None:
        group_changes.set_none_of_the_above(session, classifier, group, body.none_of_the_above, user.name)
    else:
        raise InvalidError(f"body: {sorted(given)[0]} must not be null")
    found = crud.find_group(session, classifier, group)
    assert found is not None
    return _public(session, classifier, found.id)


@router.delete(GROUPS + "/{group}", operation_id="delete_group", response_model=HistoryPublic)
def delete_group(site: str, clf: str, group: str, session: SessionDep, user: SiteLabellerDep) -> HistoryPublic:
    """Remove a group; its confirmed images go back to the inbox (NEW). Undo brings it back as it was."""
    classifier = crud.get_classifier(session, site, clf)
    entry = group_changes.delete_group(session, classifier, group, user.name)
    return history.history_row(entry, classifier.name)
