"""The "none of the above" group filled from the classifier's deleted images, in one undoable history entry.

A site's rejected frames are what its cameras see that is none of the classifier's groups (Azure Custom Vision's
Negative tag, Frigate's ``none`` class). Moving them into a group marked ``none_of_the_above`` trains them as a
class, and a prediction of that class flags the image as fitting no known group.

Example::

    plan = none_group.plan(session, classifier)          # what the confirmation says
    entry = none_group.deleted_to_none(session, classifier, "alice", expected_count=plan.count)
    undo.undo(session, entry.id, "alice")                # images deleted again, group as it was
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from camfleet_hub.core.errors import ConflictError, InvalidError
from camfleet_hub.datasets import crud
from camfleet_hub.datasets.group_changes import GroupRow
from camfleet_hub.datasets.history import Action
from camfleet_hub.datasets.image_changes import MAX_BULK, apply_images
from camfleet_hub.datasets.models import Classifier, Group, HistoryEntry, Image, ImageStatus

NONE_GROUP = "none"  # the name of the group made when the classifier has no none-of-the-above group yet


@dataclass(frozen=True, slots=True)
class NonePlan:
    """What "use the deleted images as none of the above" would do now: the page's confirmation says it."""

    count: int  # deleted images that move (at most MAX_BULK, oldest first)
    deleted: int  # deleted images in all
    group: str
    create: bool  # the group does not exist yet
    mark: bool  # the group exists but is not marked none of the above yet

    @property
    def text(self) -> str:
        """The confirmation in plain words."""
        what = "a new group" if self.create else "group"
        how = " (marked none of the above)" if self.create or self.mark else ""
        rest = f"; {self.deleted - self.count} more stay deleted for a next round" if self.deleted > self.count else ""
        return f"Move {self.count} deleted image(s) into {what} {self.group!r}{how}{rest}? Undo in History."


def marked_groups(session: Session, classifier: Classifier) -> list[Group]:
    """The classifier's groups marked none of the above, by name."""
    return list(
        session.scalars(
            select(Group)
            .where(Group.classifier_id == classifier.id, Group.none_of_the_above.is_(True))
            .order_by(Group.name)
        )
    )


def _target_name(session: Session, classifier: Classifier, group: str | None) -> str:
    if group is not None:
        return crud.checked_name(group, "group")
    marked = marked_groups(session, classifier)
    return marked[0].name if marked else NONE_GROUP


def plan(session: Session, classifier: Classifier, group: str | None = None) -> NonePlan:
    """Where the deleted images would go: ``group``, else the first group marked none of the above, else ``none``."""
    deleted = session.scalar(
        select(func.count())
        .select_from(Image)
        .where(Image.classifier_id == classifier.id, Image.status == ImageStatus.DELETED.value)
    )
    name = _target_name(session, classifier, group)
    found = crud.find_group(session, classifier, name)
    n = int(deleted or 0)
    return NonePlan(
        count=min(n, MAX_BULK),
        deleted=n,
        group=name,
        create=found is None,
        mark=found is not None and not found.none_of_the_above,
    )


def deleted_to_none(
    session: Session,
    classifier: Classifier,
    user: str,
    group: str | None = None,
    expected_count: int | None = None,
) -> HistoryEntry:
    """Confirm the classifier's deleted images (the oldest MAX_BULK) into the none-of-the-above group.

    The group is ``group``, else the one already marked, else a new ``none``; it is marked when it was not.
    ``expected_count`` is the count the caller confirmed: 409 when it is no longer what would move.
    """
    target_plan = plan(session, classifier, group)
    images = list(
        session.scalars(
            select(Image)
            .where(Image.classifier_id == classifier.id, Image.status == ImageStatus.DELETED.value)
            .order_by(Image.id)
            .limit(MAX_BULK)
            .with_for_update()
        )
    )
    if not images:
        raise InvalidError(f"classifier {classifier.name!r} has no deleted images to use as none of the above")
    if expected_count is not None and expected_count != len(images):
        raise ConflictError(
            f"expected_count={expected_count}: {len(images)} deleted image(s) would move now "
            f"({target_plan.deleted} deleted in all); reload and confirm again"
        )
    target = crud.find_group(session, classifier, target_plan.group)
    before = None if target is None else GroupRow.of(target)
    if target is None:
        target = crud.ensure_group(session, classifier, target_plan.group)
    target.none_of_the_above = True
    row = {"before": None if before is None else asdict(before), "after": asdict(GroupRow.of(target))}
    moves: dict[int, tuple[str, int | None]] = {img.id: (ImageStatus.GROUP.value, target.id) for img in images}
    rest = target_plan.deleted - len(images)
    summary = f"moved {len(images)} deleted image(s) into {target.name!r} as none of the above" + (
        f" ({rest} more still deleted)" if rest else ""
    )
    extra = {"group": row, "target_id": target.id}
    return apply_images(session, classifier, images, moves, Action.DELETED_TO_NONE, summary, user, extra)
