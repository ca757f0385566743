"""Changes to a classifier's groups (create, rename, parent, common, none of the above, merge, delete), each one
undoable history entry.

Each entry stores the group row before and after (``GroupRow``); merge and delete also store the images and
subgroups they moved, so undo can put them back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from camfleet_hub.core.db.types import utcnow
from camfleet_hub.core.errors import ConflictError, InvalidError
from camfleet_hub.datasets import crud
from camfleet_hub.datasets.history import Action, record
from camfleet_hub.datasets.image_changes import ImageState
from camfleet_hub.datasets.models import Classifier, Group, HistoryEntry, Image, ImageStatus


@dataclass(frozen=True, slots=True)
class GroupRow:
    """A group as stored before and after in a history entry (``asdict`` is the JSON)."""

    id: int
    name: str
    parent_id: int | None
    common: bool
    none_of_the_above: bool = False  # absent from entries written before the column existed

    @classmethod
    def of(cls, group: Group) -> GroupRow:
        return cls(group.id, group.name, group.parent_id, bool(group.common), bool(group.none_of_the_above))

    def restore(self, group: Group, parent_id: int | None) -> Group:
        """Put this row back on ``group`` (under ``parent_id``: the stored parent may be gone since)."""
        group.name, group.parent_id = self.name, parent_id
        group.common, group.none_of_the_above = self.common, self.none_of_the_above
        return group


def _row_change(group: Group, before: GroupRow) -> dict[str, Any]:
    """The JSON ``history.changes`` keeps for a change of one group's row (a JSON column, hence a dict)."""
    return {"groups": [group.id], "group": {"before": asdict(before), "after": asdict(GroupRow.of(group))}}


def create_group(
    session: Session,
    classifier: Classifier,
    name: str,
    user: str,
    parent: str | None = None,
    common: bool = False,
    none_of_the_above: bool = False,
) -> Group:
    group = crud.create_group(session, classifier, name, parent, common, none_of_the_above)
    marks = [m for m, on in (("common", common), ("none of the above", none_of_the_above)) if on]
    summary = f"created group {group.name!r}" + (f" ({', '.join(marks)})" if marks else "")
    record(session, classifier, Action.CREATE_GROUP, summary, {"groups": [group.id]}, user)
    return group


def rename_group(session: Session, classifier: Classifier, name: str, new_name: str, user: str) -> HistoryEntry:
    group = crud.get_group(session, classifier, name)
    new_name = crud.checked_name(new_name, "new_name")
    if new_name == group.name:
        raise InvalidError(f"new_name={new_name!r} is the group's current name")
    if crud.find_group(session, classifier, new_name) is not None:
        raise ConflictError(f"group name={new_name!r} already exists in classifier {classifier.name!r}")
    before = GroupRow.of(group)
    group.name = new_name
    summary = f"renamed group {name!r} to {new_name!r}"
    return record(session, classifier, Action.RENAME_GROUP, summary, _row_change(group, before), user)


def set_parent(session: Session, classifier: Classifier, name: str, parent: str | None, user: str) -> HistoryEntry:
    """Put a group under another one (``None``: make it a root); cycles are refused."""
    group = crud.get_group(session, classifier, name)
    parent_group = None if parent is None else crud.get_group(session, classifier, parent)
    if parent_group is not None:
        seen: set[int] = set()
        node: Group | None = parent_group
        while node is not None and node.id not in seen:
            if node.id == group.id:
                raise InvalidError(f"parent={parent!r}: {name!r} cannot be put under itself or its own subgroup")
            seen.add(node.id)
            node = session.get(Group, node.parent_id) if node.parent_id is not None else None
    before = GroupRow.of(group)
    group.parent_id = None if parent_group is None else parent_group.id
    where = "a root group" if parent is None else f"under {parent!r}"
    summary = f"made {name!r} {where}"
    return record(session, classifier, Action.SET_PARENT, summary, _row_change(group, before), user)


# A group's marks: its column, the history action that sets it, and its name in summaries.
_MARKS = {
    "common": (Action.SET_COMMON, "common"),
    "none_of_the_above": (Action.SET_NONE_OF_THE_ABOVE, "none of the above"),
}


def _set_mark(session: Session, classifier: Classifier, name: str, mark: str, on: bool, user: str) -> HistoryEntry:
    action, words = _MARKS[mark]
    group = crud.get_group(session, classifier, name)
    before = GroupRow.of(group)
    setattr(group, mark, bool(on))
    summary = f"{'marked' if on else 'unmarked'} group {name!r} as {words}"
    return record(session, classifier, action, summary, _row_change(group, before), user)


def set_common(session: Session, classifier: Classifier, name: str, common: bool, user: str) -> HistoryEntry:
    """Mark a group common (shared by every site's classifier of the same name) or not."""
    return _set_mark(session, classifier, name, "common", common, user)


def set_none_of_the_above(
    session: Session, classifier: Classifier, name: str, none_of_the_above: bool, user: str
) -> HistoryEntry:
    """Mark a group "none of the above" (the site's rejected frames: trained as a class, a prediction of it flags
    the image as fitting no known group) or not."""
    return _set_mark(session, classifier, name, "none_of_the_above", none_of_the_above, user)


def _group_image_ids(session: Session, group: Group) -> list[int]:
    return list(session.scalars(select(Image.id).where(Image.group_id == group.id).order_by(Image.id)))


def _children(session: Session, group: Group) -> list[int]:
    return list(session.scalars(select(Group.id).where(Group.parent_id == group.id).order_by(Group.id)))


def merge_groups(session: Session, classifier: Classifier, source: str, target: str, user: str) -> HistoryEntry:
    """Move every image and subgroup of ``source`` into ``target`` and remove ``source``."""
    src, dst = crud.get_group(session, classifier, source), crud.get_group(session, classifier, target)
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
    before = GroupRow.of(src)
    session.delete(src)
    changes = {
        "groups": [before.id, dst.id],
        "group": {"before": asdict(before), "after": None},
        "target_id": dst.id,
        "image_ids": image_ids,
        "children": children,
    }
    summary = f"merged group {source!r} into {target!r} ({len(image_ids)} image(s))"
    return record(session, classifier, Action.MERGE_GROUPS, summary, changes, user)


def delete_group(session: Session, classifier: Classifier, name: str, user: str) -> HistoryEntry:
    """Remove a group; its confirmed images go back to the inbox (NEW), its deleted ones stay deleted."""
    group = crud.get_group(session, classifier, name)
    images = list(session.scalars(select(Image).where(Image.group_id == group.id).order_by(Image.id)))
    children = _children(session, group)
    now = utcnow()
    changes_images = []
    for img in images:
        before = ImageState.of(img)
        if img.status == ImageStatus.GROUP.value:
            img.status, img.labelled_by = ImageStatus.NEW.value, user
        img.group_id, img.updated_at = None, now
        changes_images.append({"id": img.id, "before": asdict(before), "after": asdict(ImageState.of(img))})
    session.execute(update(Group).where(Group.parent_id == group.id).values(parent_id=group.parent_id))
    before_row = GroupRow.of(group)
    session.flush()
    session.delete(group)
    changes = {
        "groups": [before_row.id],
        "group": {"before": asdict(before_row), "after": None},
        "images": changes_images,
        "children": children,
    }
    summary = f"deleted group {name!r} ({len(images)} image(s) back to the inbox or kept deleted)"
    return record(session, classifier, Action.DELETE_GROUP, summary, changes, user)
