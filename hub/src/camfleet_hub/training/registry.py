"""The model registry: accept a trainer's bundle, check it, version and re-sign it with the fleet key, promote.

Only bundles signed by the hub's fleet key ever reach agents: the hub checks the trainer's hashes and its own
signature, assigns the version, and signs the manifest again before storing the zip.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from camfleet_contract.bundle import (
    DEFAULT_CLASSIFIER,
    DEFAULT_SITE,
    PRECISION,
    SIGNATURE,
    BundleError,
    Manifest,
    pack_bundle,
    sign_bundle,
    unpack_bundle,
    verify_bundle,
)
from camfleet_contract.runtime import ClassifierRuntime
from camfleet_contract.signing import public_key_of
from camfleet_hub.core.db.types import utcnow
from camfleet_hub.core.errors import ConflictError, InvalidError, NotFoundError
from camfleet_hub.core.store.base import ObjectNotFound
from camfleet_hub.datasets.models import Classifier, Site
from camfleet_hub.serving.classify import choose_precision
from camfleet_hub.training import announce, reports
from camfleet_hub.training.jobs import get_job
from camfleet_hub.training.models import JobStatus, ModelStatus, ModelVersion, TrainingJob

if TYPE_CHECKING:
    from camfleet_hub.core.container import HubServices

log = logging.getLogger(__name__)

VERSION_RETRIES = 3


def get_model(session: Session, model_id: int) -> ModelVersion:
    model = session.get(ModelVersion, model_id)
    if model is None:
        raise NotFoundError(f"model id={model_id} not found")
    return model


def _next_version(session: Session, classifier_id: int | None) -> int:
    column = ModelVersion.classifier_id
    where = column.is_(None) if classifier_id is None else column == classifier_id
    return int(session.scalar(select(func.coalesce(func.max(ModelVersion.version), 0)).where(where)) or 0) + 1


def _check_loads(bundle_dir: Path, public_key: str) -> None:
    """Refuse a bundle whose model ONNX Runtime cannot run or whose outputs disagree with its classes."""
    runtime = ClassifierRuntime(bundle_dir, public_key=public_key, providers=["CPUExecutionProvider"], threads=1)
    size = runtime.manifest.preprocessing.size
    try:
        runtime.run(np.zeros((1, 3, size, size), dtype=np.float32))
    except BundleError:
        raise
    except Exception as exc:  # ORT's own exception types
        raise BundleError(f"model.onnx fails on a test input: {exc}") from None


@dataclass(frozen=True, slots=True)
class ResignedBundle:
    """A bundle as the hub stores it: the zip, its re-signed manifest and signature, and its report (if any)."""

    packed: bytes
    manifest: Manifest
    signature: str
    report: reports.BundleReport | None


def resign(services: HubServices, data: bytes, site: str, classifier: str, version: int) -> ResignedBundle:
    """Unpack, verify (hashes + the uploader's signature), set site/classifier/version, re-sign.

    The signed site and classifier are what agents check: the default bundle is site "*", classifier
    "imagenet", so it can never be taken for a site's own classifier.

    """
    with tempfile.TemporaryDirectory(prefix="camfleet-bundle-") as tmp:
        bundle_dir = unpack_bundle(data, Path(tmp) / "bundle")
        manifest = verify_bundle(bundle_dir, None)
        update_fields: dict[str, object] = {"version": str(version), "site": site, "classifier": classifier}
        # The precision is signed with the bundle so hub and agents run the same model file (classify.precision*).
        precision = choose_precision(services.settings, site, classifier, manifest)
        update_fields["metrics"] = {**manifest.metrics, PRECISION: precision}
        manifest = sign_bundle(bundle_dir, manifest.model_copy(update=update_fields), services.fleet_signing_key)
        _check_loads(bundle_dir, public_key_of(services.fleet_signing_key))
        signature = (bundle_dir / SIGNATURE).read_text().strip()
        return ResignedBundle(pack_bundle(bundle_dir), manifest, signature, reports.read_report(bundle_dir))


def _store_model(
    services: HubServices,
    session: Session,
    data: bytes,
    classifier: Classifier | None,
    job: TrainingJob | None,
    status: ModelStatus,
) -> ModelVersion:
    """Verify + re-sign + store + insert the row, retrying when a concurrent upload took the version number."""
    for attempt in range(VERSION_RETRIES):
        version = _next_version(session, None if classifier is None else classifier.id)
        try:
            site, name = (DEFAULT_SITE, DEFAULT_CLASSIFIER)
            if classifier is not None:
                site, name = classifier.site.name, classifier.name
            signed = resign(services, data, site, name, version)
        except BundleError as exc:
            session.rollback()
            raise InvalidError(f"file: bundle rejected: {exc}") from None
        sha = services.store.put(signed.packed, prefix=announce.BUNDLE_PREFIX)
        services.bundle_signatures.remember(sha, signed.signature)
        model = ModelVersion(
            classifier_id=None if classifier is None else classifier.id,
            version=version,
            status=status.value,
            sha256=sha,
            size=len(signed.packed),
            manifest=signed.manifest.model_dump(mode="json"),
            metrics=dict(signed.manifest.metrics),
            job_id=None if job is None else job.id,
            promoted_at=utcnow() if status == ModelStatus.PRODUCTION else None,
            report=None if signed.report is None else signed.report.kept,
        )
        session.add(model)
        try:
            session.flush()
        except IntegrityError:
            session.rollback()
            if job is not None and _model_of_job(session, job.id) is not None:
                raise
            log.info("model version %s was taken concurrently (attempt %s); retrying", version, attempt + 1)
            continue
        reports.store_label_scores(session, model, [] if signed.report is None else signed.report.ranking)
        return model
    raise ConflictError("could not assign a model version: too many concurrent uploads")


def _model_of_job(session: Session, job_id: int) -> ModelVersion | None:
    return session.scalar(select(ModelVersion).where(ModelVersion.job_id == job_id))


def register_result(services: HubServices, session: Session, job_id: int, data: bytes) -> tuple[ModelVersion, bool]:
    """A job's bundle becomes the next candidate version; (model, created). A repeat upload returns the first."""
    job = get_job(session, job_id)
    existing = _model_of_job(session, job.id)
    if existing is not None:
        return existing, False
    if job.status != JobStatus.RUNNING.value:
        raise ConflictError(f"job id={job_id} is {job.status}; only a running job can deliver a result")
    try:
        model = _store_model(services, session, data, job.classifier, job, ModelStatus.CANDIDATE)
    except IntegrityError:  # the same job's result was registered concurrently
        session.rollback()
        found = _model_of_job(session, job_id)
        assert found is not None
        return found, False
    job.status = JobStatus.SUCCEEDED.value
    job.model_version_id = model.id
    job.finished_at = utcnow()
    job.progress = 1.0
    job.stage = "done"
    job.lease_expires_at = None
    session.commit()
    if job.auto_promote:
        promote(services, session, model)
    return model, True


def promote(services: HubServices, session: Session, model: ModelVersion) -> ModelVersion:
    """Make this version the classifier's production model (retiring the previous one) and re-announce."""
    if model.classifier_id is None:
        raise InvalidError(f"model id={model.id} is the ImageNet default; replace it with PUT /api/v1/models/default")
    session.execute(
        update(ModelVersion)
        .where(
            ModelVersion.classifier_id == model.classifier_id,
            ModelVersion.status == ModelStatus.PRODUCTION.value,
            ModelVersion.id != model.id,
        )
        .values(status=ModelStatus.RETIRED.value)
        .execution_options(synchronize_session=False)
    )
    if model.status != ModelStatus.PRODUCTION.value:
        model.status = ModelStatus.PRODUCTION.value
        model.promoted_at = utcnow()
    model.rolled_back_at = None
    session.commit()
    _announce(services, session, model)
    return model


def rollback_target(session: Session, model: ModelVersion) -> ModelVersion | None:
    """The version that was in production before ``model``: the latest promoted, retired, not rolled-back one."""
    return session.scalar(
        select(ModelVersion)
        .where(
            ModelVersion.classifier_id == model.classifier_id,
            ModelVersion.id != model.id,
            ModelVersion.status == ModelStatus.RETIRED.value,
            ModelVersion.promoted_at.is_not(None),
            ModelVersion.rolled_back_at.is_(None),
        )
        .order_by(ModelVersion.promoted_at.desc(), ModelVersion.id.desc())
        .limit(1)
    )


def rollback(services: HubServices, session: Session, model: ModelVersion) -> ModelVersion:
    """Take the production ``model`` out (retired, marked rolled back) and re-promote the previous production one.

    409 when ``model`` is not in production or no earlier production version exists; returns the re-promoted one.
    """
    if model.classifier_id is None:
        raise InvalidError(f"model id={model.id} is the ImageNet default; replace it with PUT /api/v1/models/default")
    if model.status != ModelStatus.PRODUCTION.value:
        raise ConflictError(f"model id={model.id} is {model.status}; only the production version can be rolled back")
    previous = rollback_target(session, model)
    if previous is None:
        raise ConflictError(
            f"model id={model.id} (version {model.version}) has no earlier production version to roll back to"
        )
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.id == model.id)
        .values(status=ModelStatus.RETIRED.value, rolled_back_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    previous.status = ModelStatus.PRODUCTION.value
    previous.promoted_at = utcnow()
    session.commit()
    session.refresh(model)
    log.info("model id=%s rolled back to id=%s (version %s)", model.id, previous.id, previous.version)
    _announce(services, session, previous)
    return previous


def _announce(services: HubServices, session: Session, model: ModelVersion) -> None:
    """Re-announce the site of ``model``'s classifier so its agents follow at once."""
    classifier = session.get(Classifier, model.classifier_id)
    assert classifier is not None
    site = session.get(Site, classifier.site_id)
    assert site is not None
    announce.announce_site(services, session, site)


def put_default(services: HubServices, session: Session, data: bytes) -> ModelVersion:
    """Register the ImageNet default bundle (retiring the previous one) and re-announce every site."""
    model = _store_model(services, session, data, None, None, ModelStatus.PRODUCTION)
    session.execute(
        update(ModelVersion)
        .where(
            ModelVersion.classifier_id.is_(None),
            ModelVersion.status == ModelStatus.PRODUCTION.value,
            ModelVersion.id != model.id,
        )
        .values(status=ModelStatus.RETIRED.value)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    announce.announce_all(services)
    return model


def bundle_bytes(services: HubServices, model: ModelVersion) -> bytes:
    """The signed zip of a registered model."""
    try:
        return services.store.get(model.sha256, prefix=announce.BUNDLE_PREFIX)
    except ObjectNotFound:
        raise NotFoundError(f"bundle of model id={model.id} is missing from the object store") from None
