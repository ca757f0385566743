"""Undo of one history entry: puts the "before" of its images and group back.

Refused (409, naming the entries and images) when the entry was undone already or when a later change that was
not undone touched the same images or groups.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from camfleet_hub.core.db.types import utcnow
from camfleet_hub.core.errors import ConflictError, NotFoundError
from camfleet_hub.datasets.group_changes import GroupRow
from camfleet_hub.datasets.history import Action, get_entry, ids_text, touched
from camfleet_hub.datasets.image_changes import ImageState
from camfleet_hub.datasets.models import Classifier, Group, HistoryEntry, Image


def _later_conflicts(session: Session, entry: HistoryEntry) -> list[str]:
    images, groups = touched(entry)
    later = session.scalars(
        select(HistoryEntry)
        .where(
            HistoryEntry.classifier_id == entry.classifier_id,
            HistoryEntry.id > entry.id,
            HistoryEntry.undone_at.is_(None),
        )
        .order_by(HistoryEntry.id)
    )
    found = []
    for other in later:
        o_images, o_groups = touched(other)
        same_images, same_groups = sorted(images & o_images), sorted(groups & o_groups)
        if same_images or same_groups:
            what = f"images {ids_text(same_images)}" if same_images else "the same group"
            found.append(f"entry id={other.id} ({other.summary} by {other.username!r}) changed {what} later")
    return found


def undo(session: Session, entry_id: int, user: str, classifier: Classifier | None = None) -> HistoryEntry:
    """Put back what an entry changed; 409 when it was undone already or later changes touched the same things."""
    entry = get_entry(session, entry_id)
    if classifier is not None and entry.classifier_id != classifier.id:
        raise NotFoundError(f"history entry id={entry_id} is not in classifier {classifier.name!r}")
    if entry.undone_at is not None:
        raise ConflictError(f"history entry id={entry_id} was already undone by {entry.undone_by!r}")
    conflicts = _later_conflicts(session, entry)
    if conflicts:
        raise ConflictError(f"cannot undo entry id={entry_id} ({entry.summary}): " + "; ".join(conflicts[:5]))
    _UNDO[entry.action](session, entry)
    entry.undone_at, entry.undone_by = utcnow(), user
    session.commit()
    session.refresh(entry)
    return entry


def undo_last(session: Session, classifier: Classifier, user: str) -> HistoryEntry:
    """Undo the caller's latest change in this classifier that is not undone yet."""
    entry_id = session.scalar(
        select(HistoryEntry.id)
        .where(
            HistoryEntry.classifier_id == classifier.id,
            HistoryEntry.username == user,
            HistoryEntry.undone_at.is_(None),
        )
        .order_by(HistoryEntry.id.desc())
        .limit(1)
    )
    if entry_id is None:
        raise NotFoundError(f"user {user!r} has nothing left to undo in classifier {classifier.name!r}")
    return undo(session, entry_id, user, classifier)


def _undo_images(session: Session, entry: HistoryEntry) -> None:
    rows = entry.changes.get("images", [])
    ids = [int(r["id"]) for r in rows]
    current = {img.id: img for img in session.scalars(select(Image).where(Image.id.in_(ids)).with_for_update())}
    stale = [
        r["id"]
        for r in rows
        if r["id"] in current
        and (current[r["id"]].status, current[r["id"]].group_id) != (r["after"]["status"], r["after"]["group_id"])
    ]
    if stale:
        raise ConflictError(f"cannot undo entry id={entry.id}: images {ids_text(stale)} were changed since")
    now = utcnow()
    for r in rows:
        img = current.get(int(r["id"]))
        if img is None:
            continue  # removed with its classifier meanwhile
        b = ImageState(**r["before"])
        img.status, img.group_id, img.labelled_by, img.updated_at = b.status, b.group_id, b.labelled_by, now


