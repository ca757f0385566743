"""What the web page shows: per site its recent frames, classifiers (groups, models, jobs) and agents."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from camfleet_hub.core import urls
from camfleet_hub.datasets import crud, media
from camfleet_hub.datasets import public as views
from camfleet_hub.datasets.models import Image, ImageStatus, Site
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


def _agent(agent: Agent) -> dict[str, Any]:
    status = agent.status or {}
    return {
        "name": agent.name,
        "state": agent.state,
        "software_version": agent.software_version or status.get("software_version", ""),
        "models": status.get("models", {}),
        "cameras": status.get("cameras", []),
        "last_seen_at": agent.last_seen_at,
    }


def overview(session: Session, site_ids: Collection[int] | None = None) -> dict[str, Any]:
    """Every site's panel, or only those in ``site_ids`` (the ones the viewer holds a role in)."""
    sites = []
    query = select(Site).order_by(Site.name)
    if site_ids is not None:
        query = query.where(Site.id.in_(list(site_ids)))
    for site in session.scalars(query):
        classifiers = []
        for clf in crud.list_classifiers(session, site):
            detail = views.classifier_detail(session, clf).model_dump()
            for group in detail["groups"]:
                group["samples"] = _samples(session, group["id"])
            detail["jobs"] = [views.job(j) for j in jobs.list_jobs(session, clf, JOBS_PER_CLASSIFIER)]
            classifiers.append(detail)
        sites.append(
            {
                "id": site.id,
                "name": site.name,
                "frames": media.list_frames(session, site.name, None, FRAMES_PER_SITE),
                "classifiers": classifiers,
                "agents": [
                    _agent(a)
                    for a in session.scalars(select(Agent).where(Agent.site_id == site.id).order_by(Agent.name))
                ],
            }
        )
    default = announce.default_model(session)
    return {"sites": sites, "default_model": None if default is None else views.model(default)}
