"""Training jobs: created by people, claimed, renewed, failed and completed by trainer workers.

Access: site viewers read a site's jobs, labellers start and cancel them. The trainer's side (claim, heartbeat,
fail, result) needs a hub administrator: in practice an every-site API token with the admin role, which is
what a trainer worker is configured with (a trainer reads every site's data and publishes models anyway).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Query, Response, UploadFile, status

from camfleet_contract.rest import (  # the trainer's side of these routes: the contract's bodies
    Dataset,
    HeartbeatAnswer,
    JobClaim,
    JobClaimed,
    JobComparison,
    JobFail,
    JobHeartbeat,
    JobPublic,
    ModelComparison,
    ModelPublic,
)
from camfleet_contract.vectors import MEDIA_TYPE, MODEL_HEADER, pack_vectors
from camfleet_hub.auth.deps import CurrentUserDep, HubAdminDep, SiteLabellerDep, SiteViewerDep, require_in_classifier
from camfleet_hub.auth.models import Role
from camfleet_hub.core.deps import ServicesDep, SessionDep
from camfleet_hub.core.errors import NotFoundError, TooLargeError
from camfleet_hub.datasets import crud
from camfleet_hub.datasets import public as views
from camfleet_hub.training import jobs, progress_log, registry
from camfleet_hub.training.models import TrainingJob
from camfleet_hub.training.schemas import JobCreate, JobEventPublic, JobProgress

router = APIRouter(tags=["jobs"])

MAX_BUNDLE_UPLOAD = 512 * 1024 * 1024


def _public(job: TrainingJob) -> JobPublic:
    return views.job(job)


@router.post(
    "/sites/{site}/classifiers/{clf}/jobs",
    operation_id="create_job",
    response_model=JobPublic,
    status_code=status.HTTP_201_CREATED,
)
def create_job(site: str, clf: str, body: JobCreate, session: SessionDep, _user: SiteLabellerDep) -> JobPublic:
    classifier = crud.get_classifier(session, site, clf)
    params = body.params.model_dump(exclude_none=True)
    return _public(jobs.create_job(session, classifier, body.mode, body.auto_promote, params))


@router.get("/sites/{site}/classifiers/{clf}/jobs", operation_id="list_jobs", response_model=list[JobPublic])
def list_jobs(
    site: str,
    clf: str,
    session: SessionDep,
    _user: SiteViewerDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[JobPublic]:
    return [_public(j) for j in jobs.list_jobs(session, crud.get_classifier(session, site, clf), limit)]


@router.post(
    "/jobs/claim",
    operation_id="claim_job",
    response_model=JobClaimed,
    responses={204: {"description": "no job is waiting"}},
)
def claim_job(
    body: JobClaim, session: SessionDep, services: ServicesDep, _trainer: HubAdminDep
) -> JobClaimed | Response:
    lease = services.settings.jobs.lease_s
    job = jobs.claim(session, body.worker, lease_seconds=lease, gpu=body.gpu)
    if job is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return JobClaimed(job=_public(job), lease_seconds=lease)


@router.get("/jobs/{job_id}", operation_id="get_job", response_model=JobPublic)
def get_job(job_id: int, session: SessionDep, user: CurrentUserDep) -> JobPublic:
    job = jobs.get_job(session, job_id)
    require_in_classifier(user, session, job.classifier_id, Role.VIEWER)
    return _public(job)


@router.post("/jobs/{job_id}/heartbeat", operation_id="heartbeat_job", response_model=HeartbeatAnswer)
def heartbeat(
    job_id: int, body: JobHeartbeat, session: SessionDep, services: ServicesDep, _trainer: HubAdminDep
) -> HeartbeatAnswer:
    lease = services.settings.jobs.lease_s
    cancel = jobs.heartbeat(
        session, job_id, body.worker, body.progress, body.stage, body.message, lease_seconds=lease, epochs=body.epochs()
    )
    return HeartbeatAnswer(cancel=cancel, lease_seconds=lease)


@router.get("/jobs/{job_id}/progress", operation_id="get_job_progress", response_model=JobProgress)
def job_progress(
    job_id: int,
    session: SessionDep,
    user: CurrentUserDep,
    after: Annotated[int, Query(ge=0, description="only events with a larger id (for polling)")] = 0,
) -> JobProgress:
    job = jobs.get_job(session, job_id)
    require_in_classifier(user, session, job.classifier_id, Role.VIEWER)
    events = progress_log.events(session, job_id, after)
    last = events[-1].id if events else (after or None)
    return JobProgress(
        job=_public(job),
        events=[JobEventPublic.model_validate(e) for e in events],
        epochs=[p.model_dump(exclude_none=True) for p in progress_log.epoch_curve(session, job_id)],
        eta_s=progress_log.eta_seconds(session, job_id) if job.status == "running" else None,
        last_event_id=last,
    )


@router.post("/jobs/{job_id}/fail", operation_id="fail_job", response_model=JobPublic)
def fail_job(job_id: int, body: JobFail, session: SessionDep, _trainer: HubAdminDep) -> JobPublic:
    return _public(jobs.fail(session, job_id, body.worker, body.reason))


@router.post("/jobs/{job_id}/comparison", operation_id="upload_job_comparison", response_model=JobPublic)
def upload_comparison(job_id: int, body: JobComparison, session: SessionDep, _trainer: HubAdminDep) -> JobPublic:
    return _public(jobs.finish_comparison(session, job_id, body.worker, body.comparison))


@router.get(
    "/sites/{site}/classifiers/{clf}/comparison",
    operation_id="get_comparison",
    response_model=ModelComparison,
    responses={404: {"description": "no compare job has finished for this classifier"}},
)
def get_comparison(site: str, clf: str, session: SessionDep, _user: SiteViewerDep) -> ModelComparison:
    comparison = jobs.latest_comparison(session, crud.get_classifier(session, site, clf))
    if comparison is None:
        raise NotFoundError(f"classifier {clf!r} has no comparison yet: start a compare job")
    return comparison


@router.post("/jobs/{job_id}/cancel", operation_id="cancel_job", response_model=JobPublic)
def cancel_job(job_id: int, session: SessionDep, user: CurrentUserDep) -> JobPublic:
    require_in_classifier(user, session, jobs.get_job(session, job_id).classifier_id, Role.LABELLER)
    return _public(jobs.cancel(session, job_id))


@router.get("/jobs/{job_id}/dataset", operation_id="get_job_dataset", response_model=Dataset)
def job_dataset(job_id: int, session: SessionDep, services: ServicesDep, user: CurrentUserDep) -> Dataset:
    job = jobs.get_job(session, job_id)
    require_in_classifier(user, session, job.classifier_id, Role.VIEWER)
    return jobs.dataset(session, job, services.near_indexes)


@router.get(
    "/jobs/{job_id}/embeddings",
    operation_id="get_job_embeddings",
    response_class=Response,
    responses={
        200: {
            "content": {MEDIA_TYPE: {}},
            "description": "an .npz of `sha256` (S64) and `vectors` (float16, unit length) for the job's images "
            f"that have an embedding under the default model, whose sha256 is in the {MODEL_HEADER} header",
        }
    },
)
def job_embeddings(job_id: int, session: SessionDep, user: CurrentUserDep) -> Response:
    job = jobs.get_job(session, job_id)
    require_in_classifier(user, session, job.classifier_id, Role.VIEWER)
    model, vectors = jobs.dataset_vectors(session, job)
    return Response(pack_vectors(vectors), media_type=MEDIA_TYPE, headers={MODEL_HEADER: model or ""})


@router.post(
    "/jobs/{job_id}/result",
    operation_id="upload_job_result",
    response_model=ModelPublic,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": ModelPublic, "description": "this job's result was registered before"}},
)
def upload_result(
    job_id: int,
    file: Annotated[UploadFile, File(description="the bundle zip the trainer wrote")],
    session: SessionDep,
    services: ServicesDep,
    response: Response,
    _trainer: HubAdminDep,
) -> ModelPublic:
    data = file.file.read(MAX_BUNDLE_UPLOAD + 1)
    if len(data) > MAX_BUNDLE_UPLOAD:
        raise TooLargeError(f"file: bundle over the limit of {MAX_BUNDLE_UPLOAD} bytes")
    model, created = registry.register_result(services, session, job_id, data)
    if not created:
        response.status_code = status.HTTP_200_OK
    session.refresh(model)
    return views.model(model)
