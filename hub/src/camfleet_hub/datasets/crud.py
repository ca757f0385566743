"""Sites, cameras, classifiers, groups and images: look-ups that raise NotFound, creation that raises Conflict."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, contains_eager, joinedload

from camfleet_contract.bundle import DEFAULT_CLASSIFIER
from camfleet_contract.topics import TopicError, validate_name
from camfleet_hub.core.db.types import utcnow
from camfleet_hub.core.errors import ConflictError, InvalidError, NotFoundError
from camfleet_hub.datasets.models import Camera, Classifier, Group, Image, ImageStatus, Site
from camfleet_hub.training.models import ModelVersion

MAX_PAGE = 1000
# MQTT usernames of the hub and of read-only consumers: a site so named would share their broker rights.
RESERVED_SITE_NAMES = frozenset({"hub", "observer"})
# A camera named like a second-level topic word would turn a frame topic into a model or agent one (Mosquitto's
# `+` patterns cannot exclude them); a site classifier named like the signed ImageNet default could be fed it.
RESERVED_CAMERA_NAMES = frozenset({"agents", "models"})
# ``frame``/``event``: the broker rules deny R/{site}/models/frame|event so a camera "models" cannot alias them.
RESERVED_CLASSIFIER_NAMES = frozenset({DEFAULT_CLASSIFIER, "frame", "event"})


def checked_name(value: str, field: str) -> str:
    """The contract's name rule as a 422 that names the field and the value."""
    try:
        return validate_name(value, field)
    except TopicError as exc:
        raise InvalidError(str(exc)) from None


def _commit_new(session: Session, what: str) -> None:
    """Commit an insert; a unique-constraint race becomes a 409 instead of a 500."""
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ConflictError(f"{what} already exists") from None


# --------------------------------------------------------------------------- sites


def get_site(session: Session, name: str) -> Site:
    site = session.scalar(select(Site).where(Site.name == checked_name(name, "site")))
    if site is None:
        raise NotFoundError(f"site={name!r} not found")
    return site


def list_sites(session: Session) -> list[Site]:
    return list(session.scalars(select(Site).order_by(Site.name)))


def create_site(session: Session, name: str) -> Site:
    checked_name(name, "name")
    if name.lower() in RESERVED_SITE_NAMES:
        raise InvalidError(f"name={name!r} is reserved (MQTT users {', '.join(sorted(RESERVED_SITE_NAMES))})")
    if session.scalar(select(Site.id).where(Site.name == name)) is not None:
        raise ConflictError(f"site name={name!r} already exists")
    site = Site(name=name)
    session.add(site)
    _commit_new(session, f"site name={name!r}")
    return site


# --------------------------------------------------------------------------- cameras


def list_cameras(session: Session, site: Site) -> list[Camera]:
    return list(session.scalars(select(Camera).where(Camera.site_id == site.id).order_by(Camera.name)))


def create_camera(session: Session, site: Site, name: str) -> Camera:
    checked_name(name, "name")
    if name.lower() in RESERVED_CAMERA_NAMES:
        raise InvalidError(f"name={name!r} is reserved (MQTT topic words {', '.join(sorted(RESERVED_CAMERA_NAMES))})")
    exists = session.scalar(select(Camera.id).where(Camera.site_id == site.id, Camera.name == name))
    if exists is not None:
        raise ConflictError(f"camera name={name!r} already exists in site {site.name!r}")
    camera = Camera(site_id=site.id, name=name)
    session.add(camera)
    _commit_new(session, f"camera name={name!r}")
    return camera


def get_camera(session: Session, site: Site, name: str) -> Camera:
    camera = session.scalar(
        select(Camera).where(Camera.site_id == site.id, Camera.name == checked_name(name, "camera"))
    )
    if camera is None:
        raise NotFoundError(f"camera={name!r} not found in site {site.name!r}")
    return camera


def set_camera_owner(session: Session, camera: Camera, agent: str | None) -> Camera:
    """Reassign (or release, ``None``) a camera; the brokers and ingest follow (Mosquitto after a new export)."""
    camera.agent = agent
    session.commit()
    return camera


# --------------------------------------------------------------------------- classifiers


# Built once: every classify request runs it, and SQLAlchemy memoises a statement object's cache key (a fresh join
# statement per call spent more time computing its key than SQLite spent running it).
_CLASSIFIER_BY_NAMES = (
    select(Classifier)
    .join(Classifier.site)
    .options(contains_eager(Classifier.site))
    .where(Site.name == bindparam("site"), Classifier.name == bindparam("classifier"))
)


def get_classifier(session: Session, site_name: str, name: str) -> Classifier:
    """One query (classifier joined to its site, both loaded); a miss asks again to say which name is unknown."""
    names = {"site": checked_name(site_name, "site"), "classifier": checked_name(name, "classifier")}
    clf = session.scalar(_CLASSIFIER_BY_NAMES, names)
    if clf is None:
        get_site(session, site_name)
        raise NotFoundError(f"classifier={name!r} not found in site {site_name!r}")
    return clf


def list_classifiers(session: Session, site: Site) -> list[Classifier]:
    return list(session.scalars(select(Classifier).where(Classifier.site_id == site.id).order_by(Classifier.name)))


