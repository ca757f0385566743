"""Every change to a classifier's dataset is one HistoryEntry with who, when and what it changed (undoable).

Image changes (``image_changes``: move, delete, restore, edit) store each image's state before and after
(``{"images": [{"id": 1, "before": {...}, "after": {...}}], "groups": [3]}``); group changes (``group_changes``:
create, rename, parent, common, none of the above, merge, delete) store the group row before and after;
``none_group`` (the deleted images into the none-of-the-above group) stores both. ``undo`` puts the "before" back.
This module records the entries and lists them.

Example::

    entry = image_changes.move_images(session, classifier, [1, 2, 3], "shirt", "alice")
    undo.undo(session, entry.id, "alice")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from camfleet_hub.core.errors import NotFoundError
from camfleet_hub.datasets.models import Classifier, HistoryEntry
from camfleet_hub.datasets.schemas import HistoryPublic

HISTORY_PAGE = 50
MAX_IMAGE_IDS = 1000  # image ids one history row lists (image_count says how many in all)


class Action:
    """History action names."""

    MOVE = "move"
    DELETE = "delete"
    RESTORE = "restore"
    EDIT = "edit"
    CREATE_GROUP = "create_group"
    RENAME_GROUP = "rename_group"
    SET_PARENT = "set_parent"
    SET_COMMON = "set_common"
    SET_NONE_OF_THE_ABOVE = "set_none_of_the_above"
    DELETED_TO_NONE = "deleted_to_none"
    MERGE_GROUPS = "merge_groups"
    DELETE_GROUP = "delete_group"


def ids_text(ids: Sequence[int], limit: int = 10) -> str:
    """Ids for an error message: the first ``limit``, then how many in all."""
    shown = ", ".join(str(i) for i in list(ids)[:limit])
    return shown + (f" … ({len(ids)} in all)" if len(ids) > limit else "")


def record(
    session: Session, classifier: Classifier, action: str, summary: str, changes: dict[str, Any], user: str
) -> HistoryEntry:
    """Add the entry and commit it together with the change it describes."""
    entry = HistoryEntry(classifier_id=classifier.id, action=action, summary=summary, changes=changes, username=user)
    session.add(entry)
    session.commit()
    session.refresh(entry)
    return entry


def list_history(
    session: Session, classifier: Classifier, before_id: int | None = None, limit: int = HISTORY_PAGE
) -> list[HistoryEntry]:
    """Newest first, keyset-paginated on id (``before_id`` is the last id of the previous page)."""
    query = select(HistoryEntry).where(HistoryEntry.classifier_id == classifier.id)
    if before_id is not None:
        query = query.where(HistoryEntry.id < before_id)
    return list(session.scalars(query.order_by(HistoryEntry.id.desc()).limit(max(1, min(limit, 500)))))


def history_row(entry: HistoryEntry, classifier_name: str) -> HistoryPublic:
    """A history entry as the API and the History page show it (image ids from its changes)."""
    c = entry.changes or {}
    ids = [int(i["id"]) for i in c.get("images", [])] + [int(i) for i in c.get("image_ids", [])]
    return HistoryPublic(
        id=entry.id,
        classifier=classifier_name,
        action=entry.action,
        summary=entry.summary,
        username=entry.username,
        created_at=entry.created_at,
        undone_at=entry.undone_at,
        undone_by=entry.undone_by,
        image_ids=ids[:MAX_IMAGE_IDS],
        image_count=len(ids),
    )


def get_entry(session: Session, entry_id: int) -> HistoryEntry:
    entry = session.get(HistoryEntry, entry_id)
    if entry is None:
        raise NotFoundError(f"history entry id={entry_id} not found")
    return entry


def touched(entry: HistoryEntry) -> tuple[set[int], set[int]]:
    """(image ids, group ids) an entry changed."""
    c = entry.changes or {}
    images = {int(i["id"]) for i in c.get("images", [])} | {int(i) for i in c.get("image_ids", [])}
    return images, {int(g) for g in c.get("groups", [])}