def _recreate_group(session: Session, entry: HistoryEntry, row: GroupRow) -> Group:
    _check_name_free(session, entry, row.name)
    parent_id = row.parent_id
    if parent_id is not None and session.get(Group, parent_id) is None:
        parent_id = None
    group = row.restore(Group(id=row.id, classifier_id=entry.classifier_id), parent_id)
    session.add(group)
    session.flush()
    return group


def _undo_group_row(session: Session, entry: HistoryEntry) -> None:
    before = GroupRow(**entry.changes["group"]["before"])
    group = session.get(Group, before.id)
    if group is None:
        raise ConflictError(f"cannot undo entry id={entry.id}: group id={before.id} no longer exists")
    if before.name != group.name:
        _check_name_free(session, entry, before.name)
    before.restore(group, before.parent_id)


def _check_name_free(session: Session, entry: HistoryEntry, name: str) -> None:
    taken = session.scalar(select(Group.id).where(Group.classifier_id == entry.classifier_id, Group.name == name))
    if taken is not None:
        raise ConflictError(f"cannot undo entry id={entry.id}: a group named {name!r} exists again")


def _remove_created_group(session: Session, entry: HistoryEntry, group_id: int) -> None:
    """Remove the group an entry created, unless images were put into it since; its subgroups move up."""
    group = session.get(Group, group_id)
    if group is None:
        return
    used = session.scalar(select(Image.id).where(Image.group_id == group.id).limit(1))
    if used is not None:
        raise ConflictError(f"cannot undo entry id={entry.id}: group {group.name!r} has images now")
    session.execute(update(Group).where(Group.parent_id == group.id).values(parent_id=group.parent_id))
    session.delete(group)


def _undo_create_group(session: Session, entry: HistoryEntry) -> None:
    [group_id] = entry.changes["groups"]
    _remove_created_group(session, entry, group_id)


def _undo_deleted_to_none(session: Session, entry: HistoryEntry) -> None:
    """The images deleted again as they were; the group removed when the entry made it, else its mark put back."""
    _undo_images(session, entry)
    session.flush()
    before = entry.changes["group"]["before"]
    if before is None:
        _remove_created_group(session, entry, int(entry.changes["target_id"]))
        return
    group = session.get(Group, int(entry.changes["target_id"]))
    if group is not None:
        group.none_of_the_above = GroupRow(**before).none_of_the_above


def _undo_merge(session: Session, entry: HistoryEntry) -> None:
    c: dict[str, Any] = entry.changes
    group = _recreate_group(session, entry, GroupRow(**c["group"]["before"]))
    now = utcnow()
    if c["image_ids"]:
        session.execute(
            update(Image)
            .where(Image.id.in_(c["image_ids"]), Image.group_id == c["target_id"])
            .values(group_id=group.id, updated_at=now)
        )
    if c["children"]:
        session.execute(update(Group).where(Group.id.in_(c["children"])).values(parent_id=group.id))


def _undo_delete_group(session: Session, entry: HistoryEntry) -> None:
    c: dict[str, Any] = entry.changes
    group = _recreate_group(session, entry, GroupRow(**c["group"]["before"]))
    _undo_images(session, entry)
    if c["children"]:
        session.execute(update(Group).where(Group.id.in_(c["children"])).values(parent_id=group.id))


_UNDO: dict[str, Callable[[Session, HistoryEntry], None]] = {
    Action.MOVE: _undo_images,
    Action.DELETE: _undo_images,
    Action.RESTORE: _undo_images,
    Action.EDIT: _undo_images,
    Action.CREATE_GROUP: _undo_create_group,
    Action.RENAME_GROUP: _undo_group_row,
    Action.SET_PARENT: _undo_group_row,
    Action.SET_COMMON: _undo_group_row,
    Action.SET_NONE_OF_THE_ABOVE: _undo_group_row,
    Action.MERGE_GROUPS: _undo_merge,
    Action.DELETE_GROUP: _undo_delete_group,
    Action.DELETED_TO_NONE: _undo_deleted_to_none,
}