def create_classifier(session: Session, site: Site, name: str) -> Classifier:
    checked_name(name, "name")
    if name.lower() in RESERVED_CLASSIFIER_NAMES:
        raise InvalidError(f"name={name!r} is reserved (the ImageNet default model and MQTT topic words)")
    exists = session.scalar(select(Classifier.id).where(Classifier.site_id == site.id, Classifier.name == name))
    if exists is not None:
        raise ConflictError(f"classifier name={name!r} already exists in site {site.name!r}")
    clf = Classifier(site_id=site.id, name=name)
    session.add(clf)
    _commit_new(session, f"classifier name={name!r}")
    return clf


def status_counts(session: Session, classifier: Classifier) -> dict[int | None, dict[str, int]]:
    """Images per (group id, status) of one classifier; group None holds images in no group."""
    rows = session.execute(
        select(Image.group_id, Image.status, func.count())
        .where(Image.classifier_id == classifier.id)
        .group_by(Image.group_id, Image.status)
    )
    counts: dict[int | None, dict[str, int]] = defaultdict(lambda: {s.value: 0 for s in ImageStatus})
    for group_id, status, n in rows:
        counts[group_id][status] = int(n)
    return counts


def list_models(session: Session, classifier: Classifier) -> list[ModelVersion]:
    return list(
        session.scalars(
            select(ModelVersion)
            .where(ModelVersion.classifier_id == classifier.id)
            .order_by(ModelVersion.version.desc())
        )
    )


# --------------------------------------------------------------------------- groups


def list_groups(session: Session, classifier: Classifier) -> list[Group]:
    return list(session.scalars(select(Group).where(Group.classifier_id == classifier.id).order_by(Group.name)))


def find_group(session: Session, classifier: Classifier, name: str) -> Group | None:
    return session.scalar(select(Group).where(Group.classifier_id == classifier.id, Group.name == name))


def get_group(session: Session, classifier: Classifier, name: str) -> Group:
    """The group called ``name`` (checked); 404 when the classifier has none."""
    group = find_group(session, classifier, checked_name(name, "group"))
    if group is None:
        raise NotFoundError(f"group={name!r} not found in classifier {classifier.name!r}")
    return group


def create_group(
    session: Session,
    classifier: Classifier,
    name: str,
    parent: str | None = None,
    common: bool = False,
    none_of_the_above: bool = False,
) -> Group:
    checked_name(name, "name")
    if find_group(session, classifier, name) is not None:
        raise ConflictError(f"group name={name!r} already exists in classifier {classifier.name!r}")
    parent_id = None
    if parent is not None:
        parent_group = find_group(session, classifier, checked_name(parent, "parent"))
        if parent_group is None:
            raise NotFoundError(f"parent={parent!r} is not a group of classifier {classifier.name!r}")
        parent_id = parent_group.id
    group = Group(
        classifier_id=classifier.id,
        name=name,
        parent_id=parent_id,
        common=common,
        none_of_the_above=none_of_the_above,
    )
    session.add(group)
    _commit_new(session, f"group name={name!r}")
    return group


def ensure_group(session: Session, classifier: Classifier, name: str) -> Group:
    """The group of that name, created (and flushed, not committed) when missing."""
    group = find_group(session, classifier, checked_name(name, "group"))
    if group is None:
        group = Group(classifier_id=classifier.id, name=name)
        session.add(group)
        session.flush()
    return group


# --------------------------------------------------------------------------- images


def get_image(session: Session, image_id: int) -> Image:
    image = session.get(Image, image_id)
    if image is None:
        raise NotFoundError(f"image id={image_id} not found")
    return image


def list_images(
    session: Session,
    classifier: Classifier,
    status: ImageStatus | None = None,
    group: str | None = None,
    limit: int = 100,
    offset: int = 0,
    after_id: int | None = None,
) -> list[Image]:
    """Images in id order; ``after_id`` (keyset: the last id of the previous page) beats ``offset`` on big sets."""
    query = select(Image).where(Image.classifier_id == classifier.id)
    if after_id is not None:
        query = query.where(Image.id > after_id)
    if status is not None:
        query = query.where(Image.status == status.value)
    if group is not None:
        found = find_group(session, classifier, checked_name(group, "group"))
        if found is None:
            raise NotFoundError(f"group={group!r} not found in classifier {classifier.name!r}")
        query = query.where(Image.group_id == found.id)
    query = query.options(joinedload(Image.blob), joinedload(Image.group))
    query = query.order_by(Image.id).limit(max(1, min(limit, MAX_PAGE))).offset(max(0, offset))
    return list(session.scalars(query))


def update_image(session: Session, image: Image, status: ImageStatus | None, group: str | None) -> Image:
    """Move an image between groups and statuses; GROUP needs a group, so one is required when it has none."""
    classifier = session.get(Classifier, image.classifier_id)
    assert classifier is not None
    if group is not None:
        image.group_id = ensure_group(session, classifier, group).id
    if status is not None:
        if status == ImageStatus.GROUP and image.group_id is None:
            raise InvalidError(f"status={status.value!r} needs a group: image id={image.id} is in none")
        image.status = status.value
    image.updated_at = utcnow()
    session.commit()
    return image
