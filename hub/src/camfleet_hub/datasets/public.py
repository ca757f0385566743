"""Rows turned into the Public schemas the REST API answers with: names instead of ids, URLs for bytes."""

from __future__ import annotations

from sqlalchemy.orm import Session

from camfleet_contract.rest import JobPublic, ModelPublic
from camfleet_hub.core import urls
from camfleet_hub.datasets import crud
from camfleet_hub.datasets.models import Camera, Classifier, Group, Image, ImageStatus, Site
from camfleet_hub.datasets.schemas import CameraPublic, ClassifierDetail, ClassifierPublic, GroupPublic, ImagePublic
from camfleet_hub.training.models import ModelVersion, TrainingJob


def camera(cam: Camera, site: Site) -> CameraPublic:
    return CameraPublic(
        id=cam.id,
        site=site.name,
        name=cam.name,
        created_at=cam.created_at,
        last_seen_at=cam.last_seen_at,
        agent=cam.agent,
    )


def classifier(clf: Classifier) -> ClassifierPublic:
    return ClassifierPublic(id=clf.id, site=clf.site.name, name=clf.name, created_at=clf.created_at)


def model(m: ModelVersion) -> ModelPublic:
    clf = m.classifier
    return ModelPublic(
        id=m.id,
        site=None if clf is None else clf.site.name,
        classifier=None if clf is None else clf.name,
        default=clf is None,
        version=m.version,
        status=m.status,
        sha256=m.sha256,
        size=m.size,
        classes=list(m.manifest.get("classes", [])),
        metrics=m.metrics or {},
        job_id=m.job_id,
        created_at=m.created_at,
        promoted_at=m.promoted_at,
        bundle_url=urls.model_bundle(m.id),
    )


def groups(session: Session, clf: Classifier) -> list[GroupPublic]:
    counts = crud.status_counts(session, clf)
    rows = crud.list_groups(session, clf)
    names = {g.id: g.name for g in rows}
    return [group(g, names, counts.get(g.id)) for g in rows]


def group(g: Group, names: dict[int, str], counts: dict[str, int] | None) -> GroupPublic:
    return GroupPublic(
        id=g.id,
        name=g.name,
        parent=None if g.parent_id is None else names.get(g.parent_id),
        common=g.common,
        none_of_the_above=g.none_of_the_above,
        counts=counts or {s.value: 0 for s in ImageStatus},
    )


def classifier_detail(session: Session, clf: Classifier) -> ClassifierDetail:
    counts = crud.status_counts(session, clf)
    totals = {s.value: sum(c.get(s.value, 0) for c in counts.values()) for s in ImageStatus}
    rows = crud.list_groups(session, clf)
    names = {g.id: g.name for g in rows}
    return ClassifierDetail(
        id=clf.id,
        site=clf.site.name,
        name=clf.name,
        created_at=clf.created_at,
        groups=[group(g, names, counts.get(g.id)) for g in rows],
        new_count=totals[ImageStatus.NEW.value],
        counts=totals,
        models=[model(m) for m in crud.list_models(session, clf)],
    )


def image(img: Image, classifier_name: str) -> ImagePublic:
    return ImagePublic(
        id=img.id,
        classifier=classifier_name,
        sha256=img.sha256,
        status=img.status,
        group=None if img.group is None else img.group.name,
        source=img.source,
        original_name=img.original_name,
        frame_id=img.frame_id,
        width=img.blob.width,
        height=img.blob.height,
        created_at=img.created_at,
        updated_at=img.updated_at,
        labelled_by=img.labelled_by,
        content_url=urls.image_content(img.id),
        thumbnail_url=urls.image_thumbnail(img.id),
    )


def job(j: TrainingJob) -> JobPublic:
    clf = j.classifier
    return JobPublic(
        id=j.id,
        site=clf.site.name,
        classifier=clf.name,
        mode=j.mode,
        status=j.status,
        worker=j.worker,
        attempts=j.attempts,
        max_attempts=j.max_attempts,
        lease_expires_at=j.lease_expires_at,
        progress=j.progress,
        stage=j.stage,
        message=j.message,
        auto_promote=j.auto_promote,
        params=dict(j.params or {}),
        gpu=bool(j.gpu),
        model_version_id=j.model_version_id,
        created_at=j.created_at,
        started_at=j.started_at,
        finished_at=j.finished_at,
    )
