"""What the Training, model and Errors pages show, gathered from the services the REST API uses too."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from camfleet_contract.rest import EpochMetrics, ModelComparison
from camfleet_hub.datasets import crud
from camfleet_hub.datasets import public as views
from camfleet_hub.datasets.models import Classifier
from camfleet_hub.training import charts, jobs, label_errors, progress_log, registry, reports
from camfleet_hub.training.figure_names import NamedFigure, named
from camfleet_hub.training.models import JobStatus, ModelStatus, ModelVersion
from camfleet_hub.training.schemas import LabelErrorPublic, ModelReport

JOBS_SHOWN = 50
RECENT_EVENTS = 12
ERRORS_SHOWN = 60
ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)


@dataclass(frozen=True, slots=True)
class EventLine:
    """One heartbeat in the running job's "recent progress" list."""

    at: datetime
    stage: str | None
    progress: float
    message: str | None


@dataclass(frozen=True, slots=True)
class RunningJob:
    """The running (or queued) job with its curve, estimate and latest events; the page polls for more."""

    job: Any  # datasets.public.job of the row
    chart: str
    epochs: list[EpochMetrics]
    eta_s: float | None
    events: list[EventLine]
    last_event_id: int


@dataclass(frozen=True, slots=True)
class TrainingPage:
    classifier: Any  # datasets.public.classifier of the row
    jobs: list[Any]
    current: RunningJob | None
    groups: dict[str, int]
    comparison: ModelComparison | None = None  # the latest compare job's table


@dataclass(frozen=True, slots=True)
class VersionRef:
    id: int
    version: int


@dataclass(frozen=True, slots=True)
class ClassFigures:
    """One row of the model page's per-class table; a figure the report lacks (or gives oddly) is None."""

    name: str
    precision: float | None
    recall: float | None
    support: int | float | None


@dataclass(frozen=True, slots=True)
class ModelPage:
    m: Any  # datasets.public.model of the row
    report: ModelReport
    per_class: list[ClassFigures]
    rollback_to: VersionRef | None
    can_promote: bool
    metrics: list[NamedFigure]
    thresholds: list[NamedFigure]
    int8: list[NamedFigure]


@dataclass(frozen=True, slots=True)
class ErrorsPage:
    classifier: Any  # datasets.public.classifier of the row
    model: Any  # datasets.public.model of the scored version, None when no version carries a ranking
    rows: list[LabelErrorPublic]
    groups: list[str]


def training(session: Session, classifier: Classifier) -> TrainingPage:
    """The classifier's running (or queued) job with its curve and latest events, and its job history."""
    history = jobs.list_jobs(session, classifier, JOBS_SHOWN)
    current = next((j for j in history if j.status in ACTIVE), None)
    running = None
    if current is not None:
        events = progress_log.events(session, current.id)
        epochs = progress_log.epoch_curve(session, current.id)
        running = RunningJob(
            job=views.job(current),
            chart=charts.training_charts(epochs),
            epochs=epochs,
            eta_s=progress_log.eta_seconds(session, current.id),
            events=[EventLine(e.created_at, e.stage, e.progress, e.message) for e in events[-RECENT_EVENTS:]],
            last_event_id=events[-1].id if events else 0,
        )
    return TrainingPage(
        classifier=views.classifier(classifier),
        jobs=[views.job(j) for j in history],
        current=running,
        groups=jobs.trainable_groups(session, classifier),
        comparison=jobs.latest_comparison(session, classifier),
    )


def job_chart(session: Session, job_id: int) -> str:
    jobs.get_job(session, job_id)
    return charts.training_charts(progress_log.epoch_curve(session, job_id))


def _figure(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _class_rows(report: ModelReport) -> list[ClassFigures]:
    """The report's per-class figures in the model's class order (classes without figures left out)."""
    rows = []
    for name in report.classes:
        if name not in report.per_class:
            continue
        figures = report.per_class[name]
        support = figures.get("support")
        rows.append(
            ClassFigures(
                name=name,
                precision=_figure(figures.get("precision")),
                recall=_figure(figures.get("recall")),
                support=support if isinstance(support, int | float) and not isinstance(support, bool) else None,
            )
        )
    return rows


def model(session: Session, m: ModelVersion) -> ModelPage:
    """A model version with its normalised report, and what the promote / rollback buttons may do."""
    rollback_to = None
    if m.status == ModelStatus.PRODUCTION.value and m.classifier_id is not None:
        target = registry.rollback_target(session, m)
        rollback_to = None if target is None else VersionRef(target.id, target.version)
    report = reports.normalised(session, m)
    return ModelPage(
        m=views.model(m),
        report=report,
        per_class=_class_rows(report),
        rollback_to=rollback_to,
        can_promote=m.classifier_id is not None and m.status != ModelStatus.PRODUCTION.value,
        metrics=named(report.metrics),
        thresholds=named(report.thresholds),
        int8=named(report.int8 or {}),
    )


def errors(session: Session, classifier: Classifier) -> ErrorsPage:
    model = label_errors.latest_scored_model(session, classifier)
    return ErrorsPage(
        classifier=views.classifier(classifier),
        model=None if model is None else views.model(model),
        rows=label_errors.ranked(session, classifier, ERRORS_SHOWN),
        groups=[g.name for g in crud.list_groups(session, classifier)],
    )
