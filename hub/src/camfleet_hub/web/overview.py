"""What the web page shows: per site its recent frames, classifiers (groups, models, jobs) and agents."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from camfleet_contract.rest import JobPublic, ModelPublic
from camfleet_hub.core import urls
from camfleet_hub.datasets import crud, media
from camfleet_hub.datasets import public as views
from camfleet_hub.datasets.models import Classifier, Image, ImageStatus, Site
from camfleet_hub.fleet.models import Agent
from camfleet_hub.training import announce, jobs

FRAMES_PER_SITE = 12
SAMPLES_PER_GROUP = 4
JOBS_PER_CLASSIFIER = 5


def _samples(session: Session, group_id: int) -> list[str]:
    ids = session.scalars(
        select(Image.id)
        .where(Image.group_id == group_id, Image.status != ImageStatus.DELETED.value)
        .order_by(Image.id.desc())
        .limit(SAMPLES_PER_GROUP)
    )
    return [urls.image_thumbnail(i) for i in ids]


@dataclass(frozen=True, slots=True)
class AgentRow:
    """An agent as the overview lists it: what it said in its latest status (models: classifier → version)."""

    name: str
    state: str
    software_version: str
    models: dict[str, Any]
    cameras: list[str]
    last_seen_at: datetime | None


@dataclass(frozen=True, slots=True)
class GroupPanel:
    """A group row with a few of its newest images' thumbnails."""

    id: int
    name: str
    common: bool
    none_of_the_above: bool
    counts: dict[str, int]
    samples: list[str]


@dataclass(frozen=True, slots=True)
class ClassifierPanel:
    """A classifier's part of its site panel: image counts, groups, model versions and latest jobs."""

    name: str
    counts: dict[str, int]
    new_count: int
    groups: list[GroupPanel]
    models: list[ModelPublic]
    jobs: list[JobPublic]


@dataclass(frozen=True, slots=True)
class SitePanel:
    id: int
    name: str
    frames: list[Any]  # datasets.media.list_frames
    classifiers: list[ClassifierPanel]
    agents: list[AgentRow]


@dataclass(frozen=True, slots=True)
class Overview:
    sites: list[SitePanel]
    default_model: ModelPublic | None


def _agent(agent: Agent) -> AgentRow:
    status = agent.status or {}
    return AgentRow(
        name=agent.name,
        state=agent.state,
        software_version=agent.software_version or status.get("software_version", ""),
        models=status.get("models", {}),
        cameras=status.get("cameras", []),
        last_seen_at=agent.last_seen_at,
    )


def _classifier(session: Session, clf: Classifier) -> ClassifierPanel:
    detail = views.classifier_detail(session, clf)
    return ClassifierPanel(
        name=detail.name,
        counts=detail.counts,
        new_count=detail.new_count,
        groups=[
            GroupPanel(g.id, g.name, g.common, g.none_of_the_above, g.counts, _samples(session, g.id))
            for g in detail.groups
        ],
        models=detail.models,
        jobs=[views.job(j) for j in jobs.list_jobs(session, clf, JOBS_PER_CLASSIFIER)],
    )


def overview(session: Session, site_ids: Collection[int] | None = None) -> Overview:
    """Every site's panel, or only those in ``site_ids`` (the ones the viewer holds a role in)."""
    sites = []
    query = select(Site).order_by(Site.name)
    if site_ids is not None:
        query = query.where(Site.id.in_(list(site_ids)))
    for site in session.scalars(query):
        classifiers = [_classifier(session, clf) for clf in crud.list_classifiers(session, site)]
        agents = session.scalars(select(Agent).where(Agent.site_id == site.id).order_by(Agent.name))
        sites.append(
            SitePanel(
                id=site.id,
                name=site.name,
                frames=media.list_frames(session, site.name, None, FRAMES_PER_SITE),
                classifiers=classifiers,
                agents=[_agent(a) for a in agents],
            )
        )
    default = announce.default_model(session)
    return Overview(sites, None if default is None else views.model(default))
