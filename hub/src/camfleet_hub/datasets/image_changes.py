"""Changes to a selection of images (move, delete, restore, edit), each recorded as one undoable history entry.

Each entry stores every image's state before and after (``ImageState``), so undo can put the "before" back.

Concurrent edits: callers may pass the state they saw (``Expected``); a mismatch is a 409 that says what the image
is now and who changed it, so two labellers never silently overwrite each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from camfleet_hub.core.db.types import utcnow
from camfleet_hub.core.errors import ConflictError, InvalidError, NotFoundError
from camfleet_hub.datasets import crud
from camfleet_hub.datasets.history import Action, ids_text, record
from camfleet_hub.datasets.models import Classifier, Group, HistoryEntry, Image, ImageStatus

MAX_BULK = 5000


@dataclass(frozen=True)
class Expected:
    """What the client saw of the images it acts on (any field left None is not checked)."""

    status: ImageStatus | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ImageState:
    """What an image change alters, as stored before and after in a history entry (``asdict`` is the JSON)."""

    status: str
    group_id: int | None
    labelled_by: str | None

    @classmethod
    def of(cls, image: Image) -> ImageState:
        return cls(image.status, image.group_id, image.labelled_by)


def load_images(session: Session, classifier: Classifier, ids: Sequence[int]) -> list[Image]:
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
        raise NotFoundError(f"image ids {ids_text(missing)} not found")
    foreign = [img.id for img in rows if img.classifier_id != classifier.id]
    if foreign:
        raise InvalidError(f"image ids {ids_text(foreign)} are not in classifier {classifier.name!r}")
    return rows


def check_expected(session: Session, images: list[Image], expected: Expected | None) -> None:
    """409 naming the first image that is no longer as the client saw it."""
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


def apply_images(
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
        before = ImageState.of(img)
        img.status, img.group_id, img.labelled_by, img.updated_at = status, group_id, user, now
        changes.append({"id": img.id, "before": asdict(before), "after": asdict(ImageState.of(img))})
        groups.update(g for g in (before.group_id, group_id) if g is not None)
    entry = {"images": changes, "groups": sorted(groups), **(extra or {})}
    return record(session, classifier, action, summary, entry, user)


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
    images = load_images(session, classifier, ids)
    check_expected(session, images, expected)
    if create:
        target_group = crud.ensure_group(session, classifier, group)
    else:
        target_group = crud.get_group(session, classifier, group)
    target: dict[int, tuple[str, int | None]] = {img.id: (ImageStatus.GROUP.value, target_group.id) for img in images}
    summary = f"moved {len(images)} image(s) to {target_group.name!r}"
    return apply_images(session, classifier, images, target, Action.MOVE, summary, user)


def delete_images(
    session: Session, classifier: Classifier, ids: Sequence[int], user: str, expected: Expected | None = None
) -> HistoryEntry:
    """Reject images (status DELETED): their content hash is remembered and never offered again until restored."""
    images = load_images(session, classifier, ids)
    check_expected(session, images, expected)
    target = {img.id: (ImageStatus.DELETED.value, img.group_id) for img in images}
    summary = f"deleted {len(images)} image(s)"
    return apply_images(session, classifier, images, target, Action.DELETE, summary, user)


def restore_images(
    session: Session, classifier: Classifier, ids: Sequence[int], user: str, expected: Expected | None = None
) -> HistoryEntry:
    """Bring deleted images back: into their group (GROUP) when they still have one, else to the inbox (NEW)."""
    images = load_images(session, classifier, ids)
    check_expected(session, images, expected)
    live = [img.id for img in images if img.status != ImageStatus.DELETED.value]
    if live:
        raise ConflictError(f"image ids {ids_text(live)} are not deleted; only deleted images can be restored")
    target = {
        img.id: (ImageStatus.NEW.value if img.group_id is None else ImageStatus.GROUP.value, img.group_id)
        for img in images
    }
    summary = f"restored {len(images)} image(s)"
    return apply_images(session, classifier, images, target, Action.RESTORE, summary, user)


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
    [img] = load_images(session, classifier, [image.id])
    check_expected(session, [img], expected)
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
    return apply_images(session, classifier, [img], {img.id: (new_status, group_id)}, Action.EDIT, summary, user)
