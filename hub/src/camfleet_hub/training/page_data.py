"""What the Training, model and Errors pages show, gathered from the services the REST API uses too."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from camfleet_hub.datasets import crud
from camfleet_hub.datasets import public as views
from camfleet_hub.datasets.models import Classifier
from camfleet_hub.training import charts, jobs, label_errors, progress_log, registry, reports
from camfleet_hub.training.models import JobStatus, ModelStatus, ModelVersion

JOBS_SHOWN = 50
RECENT_EVENTS = 12
ERRORS_SHOWN = 60
ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)


def training(session: Session, classifier: Classifier) -> dict[str, Any]:
    """The classifier's running (or queued) job with its curve and latest events, and its job history."""
    history = jobs.list_jobs(session, classifier, JOBS_SHOWN)
    current = next((j for j in history if j.status in ACTIVE), None)
    context: dict[str, Any] = {
        "classifier": views.classifier(classifier),
        "jobs": [views.job(j) for j in history],
        "current": None,
        "groups": jobs.trainable_groups(session, classifier),
    }
    if current is not None:
        events = progress_log.events(session, current.id)
        epochs = progress_log.epoch_curve(session, current.id)
        context["current"] = {
            **views.job(current),
            "chart": charts.training_charts(epochs),
            "epochs": epochs,
            "eta_s": progress_log.eta_seconds(session, current.id),
            "events": [
                {"at": e.created_at, "stage": e.stage, "progress": e.progress, "message": e.message}
                for e in events[-RECENT_EVENTS:]
            ],
            "last_event_id": events[-1].id if events else 0,
        }
    return context


def job_chart(session: Session, job_id: int) -> str:
    jobs.get_job(session, job_id)
    return charts.training_charts(progress_log.epoch_curve(session, job_id))


def model(session: Session, m: ModelVersion) -> dict[str, Any]:
    """A model version with its normalised report, and what the promote / rollback buttons may do."""
    rollback_to = None
    if m.status == ModelStatus.PRODUCTION.value and m.classifier_id is not None:
        target = registry.rollback_target(session, m)
        rollback_to = None if target is None else {"id": target.id, "version": target.version}
    report = reports.normalised(session, m)
    per_class = [
        {"name": name, **report["per_class"].get(name, {})} for name in report["classes"] if name in report["per_class"]
    ]
    return {
        "m": views.model(m),
        "report": report,
        "per_class": per_class,
        "rollback_to": rollback_to,
        "can_promote": m.classifier_id is not None and m.status != ModelStatus.PRODUCTION.value,
    }


def errors(session: Session, classifier: Classifier) -> dict[str, Any]:
    model = label_errors.latest_scored_model(session, classifier)
    return {
        "classifier": views.classifier(classifier),
        "model": None if model is None else views.model(model),
        "rows": label_errors.ranked(session, classifier, ERRORS_SHOWN),
        "groups": [g.name for g in crud.list_groups(session, classifier)],
    }
