"""Every change to a classifier's dataset, each recorded as one undoable HistoryEntry with who and when.

Image changes (move, delete, restore, edit) store each image's state before and after
(``{"images": [{"id": 1, "before": {...}, "after": {...}}], "groups": [3]}``); group changes (create, rename,
parent, common, merge, delete) store the group row before and after. Undo puts the "before" back, and refuses
(409, naming the entries and images) when a later change that was not undone touched the same images or groups.

Concurrent edits: callers may pass the state they saw (``expected_status`` / ``expected_updated_at``); a mismatch
is a 409 that says what the image is now and who changed it, so two labellers never silently overwrite each other.

Example::

    entry = move_images(session, classifier, [1, 2, 3], "shirt", "alice")
    undo(session, entry.id, "alice")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from camfleet_hub.core.db.types import utcnow
from camfleet_hub.core.errors import ConflictError, InvalidError, NotFoundError
from camfleet_hub.datasets import crud
from camfleet_hub.datasets.models import Classifier, Group, HistoryEntry, Image, ImageStatus

MAX_BULK = 5000
HISTORY_PAGE = 50


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
    MERGE_GROUPS = "merge_groups"
    DELETE_GROUP = "delete_group"


@dataclass(frozen=True)
class Expected:
    """What the client saw of the images it acts on (any field left None is not checked)."""

    status: ImageStatus | None = None
    updated_at: datetime | None = None


# --------------------------------------------------------------------------- helpers


def _state(image: Image) -> dict[str, Any]:
    return {"status": image.status, "group_id": image.group_id, "labelled_by": image.labelled_by}


def _ids_text(ids: Sequence[int], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in list(ids)[:limit])
    return shown + (f" … ({len(ids)} in all)" if len(ids) > limit else "")


def _load_images(session: Session, classifier: Classifier, ids: Sequence[int]) -> list[Image]:
    """The images, locked for update (PostgreSQL), all of this classifier; 404 names the missing ids."""
    unique = list(dict.fromkeys(int(i) for i in ids))
    if not unique:
        raise InvalidError("ids=[]: select at least one image")
    if len(unique) > MAX_BULK:
        raise InvalidError(f"ids: {len(unique)} images, at most {MAX_BULK} per action")
    rows = list(session.scalars(select(Image).where(Image.id.in_(unique)).order_by(Image.id).with_for_update()))
    found = {img.id for img in rows}
    missing = [i for i in unique if i not in found]
    if missing:
        raise NotFoundError(f"image ids {_ids_text(missing)} not found")
    foreign = [img.id for img in rows if img.classifier_id != classifier.id]
    if foreign:
        raise InvalidError(f"image ids {_ids_text(foreign)} are not in classifier {classifier.name!r}")
    return rows


def _check_expected(session: Session, images: list[Image], expected: Expected | None) -> None:
    if expected is None:
        return
    names = {g.id: g.name for g in session.scalars(select(Group).where(Group.id.in_({i.group_id for i in images})))}
    for img in images:
        stale = expected.status is not None and img.status != expected.status.value
        if expected.updated_at is not None and abs((img.updated_at - expected.updated_at).total_seconds()) > 1e-3:
            stale = True
        if stale:
            where = f" in group {names.get(img.group_id)!r}" if img.group_id is not None else ""
            who = f" by {img.labelled_by!r}" if img.labelled_by else ""
            raise ConflictError(
                f"image id={img.id} was changed meanwhile: it is now {img.status}{where}{who} "
                f"(updated {img.updated_at.isoformat()}); reload and try again"
            )


def _record(
    session: Session, classifier: Classifier, action: str, summary: str, changes: dict[str, Any], user: str
) -> HistoryEntry:
    entry = HistoryEntry(classifier_id=classifier.id, action=action, summary=summary, changes=changes, username=user)
    session.add(entry)
    return entry


def _commit(session: Session, entry: HistoryEntry) -> HistoryEntry:
    session.commit()
    session.refresh(entry)
    return entry


def _apply_images(
    session: Session,
    classifier: Classifier,
    images: list[Image],
    target: dict[int, tuple[str, int | None]],
    action: str,
    summary: str,
    user: str,
    extra: dict[str, Any] | None = None,
) -> HistoryEntry:
    """Set each image to its (status, group_id) target, one history entry for all of them."""
    now = utcnow()
    changes: list[dict[str, Any]] = []
    groups: set[int] = set()
    for img in images:
        status, group_id = target[img.id]
        before = _state(img)
        img.status, img.group_id, img.labelled_by, img.updated_at = status, group_id, user, now
        changes.append({"id": img.id, "before": before, "after": _state(img)})
        groups.update(g for g in (before["group_id"], group_id) if g is not None)
    record = {"images": changes, "groups": sorted(groups), **(extra or {})}
    return _commit(session, _record(session, classifier, action, summary, record, user))


def _group(session: Session, classifier: Classifier, name: str) -> Group:
    group = crud.find_group(session, classifier, crud.checked_name(name, "group"))
    if group is None:
        raise NotFoundError(f"group={name!r} not found in classifier {classifier.name!r}")
    return group


def _group_row(g: Group) -> dict[str, Any]:
    return {"id": g.id, "name": g.name, "parent_id": g.parent_id, "common": bool(g.common)}


# --------------------------------------------------------------------------- image actions


def move_images(
    session: Session,
    classifier: Classifier,
    ids: Sequence[int],
    group: str,
    user: str,
    expected: Expected | None = None,
    create: bool = False,
) -> HistoryEntry:
    """Confirm images into ``group`` (status GROUP); ``create`` makes the group when it is missing."""
    images = _load_images(session, classifier, ids)
    _check_expected(session, images, expected)
    if create:
        target_group = crud.ensure_group(session, classifier, group)
    else:
        target_group = _group(session, classifier, group)
    target: dict[int, tuple[str, int | None]] = {img.id: (ImageStatus.GROUP.value, target_group.id) for img in images}
    summary = f"moved {len(images)} image(s) to {target_group.name!r}"
    return _apply_images(session, classifier, images, target, Action.MOVE, summary, user)


def delete_images(
    session: Session, classifier: Classifier, ids: Sequence[int], user: str, expected: Expected | None = None
) -> HistoryEntry:
    """Reject images (status DELETED): their content hash is remembered and never offered again until restored."""
    images = _load_images(session, classifier, ids)
    _check_expected(session, images, expected)
    target = {img.id: (ImageStatus.DELETED.value, img.group_id) for img in images}
    summary = f"deleted {len(images)} image(s)"
    return _apply_images(session, classifier, images, target, Action.DELETE, summary, user)


def restore_images(
    session: Session, classifier: Classifier, ids: Sequence[int], user: str, expected: Expected | None = None
) -> HistoryEntry:
    """Bring deleted images back: into their group (GROUP) when they still have one, else to the inbox (NEW)."""
    images = _load_images(session, classifier, ids)
    _check_expected(session, images, expected)
    live = [img.id for img in images if img.status != ImageStatus.DELETED.value]
    if live:
        raise ConflictError(f"image ids {_ids_text(live)} are not deleted; only deleted images can be restored")
    target = {
        img.id: (ImageStatus.NEW.value if img.group_id is None else ImageStatus.GROUP.value, img.group_id)
        for img in images
    }
    summary = f"restored {len(images)} image(s)"
    return _apply_images(session, classifier, images, target, Action.RESTORE, summary, user)


def edit_image(
    session: Session,
    image: Image,
    status: ImageStatus | None,
    group: str | None,
    user: str,
    expected: Expected | None = None,
) -> HistoryEntry:
    """PATCH /images/{id}: any status and/or group (created if missing); GROUP needs a group."""
    classifier = session.get(Classifier, image.classifier_id)
    assert classifier is not None
    [img] = _load_images(session, classifier, [image.id])
    _check_expected(session, [img], expected)
    group_id = img.group_id if group is None else crud.ensure_group(session, classifier, group).id
    new_status = status.value if status is not None else img.status
    if group is not None and status is None and img.status == ImageStatus.NEW.value:
        new_status = ImageStatus.GROUP.value  # naming a group for an inbox image confirms it
    if new_status == ImageStatus.GROUP.value and group_id is None:
        raise InvalidError(f"status={new_status!r} needs a group: image id={img.id} is in none")
    if new_status == ImageStatus.NEW.value and status is not None and group is None:
        group_id = None  # back to the inbox
    target_group = session.get(Group, group_id) if group_id is not None else None
    name = None if target_group is None else target_group.name
    summary = f"image {img.id}: {new_status}" + (f" in {name!r}" if name else "")
    return _apply_images(session, classifier, [img], {img.id: (new_status, group_id)}, Action.EDIT, summary, user)


# --------------------------------------------------------------------------- group actions


def create_group(
    session: Session, classifier: Classifier, name: str, user: str, parent: str | None = None, common: bool = False
) -> Group:
    group = crud.create_group(session, classifier, name, parent, common)
    summary = f"created group {group.name!r}" + (" (common)" if common else "")
    _commit(session, _record(session, classifier, Action.CREATE_GROUP, summary, {"groups": [group.id]}, user))
    return group


def rename_group(session: Session, classifier: Classifier, name: str, new_name: str, user: str) -> HistoryEntry:
    group = _group(session, classifier, name)
    new_name = crud.checked_name(new_name, "new_name")
    if new_name == group.name:
        raise InvalidError(f"new_name={new_name!r} is the group's current name")
    if crud.find_group(session, classifier, new_name) is not None:
        raise ConflictError(f"group name={new_name!r} already exists in classifier {classifier.name!r}")
    before = _group_row(group)
    group.name = new_name
    changes = {"groups": [group.id], "group": {"before": before, "after": _group_row(group)}}
    return _commit(
        session,
        _record(session, classifier, Action.RENAME_GROUP, f"renamed group {name!r} to {new_name!r}", changes, user),
    )


def set_parent(session: Session, classifier: Classifier, name: str, parent: str | None, user: str) -> HistoryEntry:
    """Put a group under another one (``None``: make it a root); cycles are refused."""
    group = _group(session, classifier, name)
    parent_group = None if parent is None else _group(session, classifier, parent)
    if parent_group is not None:
        seen: set[int] = set()
        node: Group | None = parent_group
        while node is not None and node.id not in seen:
            if node.id == group.id:
                raise InvalidError(f"parent={parent!r}: {name!r} cannot be put under itself or its own subgroup")
            seen.add(node.id)
            node = session.get(Group, node.parent_id) if node.parent_id is not None else None
    before = _group_row(group)
    group.parent_id = None if parent_group is None else parent_group.id
    changes = {"groups": [group.id], "group": {"before": before, "after": _group_row(group)}}
    where = "a root group" if parent is None else f"under {parent!r}"
    return _commit(session, _record(session, classifier, Action.SET_PARENT, f"made {name!r} {where}", changes, user))


def set_common(session: Session, classifier: Classifier, name: str, common: bool, user: str) -> HistoryEntry:
    """Mark a group common (shared by every site's classifier of the same name) or not."""
    group = _group(session, classifier, name)
    before = _group_row(group)
    group.common = bool(common)
    changes = {"groups": [group.id], "group": {"before": before, "after": _group_row(group)}}
    summary = f"{'marked' if common else 'unmarked'} group {name!r} as common"
    return _commit(session, _record(session, classifier, Action.SET_COMMON, summary, changes, user))


def _group_image_ids(session: Session, group: Group) -> list[int]:
    return list(session.scalars(select(Image.id).where(Image.group_id == group.id).order_by(Image.id)))


def _children(session: Session, group: Group) -> list[int]:
    return list(session.scalars(select(Group.id).where(Group.parent_id == group.id).order_by(Group.id)))


def merge_groups(session: Session, classifier: Classifier, source: str, target: str, user: str) -> HistoryEntry:
    """Move every image and subgroup of ``source`` into ``target`` and remove ``source``."""
    src, dst = _group(session, classifier, source), _group(session, classifier, target)
    if src.id == dst.id:
        raise InvalidError(f"target={target!r}: a group cannot be merged into itself")
    node: Group | None = dst
    while node is not None:
        if node.parent_id == src.id:
            raise InvalidError(f"target={target!r} is a subgroup of {source!r}; move it out first")
        node = session.get(Group, node.parent_id) if node.parent_id is not None else None
    image_ids, children = _group_image_ids(session, src), _children(session, src)
    now = utcnow()
    session.execute(update(Image).where(Image.group_id == src.id).values(group_id=dst.id, updated_at=now))
    session.execute(update(Group).where(Group.parent_id == src.id).values(parent_id=dst.id))
    before = _group_row(src)
    session.delete(src)
    changes = {
        "groups": [before["id"], dst.id],
        "group": {"before": before, "after": None},
        "target_id": dst.id,
        "image_ids": image_ids,
        "children": children,
    }
    summary = f"merged group {source!r} into {target!r} ({len(image_ids)} image(s))"
    return _commit(session, _record(session, classifier, Action.MERGE_GROUPS, summary, changes, user))


def delete_group(session: Session, classifier: Classifier, name: str, user: str) -> HistoryEntry:
    """Remove a group; its confirmed images go back to the inbox (NEW), its deleted ones stay deleted."""
    group = _group(session, classifier, name)
    images = list(session.scalars(select(Image).where(Image.group_id == group.id).order_by(Image.id)))
    children = _children(session, group)
    now = utcnow()
    changes_images = []
    for img in images:
        before = _state(img)
        if img.status == ImageStatus.GROUP.value:
            img.status, img.labelled_by = ImageStatus.NEW.value, user
        img.group_id, img.updated_at = None, now
        changes_images.append({"id": img.id, "before": before, "after": _state(img)})
    session.execute(update(Group).where(Group.parent_id == group.id).values(parent_id=group.parent_id))
    before_row = _group_row(group)
    session.flush()
    session.delete(group)
    changes = {
        "groups": [before_row["id"]],
        "group": {"before": before_row, "after": None},
        "images": changes_images,
        "children": children,
    }
    summary = f"deleted group {name!r} ({len(images)} image(s) back to the inbox or kept deleted)"
    return _commit(session, _record(session, classifier, Action.DELETE_GROUP, summary, changes, user))


# --------------------------------------------------------------------------- history and undo


def list_history(
    session: Session, classifier: Classifier, before_id: int | None = None, limit: int = HISTORY_PAGE
) -> list[HistoryEntry]:
    """Newest first, keyset-paginated on id (``before_id`` is the last id of the previous page)."""
    query = select(HistoryEntry).where(HistoryEntry.classifier_id == classifier.id)
    if before_id is not None:
        query = query.where(HistoryEntry.id < before_id)
    return list(session.scalars(query.order_by(HistoryEntry.id.desc()).limit(max(1, min(limit, 500)))))


def history_row(entry: HistoryEntry, classifier_name: str) -> dict[str, Any]:
    """A history entry as the API and the History page show it (image ids from its changes)."""
    c = entry.changes or {}
    ids = [int(i["id"]) for i in c.get("images", [])] + [int(i) for i in c.get("image_ids", [])]
    return {
        "id": entry.id,
        "classifier": classifier_name,
        "action": entry.action,
        "summary": entry.summary,
        "username": entry.username,
        "created_at": entry.created_at,
        "undone_at": entry.undone_at,
        "undone_by": entry.undone_by,
        "image_ids": ids[:1000],
        "image_count": len(ids),
    }


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
            what = f"images {_ids_text(same_images)}" if same_images else "the same group"
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
        raise ConflictError(f"cannot undo entry id={entry.id}: images {_ids_text(stale)} were changed since")
    now = utcnow()
    for r in rows:
        img = current.get(int(r["id"]))
        if img is None:
            continue  # removed with its classifier meanwhile
        b = r["before"]
        img.status, img.group_id, img.labelled_by, img.updated_at = b["status"], b["group_id"], b["labelled_by"], now


def _recreate_group(session: Session, entry: HistoryEntry, row: dict[str, Any]) -> Group:
    _check_name_free(session, entry, row["name"])
    parent_id = row["parent_id"]
    if parent_id is not None and session.get(Group, parent_id) is None:
        parent_id = None
    group = Group(
        id=row["id"], classifier_id=entry.classifier_id, name=row["name"], parent_id=parent_id, common=row["common"]
    )
    session.add(group)
    session.flush()
    return group


def _undo_group_row(session: Session, entry: HistoryEntry) -> None:
    before = entry.changes["group"]["before"]
    group = session.get(Group, before["id"])
    if group is None:
        raise ConflictError(f"cannot undo entry id={entry.id}: group id={before['id']} no longer exists")
    if before["name"] != group.name:
        _check_name_free(session, entry, before["name"])
    group.name, group.parent_id, group.common = before["name"], before["parent_id"], before["common"]


def _check_name_free(session: Session, entry: HistoryEntry, name: str) -> None:
    taken = session.scalar(select(Group.id).where(Group.classifier_id == entry.classifier_id, Group.name == name))
    if taken is not None:
        raise ConflictError(f"cannot undo entry id={entry.id}: a group named {name!r} exists again")


def _undo_create_group(session: Session, entry: HistoryEntry) -> None:
    [group_id] = entry.changes["groups"]
    group = session.get(Group, group_id)
    if group is None:
        return
    used = session.scalar(select(Image.id).where(Image.group_id == group.id).limit(1))
    if used is not None:
        raise ConflictError(f"cannot undo entry id={entry.id}: group {group.name!r} has images now")
    session.execute(update(Group).where(Group.parent_id == group.id).values(parent_id=group.parent_id))
    session.delete(group)


def _undo_merge(session: Session, entry: HistoryEntry) -> None:
    c = entry.changes
    group = _recreate_group(session, entry, c["group"]["before"])
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
    c = entry.changes
    group = _recreate_group(session, entry, c["group"]["before"])
    _undo_images(session, entry)
    if c["children"]:
        session.execute(update(Group).where(Group.id.in_(c["children"])).values(parent_id=group.id))


_UNDO = {
    Action.MOVE: _undo_images,
    Action.DELETE: _undo_images,
    Action.RESTORE: _undo_images,
    Action.EDIT: _undo_images,
    Action.CREATE_GROUP: _undo_create_group,
    Action.RENAME_GROUP: _undo_group_row,
    Action.SET_PARENT: _undo_group_row,
    Action.SET_COMMON: _undo_group_row,
    Action.MERGE_GROUPS: _undo_merge,
    Action.DELETE_GROUP: _undo_delete_group,
}
