"""``make_model``: queue a training job, wait for a trainer to finish it, test it on the held-out set, promote it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from camfleet_hub.auth.models import Role
from camfleet_hub.compat.models import HoldoutImage
from camfleet_hub.compat.schemas import MakeModelAnswer, MakeModelRequest
from camfleet_hub.compat.temples import settings_of, temple_classifier
from camfleet_hub.core.errors import ServiceError
from camfleet_hub.datasets.embeddings import decode_for_embedding
from camfleet_hub.datasets.models import Classifier, Group, Image, ImageStatus
from camfleet_hub.serving import classify as classify_service
from camfleet_hub.serving.service import score_images
from camfleet_hub.training import announce, jobs, registry
from camfleet_hub.training.models import JobStatus, ModelStatus, ModelVersion, TrainingJob

if TYPE_CHECKING:
    from camfleet_hub.auth.principal import Principal
    from camfleet_hub.core.container import HubServices

POLL_S = 0.5
FINISHED = (JobStatus.SUCCEEDED.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value)


def holdout_rows(session: Session, classifier: Classifier) -> list[tuple[int, str, str]]:
    """(image id, sha256, group name) of the classifier's test set (confirmed images only)."""
    rows = session.execute(
        select(Image.id, Image.sha256, Group.name)
        .join(HoldoutImage, HoldoutImage.image_id == Image.id)
        .join(Group, Image.group_id == Group.id)
        .where(HoldoutImage.classifier_id == classifier.id, Image.status == ImageStatus.GROUP.value)
        .order_by(Image.id)
    )
    return [(int(i), s, g) for i, s, g in rows]


def holdout_accuracy(
    services: HubServices, session: Session, cache: classify_service.RuntimeCache, model: ModelVersion
) -> tuple[float, int] | None:
    """Share of the classifier's test images the model classifies as their group; stored in its metrics."""
    assert model.classifier is not None
    rows = holdout_rows(session, model.classifier)
    if not rows:
        return None
    runtime = cache.get(model)
    limit = services.settings.ingest.max_pixels
    right = 0
    for start in range(0, len(rows), 32):
        chunk = rows[start : start + 32]
        decoded = [decode_for_embedding(services.store.get(sha), limit) for _i, sha, _g in chunk]
        for (_i, _sha, group), r in zip(chunk, score_images(runtime, decoded), strict=True):
            right += r.label == group
    accuracy = right / len(rows)
    model.metrics = {**(model.metrics or {}), "test_accuracy": accuracy, "test_images": len(rows)}
    session.commit()
    return accuracy, len(rows)


def make_model(
    services: HubServices,
    session: Session,
    cache: classify_service.RuntimeCache,
    user: Principal,
    req: MakeModelRequest,
) -> tuple[int, MakeModelAnswer]:
    """Queue a training job, wait for a trainer to finish it, test it on the test set, promote it."""
    cfg = settings_of(services)
    answer = MakeModelAnswer()
    classifier = temple_classifier(services, session, user, req.temple_id, Role.ADMIN, asked=req.classifier)
    current = announce.production_model(session, classifier)
    if current is not None and not req.forceful:
        answer.error_msg.append(
            f"temple_id={req.temple_id!r} already has a trained model (version {current.version}); "
            "send forceful=true to replace it"
        )
        return 400, answer
    if not _has_data(session, classifier, req.temple_id, answer):
        return 400, answer
    try:
        job = jobs.create_job(session, classifier, mode=cfg.make_model_mode, auto_promote=False)
    except ServiceError as exc:
        answer.error_msg.append(exc.detail)  # e.g. a job of this classifier still queued: the documented 400
        return 400, answer
    answer.job_id = job.id
    answer.made_model_architecture_flag = True
    finished = _wait(session, job.id, cfg.make_model_wait_s)
    if finished is None:
        answer.error_msg.append(
            f"training job id={job.id} still running after compat.make_model_wait_s={cfg.make_model_wait_s:g}; "
            f"follow it at GET /api/v1/jobs/{job.id}"
        )
        return 202, answer
    return _test_and_promote(services, session, cache, finished, answer)


def _has_data(session: Session, classifier: Classifier, temple_id: str, answer: MakeModelAnswer) -> bool:
    """Set the data flags and say what is missing: enough categories with enough images, and test images."""
    counts = jobs.trainable_groups(session, classifier)
    ready = {g: n for g, n in counts.items() if n >= jobs.MIN_IMAGES_PER_GROUP}
    answer.got_training_data_flag = len(ready) >= jobs.MIN_GROUPS
    answer.test_images = len(holdout_rows(session, classifier))
    answer.got_testing_data_flag = answer.test_images > 0
    if not answer.got_training_data_flag:
        have = ", ".join(f"{g} ({n})" for g, n in sorted(counts.items())) or "none"
        answer.error_msg.append(
            f"training data: need at least {jobs.MIN_GROUPS} categories with at least "
            f"{jobs.MIN_IMAGES_PER_GROUP} train images each; have {have}"
        )
    else:
        problem = jobs.not_ready(session, classifier)  # e.g. every category marked none of the above
        if problem is not None:
            answer.got_training_data_flag = False
            answer.error_msg.append(f"training data: {problem}")
    if not answer.got_testing_data_flag:
        answer.error_msg.append(f"testing data: no test images for temple_id={temple_id!r} (train_test='test')")
    return not answer.error_msg


def _test_and_promote(
    services: HubServices,
    session: Session,
    cache: classify_service.RuntimeCache,
    finished: TrainingJob,
    answer: MakeModelAnswer,
) -> tuple[int, MakeModelAnswer]:
    """The finished job's model: tested on the held-out set (accuracy kept in its metrics), then promoted."""
    if finished.status != JobStatus.SUCCEEDED.value or finished.model_version_id is None:
        answer.error_msg.append(f"training job id={finished.id} {finished.status}: {finished.message or 'no reason'}")
        return 400, answer
    answer.trained_model_flag = True
    model = registry.get_model(session, finished.model_version_id)
    answer.model_version = model.version
    tested = holdout_accuracy(services, session, cache, model)
    if tested is not None:
        answer.test_accuracy, answer.test_images = tested
        answer.tested_model_flag = True
    if model.status != ModelStatus.PRODUCTION.value:
        registry.promote(services, session, model)
    answer.saved_model_flag = True
    return 200, answer


def _wait(session: Session, job_id: int, wait_s: float) -> TrainingJob | None:
    """The job once it finished, or None when ``wait_s`` passed first (polled; a trainer does the work)."""
    deadline = time.monotonic() + wait_s
    while True:
        session.expire_all()
        job = jobs.get_job(session, job_id)
        if job.status in FINISHED:
            return job
        session.rollback()  # end the read transaction so the trainer's writes become visible
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL_S)
