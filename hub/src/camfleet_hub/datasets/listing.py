"""A classifier's dataset as the trainer, the health panel, the export and the image detail see it.

Common groups: a group marked ``common`` in any site is part of the training set of every classifier with the
same name in every site (e.g. "none-of-the-above" shared by every site's "door" classifier). Its confirmed images
join the class of the same group name; an image already in the classifier (same content hash) counts once.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from camfleet_hub.core import urls
from camfleet_hub.core.store.base import ObjectStore
from camfleet_hub.datasets import crud
from camfleet_hub.datasets.models import Blob, Camera, Classifier, Frame, Group, Image, ImageStatus, Site
from camfleet_hub.datasets.schemas import DatasetHealth, GroupHealth, ImageDetail

MIN_TO_TRAIN = 10
IMBALANCE_RATIO = 5.0


@dataclass(frozen=True)
class TrainingImage:
    id: int
    sha256: str
    group: str
    common: bool  # came from a common group of a same-named classifier in another site


def _held_out() -> Any:
    """Ids of images in a held-out test set (``compat.models.HoldoutImage``): never trained on."""
    from camfleet_hub.compat.models import HoldoutImage

    return select(HoldoutImage.image_id)


def _common_query(classifier: Classifier) -> Any:
    """Confirmed images of common groups of same-named classifiers in other sites."""
    return (
        select(Image.id, Image.sha256, Group.name, Image.original_name)
        .join(Group, Image.group_id == Group.id)
        .join(Classifier, Group.classifier_id == Classifier.id)
        .where(
            Classifier.name == classifier.name,
            Classifier.id != classifier.id,
            Group.common.is_(True),
            Image.status == ImageStatus.GROUP.value,
            Image.id.not_in(_held_out()),
        )
    )


def training_images(session: Session, classifier: Classifier) -> list[TrainingImage]:
    """Every confirmed image of the classifier plus those of same-named common groups elsewhere, by id."""
    own = session.execute(
        select(Image.id, Image.sha256, Group.name)
        .join(Group, Image.group_id == Group.id)
        .where(
            Image.classifier_id == classifier.id,
            Image.status == ImageStatus.GROUP.value,
            Image.id.not_in(_held_out()),
        )
        .order_by(Image.id)
    )
    rows = [TrainingImage(i, sha, g, False) for i, sha, g in own]
    seen = {r.sha256 for r in rows}
    for i, sha, g, _name in session.execute(_common_query(classifier).order_by(Image.id)):
        if sha not in seen:
            seen.add(sha)
            rows.append(TrainingImage(i, sha, g, True))
    return rows


def training_counts(session: Session, classifier: Classifier) -> dict[str, int]:
    """Confirmed images per group name, common groups of other sites included (grouped counts only)."""
    counts: dict[str, int] = {}
    own = session.execute(
        select(Group.name, func.count(Image.id))
        .join(Image, Image.group_id == Group.id)
        .where(
            Group.classifier_id == classifier.id,
            Image.status == ImageStatus.GROUP.value,
            Image.id.not_in(_held_out()),
        )
        .group_by(Group.name)
    )
    for name, n in own:
        counts[name] = int(n)
    for name, n in common_counts(session, classifier).items():
        counts[name] = counts.get(name, 0) + n
    return counts


def common_counts(session: Session, classifier: Classifier) -> dict[str, int]:
    """Confirmed images per group name that common groups of other sites add to this classifier."""
    q = _common_query(classifier).subquery()
    rows = session.execute(select(q.c.name, func.count()).group_by(q.c.name))
    return {name: int(n) for name, n in rows}


def none_of_the_above_names(session: Session, classifier: Classifier) -> set[str]:
    """Group names that mean "none of the above" in this classifier's training set: its own groups so marked, and
    marked common groups of other sites where the classifier has no group of that name (its own group decides)."""
    own = {g.name: bool(g.none_of_the_above) for g in crud.list_groups(session, classifier)}
    shared = session.scalars(
        select(Group.name)
        .join(Classifier, Group.classifier_id == Classifier.id)
        .where(
            Classifier.name == classifier.name,
            Classifier.id != classifier.id,
            Group.common.is_(True),
            Group.none_of_the_above.is_(True),
        )
    )
    return {name for name, marked in own.items() if marked} | {name for name in shared if name not in own}


@dataclass(frozen=True, slots=True)
class SharedGroup:
    """A common group of a same-named classifier in another site."""

    name: str
    site: str


def shared_common_groups(session: Session, classifier: Classifier) -> list[SharedGroup]:
    """Common groups of same-named classifiers in other sites (name, site), shown in the group tree."""
    rows = session.execute(
        select(Group.name, Site.name)
        .join(Classifier, Group.classifier_id == Classifier.id)
        .join(Site, Classifier.site_id == Site.id)
        .where(Classifier.name == classifier.name, Classifier.id != classifier.id, Group.common.is_(True))
        .order_by(Group.name, Site.name)
    )
    return [SharedGroup(g, s) for g, s in rows]


# --------------------------------------------------------------------------- health


def health(
    session: Session, classifier: Classifier, counts: dict[int | None, dict[str, int]] | None = None
) -> DatasetHealth:
    """Images per group (own + common from other sites), NEW waiting, groups under the minimum, imbalance.

    ``counts`` (``crud.status_counts``) may be passed in by a page that already has them.
    """
    counts = crud.status_counts(session, classifier) if counts is None else counts
    groups = crud.list_groups(session, classifier)
    extra = common_counts(session, classifier)
    per_group: list[GroupHealth] = []
    for g in groups:
        own = counts.get(g.id, {}).get(ImageStatus.GROUP.value, 0)
        shared = extra.pop(g.name, 0)
        per_group.append(
            GroupHealth(
                name=g.name,
                common=bool(g.common),
                none_of_the_above=bool(g.none_of_the_above),
                images=own + shared,
                shared=shared,
            )
        )
    for name, n in sorted(extra.items()):  # a common group of another site with no local group of that name
        per_group.append(GroupHealth(name=name, common=True, images=n, shared=n))
    sizes = [g.images for g in per_group if g.images > 0]
    ratio = (max(sizes) / min(sizes)) if len(sizes) >= 2 else 1.0
    under = [g.name for g in per_group if g.images < MIN_TO_TRAIN]
    warnings = []
    if ratio > IMBALANCE_RATIO:
        big = max(per_group, key=lambda g: g.images)
        small = min((g for g in per_group if g.images > 0), key=lambda g: g.images)
        warnings.append(
            f"class imbalance: {big.name!r} has {big.images} images, {small.name!r} only "
            f"{small.images} ({ratio:.1f}x, more than {IMBALANCE_RATIO:g}x)"
        )
    if under:
        warnings.append(f"{len(under)} group(s) under {MIN_TO_TRAIN} images: {', '.join(under)}")
    new = sum(c.get(ImageStatus.NEW.value, 0) for c in counts.values())
    deleted = sum(c.get(ImageStatus.DELETED.value, 0) for c in counts.values())
    if new:
        warnings.append(f"{new} new image(s) waiting for triage")
    return DatasetHealth(
        classifier=classifier.name,
        groups=per_group,
        new=new,
        deleted=deleted,
        confirmed=sum(g.images for g in per_group),
        min_to_train=MIN_TO_TRAIN,
        under_min=under,
        imbalance_ratio=round(ratio, 2),
        imbalance_limit=IMBALANCE_RATIO,
        imbalanced=ratio > IMBALANCE_RATIO,
        warnings=warnings,
    )


# --------------------------------------------------------------------------- export

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe_stem(name: str | None, fallback: str) -> str:
    stem = (name or "").replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    stem = _UNSAFE.sub("_", stem).strip("._-")[:80]
    return stem or fallback


class _Sink(io.RawIOBase):
    """A write-only, unseekable buffer: zipfile streams into it and the generator drains it."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self.chunks.append(data)
        return len(data)

    def drain(self) -> bytes:
        out, self.chunks = b"".join(self.chunks), []
        return out


