"""Ingest counters and the dead-letter records of rejected messages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from camfleet_hub.auth.deps import HubAdminDep
from camfleet_hub.core.deps import ServicesDep, SessionDep
from camfleet_hub.datasets import media
from camfleet_hub.ingest.schemas import DeadLetterPublic, IngestStats

router = APIRouter(tags=["ingest"])


@router.get("/ingest/stats", operation_id="get_ingest_stats", response_model=IngestStats)
def ingest_stats(session: SessionDep, services: ServicesDep, _admin: HubAdminDep) -> IngestStats:
    return IngestStats.model_validate(media.ingest_stats(services, session))


@router.get("/ingest/dead-letters", operation_id="list_dead_letters", response_model=list[DeadLetterPublic])
def dead_letters(
    session: SessionDep,
    _admin: HubAdminDep,
    reason: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeadLetterPublic]:
    return [DeadLetterPublic.model_validate(d) for d in media.list_dead_letters(session, limit, reason)]
