"""Curation: bulk actions on a selection, history with undo, image detail, dataset health and export."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from camfleet_contract.envelope import UploadRuleName
from camfleet_hub.auth.deps import CurrentUserDep, SiteLabellerDep, SiteViewerDep
from camfleet_hub.auth.models import Role
from camfleet_hub.core.deps import ServicesDep, SessionDep
from camfleet_hub.core.errors import InvalidError
from camfleet_hub.datasets import crud, history, image_changes, none_group, triage, undo
from camfleet_hub.datasets import listing as datasets
from camfleet_hub.datasets.models import Classifier, ImageStatus
from camfleet_hub.datasets.schemas import (
    AcceptSuggestions,
    BulkAction,
    DatasetHealth,
    DeletedToNone,
    HistoryPage,
    HistoryPublic,
    ImageDetail,
    TriageImage,
)

router = APIRouter(tags=["curation"])

CLF = "/sites/{site}/classifiers/{clf}"


@router.post(f"{CLF}/images/bulk", operation_id="bulk_images", response_model=HistoryPublic)
def bulk_images(site: str, clf: str, body: BulkAction, session: SessionDep, user: SiteLabellerDep) -> HistoryPublic:
    """Move, delete or restore a selection of images in one history entry (one undo puts all back)."""
    classifier = crud.get_classifier(session, site, clf)
    expected = image_changes.Expected(status=body.expected_status) if body.expected_status else None
    if body.action == "move":
        if body.group is None:
            raise InvalidError("group: required for action='move'")
        entry = image_changes.move_images(
            session, classifier, body.ids, body.group, user.name, expected, body.create_group
        )
    elif body.action == "delete":
        entry = image_changes.delete_images(session, classifier, body.ids, user.name, expected)
    else:
        entry = image_changes.restore_images(session, classifier, body.ids, user.name, expected)
    return history.history_row(entry, classifier.name)


@router.post(f"{CLF}/images/deleted-to-none", operation_id="use_deleted_as_none", response_model=HistoryPublic)
def use_deleted_as_none(
    site: str, clf: str, body: DeletedToNone, session: SessionDep, user: SiteLabellerDep
) -> HistoryPublic:
    """Confirm the deleted images (the oldest 5000) into the none-of-the-above group, in one history entry.

    The group is ``group``, else the one marked none of the above, else a new ``none``; it is marked if it was not.
    """
    classifier = crud.get_classifier(session, site, clf)
    entry = none_group.deleted_to_none(session, classifier, user.name, body.group, body.expected_count)
    return history.history_row(entry, classifier.name)


@router.get(f"{CLF}/triage", operation_id="list_triage", response_model=list[TriageImage])
def list_triage(
    site: str,
    clf: str,
    session: SessionDep,
    _user: SiteViewerDep,
    status: ImageStatus = ImageStatus.NEW,
    rule: Annotated[UploadRuleName | None, Query(description="only camera frames sent by this upload rule")] = None,
    camera: Annotated[str | None, Query(description="only camera frames from this camera")] = None,
    limit: Annotated[int, Query(ge=1, le=crud.MAX_PAGE)] = 60,
    after_id: Annotated[int | None, Query(ge=0, description="keyset paging: the last id of the previous page")] = None,
) -> list[TriageImage]:
    """NEW (or DELETED) images in id order with the camera, the upload rule and the model's suggestion."""
    classifier = crud.get_classifier(session, site, clf)
    rows = triage.list_triage(session, classifier, status, rule, camera, limit, after_id)
    return rows


@router.post(f"{CLF}/images/accept-suggestions", operation_id="accept_suggestions", response_model=HistoryPublic)
def accept_suggestions(
    site: str, clf: str, body: AcceptSuggestions, session: SessionDep, user: SiteLabellerDep
) -> HistoryPublic:
    """Put each image into the group the model suggests for it, in one history entry (one undo puts all back)."""
    classifier = crud.get_classifier(session, site, clf)
    expected = image_changes.Expected(status=body.expected_status) if body.expected_status else None
    entry = triage.accept_suggestions(session, classifier, body.ids, user.name, expected)
    return history.history_row(entry, classifier.name)


@router.get(f"{CLF}/history", operation_id="list_history", response_model=HistoryPage)
def list_history(
    site: str,
    clf: str,
    session: SessionDep,
    _user: SiteViewerDep,
    before_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = history.HISTORY_PAGE,
) -> HistoryPage:
    """Newest first; pass ``next_before_id`` back as ``before_id`` for older entries."""
    classifier = crud.get_classifier(session, site, clf)
    rows = history.list_history(session, classifier, before_id, limit)
    entries = [history.history_row(e, classifier.name) for e in rows]
    return HistoryPage(entries=entries, next_before_id=rows[-1].id if len(rows) == limit else None)


@router.post("/history/{entry_id}/undo", operation_id="undo_history_entry", response_model=HistoryPublic)
def undo_entry(entry_id: int, session: SessionDep, user: CurrentUserDep) -> HistoryPublic:
    """Undo one change; 409 names the later changes that touched the same images or groups."""
    entry = history.get_entry(session, entry_id)
    classifier = session.get(Classifier, entry.classifier_id)
    assert classifier is not None
    user.require(classifier.site_id, Role.LABELLER, classifier.site.name)
    entry = undo.undo(session, entry_id, user.name, classifier)
    return history.history_row(entry, classifier.name)


@router.post(f"{CLF}/undo", operation_id="undo_last", response_model=HistoryPublic)
def undo_last(site: str, clf: str, session: SessionDep, user: SiteLabellerDep) -> HistoryPublic:
    """Undo the caller's own latest change in this classifier."""
    classifier = crud.get_classifier(session, site, clf)
    entry = undo.undo_last(session, classifier, user.name)
    return history.history_row(entry, classifier.name)


@router.get("/images/{image_id}", operation_id="get_image", response_model=ImageDetail)
def get_image(image_id: int, session: SessionDep, user: CurrentUserDep) -> ImageDetail:
    """Metadata of one image: source, origin, camera and capture time, file, hash, who labelled it."""
    image = crud.get_image(session, image_id)
    classifier = session.get(Classifier, image.classifier_id)
    assert classifier is not None
    user.require(classifier.site_id, Role.VIEWER, classifier.site.name)
    return datasets.image_detail(session, image, classifier)


@router.get(f"{CLF}/health", operation_id="get_dataset_health", response_model=DatasetHealth)
def dataset_health(site: str, clf: str, session: SessionDep, _user: SiteViewerDep) -> DatasetHealth:
    """Images per group, NEW waiting, groups under the minimum to train, class imbalance."""
    return datasets.health(session, crud.get_classifier(session, site, clf))


@router.get(
    f"{CLF}/export",
    operation_id="export_dataset",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}}, "description": "folder-per-class zip"}},
)
def export_dataset(
    site: str, clf: str, session: SessionDep, services: ServicesDep, _user: SiteViewerDep
) -> StreamingResponse:
    """The training set (confirmed images, common groups included) as ``<group>/<file>`` entries, streamed."""
    classifier = crud.get_classifier(session, site, clf)
    name = datasets.export_filename(classifier, site)
    return StreamingResponse(
        datasets.export_zip(session, services.store, classifier),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