def export_zip(session: Session, store: ObjectStore, classifier: Classifier) -> Iterator[bytes]:
    """The training set as a folder-per-class zip (``<group>/<name>.<ext>``), streamed a file at a time.

    Names come from the original file name made safe (letters, digits, ``._-``), else the hash; clashes get
    ``-2``, ``-3`` … so every entry is unique. The database is read before the first byte (the request's
    session may be closed while the body streams); only the store is read while streaming.
    """
    rows = training_images(session, classifier)
    meta: dict[int, tuple[str | None, str]] = {}
    ids = [r.id for r in rows]
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        query = select(Image.id, Image.original_name, Blob.format).join(Blob).where(Image.id.in_(chunk))
        meta.update({i: (name, fmt) for i, name, fmt in session.execute(query)})
    entries: list[tuple[str, str]] = []
    used: set[str] = set()
    for r in rows:
        original, fmt = meta.get(r.id, (None, "jpeg"))
        ext = {"jpeg": "jpg"}.get(str(fmt).lower(), str(fmt).lower())
        base = f"{r.group}/{_safe_stem(original, r.sha256[:16])}"
        name, n = f"{base}.{ext}", 1
        while name in used:
            n += 1
            name = f"{base}-{n}.{ext}"
        used.add(name)
        entries.append((name, r.sha256))
    return _stream_zip(store, entries)


def _stream_zip(store: ObjectStore, entries: list[tuple[str, str]]) -> Iterator[bytes]:
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, sha in entries:
            zf.writestr(name, store.get(sha))
            yield sink.drain()
    yield sink.drain()


def export_filename(classifier: Classifier, site: str) -> str:
    return f"{site}-{classifier.name}-dataset.zip"


# --------------------------------------------------------------------------- image detail


def image_detail(session: Session, image: Image, classifier: Classifier) -> ImageDetail:
    """Everything known about one image: where it came from, its file, who labelled it, when."""
    blob = image.blob
    camera = captured_at = agent = None
    if image.frame_id is not None:
        row = session.execute(
            select(Camera.name, Frame.captured_at, Frame.agent)
            .join(Camera, Frame.camera_id == Camera.id)
            .where(Frame.frame_id == image.frame_id)
        ).first()
        if row is not None:
            camera, captured_at, agent = row
    return ImageDetail(
        id=image.id,
        site=classifier.site.name,
        classifier=classifier.name,
        status=image.status,
        group=None if image.group is None else image.group.name,
        source=image.source,
        origin=image.origin,
        original_name=image.original_name,
        import_job_id=image.import_job_id,
        frame_id=image.frame_id,
        camera=camera,
        agent=agent,
        captured_at=captured_at,
        sha256=image.sha256,
        size=blob.size,
        width=blob.width,
        height=blob.height,
        format=blob.format,
        labelled_by=image.labelled_by,
        created_at=image.created_at,
        updated_at=image.updated_at,
        content_url=urls.image_content(image.id),
        thumbnail_url=urls.image_thumbnail(image.id),
    )
