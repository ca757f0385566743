"""REST routes of the fleet domain: event history, per-site fleet options, agent settings, commands."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from camfleet_hub.auth.deps import CurrentUserDep, SiteAdminDep, SiteViewerDep, get_current_user, visible_site_ids
from camfleet_hub.auth.models import Role
from camfleet_hub.auth.principal import Principal
from camfleet_hub.core.db.types import utcnow
from camfleet_hub.core.deps import ServicesDep, SessionDep, SettingsDep
from camfleet_hub.core.errors import InvalidError, UnauthenticatedError
from camfleet_hub.core.spreadsheet import CsvWriter
from camfleet_hub.core.urls import API_PREFIX
from camfleet_hub.datasets import crud
from camfleet_hub.datasets.models import Site
from camfleet_hub.fleet import events, pages, rollout, service
from camfleet_hub.fleet.metrics import CONTENT_TYPE, HubMetrics, MetricsMiddleware
from camfleet_hub.fleet.models import FleetCommand, FleetEvent
from camfleet_hub.fleet.schemas import (
    AgentConfigPublic,
    AgentConfigUpdate,
    CommandCreate,
    CommandPublic,
    EventPagePublic,
    EventPublic,
    FleetSiteSettingsPublic,
    FleetSiteSettingsUpdate,
    HourCountPublic,
    PinCreate,
    RolloutPromote,
    RolloutPublic,
    RolloutStage,
)

router = APIRouter(tags=["fleet"])
metrics_router = APIRouter(tags=["metrics"])

CSV_COLUMNS = [
    "ts",
    "site",
    "camera",
    "agent",
    "classifier",
    "model_version",
    "label",
    "probability",
    "anomaly",
    "anomaly_score",
    "motion",
    "latency_ms",
    "event_id",
    "frame_id",
    "predictions",
]
MAX_TIMELINE_HOURS = 24 * 31


def _event_public(row: FleetEvent, site: str) -> EventPublic:
    return EventPublic.model_validate(
        {**{c: getattr(row, c) for c in EventPublic.model_fields if c != "site"}, "site": site}
    )


def _filter(session: Session, user: CurrentUserDep, site: str | None, **fields: object) -> events.EventFilter:
    """Site ids the caller may read, narrowed to ``site`` when given (403 when the caller may not read it)."""
    if site is not None:
        found = crud.get_site(session, site)
        user.require(found.id, Role.VIEWER, found.name)
        ids: list[int] | None = [found.id]
    else:
        ids = visible_site_ids(user, session)
    return events.EventFilter(site_ids=ids, **fields)  # type: ignore[arg-type]


@router.get("/events", operation_id="list_events", response_model=EventPagePublic)
def list_events(
    session: SessionDep,
    user: CurrentUserDep,
    site: str | None = None,
    camera: str | None = None,
    classifier: str | None = None,
    label: str | None = None,
    anomaly: bool | None = None,
    since: Annotated[datetime | None, Query(description="ISO 8601 with a zone; inclusive")] = None,
    until: Annotated[datetime | None, Query(description="ISO 8601 with a zone; exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=events.MAX_PAGE)] = 100,
    cursor: str | None = None,
    format: Literal["json", "csv"] = "json",
) -> EventPagePublic | StreamingResponse:
    """Stored events, newest first, filtered; ``format=csv`` streams every matching event (no paging)."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise InvalidError(f"{name}={value.isoformat()!r} needs a time zone (e.g. 'Z' or '+02:00')")
    f = _filter(
        session,
        user,
        site,
        camera=camera,
        classifier=classifier,
        label=label,
        anomaly=anomaly,
        since=since,
        until=until,
    )
    if format == "csv":
        return StreamingResponse(
            _csv_rows(session, f),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="events.csv"'},
        )
    page = events.query_events(session, f, limit, cursor)
    return EventPagePublic(items=[_event_public(e, s) for e, s in page.rows], next_cursor=page.next_cursor)


def _csv_rows(session: Session, f: events.EventFilter) -> Iterator[str]:
    buf = io.StringIO()
    writer = CsvWriter(buf)
    writer.writerow(CSV_COLUMNS)
    for row, site in events.iter_events(session, f):
        writer.writerow(
            [
                row.ts.isoformat(),
                site,
                row.camera,
                row.agent,
                row.classifier,
                row.model_version,
                row.label,
                row.probability,
                row.anomaly,
                row.anomaly_score,
                "" if row.motion is None else row.motion,
                row.latency_ms,
                row.event_id,
                row.frame_id,
                json.dumps(row.predictions, separators=(",", ":")),
            ]
        )
        if buf.tell() > 64 * 1024:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


@router.get(
    "/sites/{site}/cameras/{camera}/event-counts",
    operation_id="camera_event_counts",
    response_model=list[HourCountPublic],
)
def camera_event_counts(
    site: str,
    camera: str,
    session: SessionDep,
    _user: SiteViewerDep,
    hours: Annotated[int, Query(ge=1, le=MAX_TIMELINE_HOURS)] = 24,
    classifier: str | None = None,
) -> list[HourCountPublic]:
    """Events per hour, classifier and label of one camera over the last ``hours`` (the timeline)."""
    found = crud.get_site(session, site)
    until = utcnow()
    rows = events.hourly_counts(session, found.id, camera, until - timedelta(hours=hours), until, classifier)
    return [HourCountPublic.model_validate(r, from_attributes=True) for r in rows]


# --------------------------------------------------------------------------- site options


@router.get("/sites/{site}/fleet-settings", operation_id="get_fleet_settings", response_model=FleetSiteSettingsPublic)
def get_fleet_settings(site: str, session: SessionDep, _user: SiteViewerDep) -> FleetSiteSettingsPublic:
    opts = service.site_options(session, crud.get_site(session, site))
    return FleetSiteSettingsPublic.model_validate(opts, from_attributes=True)


@router.patch(
    "/sites/{site}/fleet-settings", operation_id="update_fleet_settings", response_model=FleetSiteSettingsPublic
)
def update_fleet_settings(
    site: str, body: FleetSiteSettingsUpdate, services: ServicesDep, session: SessionDep, _user: SiteAdminDep
) -> FleetSiteSettingsPublic:
    found = crud.get_site(session, site)
    opts = service.update_site_options(session, found, body.event_retention_days, body.homeassistant)
    if body.homeassistant is not None and services.fleet is not None:
        services.fleet.homeassistant.switch(found.name, body.homeassistant)
    return FleetSiteSettingsPublic.model_validate(opts, from_attributes=True)


# --------------------------------------------------------------------------- agent settings


def _config_public(s: service.AgentSettings) -> AgentConfigPublic:
    return AgentConfigPublic(
        site=s.site,
        agent=s.agent,
        version=s.version,
        cameras=list(s.config.cameras),
        created_by=s.created_by,
        created_at=s.created_at,  # type: ignore[arg-type]
        applied_version=s.applied_version,
    )


@router.get("/sites/{site}/agents/{agent}/config", operation_id="get_agent_config", response_model=AgentConfigPublic)
def get_agent_config(site: str, agent: str, session: SessionDep, _user: SiteViewerDep) -> AgentConfigPublic:
    return _config_public(service.current_settings(session, crud.get_site(session, site), agent))


@router.put("/sites/{site}/agents/{agent}/config", operation_id="put_agent_config", response_model=AgentConfigPublic)
def put_agent_config(
    site: str, agent: str, body: AgentConfigUpdate, services: ServicesDep, session: SessionDep, user: SiteAdminDep
) -> AgentConfigPublic:
    """Store a new settings version and deliver it to the agent (hub-signed, retained on its config topic)."""
    found = crud.get_site(session, site)
    saved = service.save_settings(services, session, found, agent, body.cameras, user.name)
    return _config_public(saved)


@router.get(
    "/sites/{site}/agents/{agent}/config/history",
    operation_id="agent_config_history",
    response_model=list[AgentConfigPublic],
)
def agent_config_history(site: str, agent: str, session: SessionDep, _user: SiteViewerDep) -> list[AgentConfigPublic]:
    return [_config_public(s) for s in service.settings_history(session, crud.get_site(session, site), agent)]


# --------------------------------------------------------------------------- commands


def _command_public(row: FleetCommand, site: Site) -> CommandPublic:
    return CommandPublic.model_validate(
        {**{c: getattr(row, c) for c in CommandPublic.model_fields if c != "site"}, "site": site.name}
    )


@router.post(
    "/sites/{site}/agents/{agent}/commands",
    operation_id="send_agent_command",
    response_model=CommandPublic,
    status_code=status.HTTP_202_ACCEPTED,
)
def send_agent_command(
    site: str, agent: str, body: CommandCreate, services: ServicesDep, session: SessionDep, user: SiteAdminDep
) -> CommandPublic:
    """Send snapshot / reload / restart / config to the agent; the reply shows up on GET .../commands/{id}."""
    found = crud.get_site(session, site)
    row = service.send_command(services, session, found, agent, body.command, body.camera, user.name)
    return _command_public(row, found)


@router.get(
    "/sites/{site}/agents/{agent}/commands", operation_id="list_agent_commands", response_model=list[CommandPublic]
)
def list_agent_commands(site: str, agent: str, session: SessionDep, _user: SiteViewerDep) -> list[CommandPublic]:
    found = crud.get_site(session, site)
    return [_command_public(r, found) for r in service.list_commands(session, found, agent)]


@router.get("/sites/{site}/commands/{command_id}", operation_id="get_agent_command", response_model=CommandPublic)
def get_agent_command(site: str, command_id: str, session: SessionDep, _user: SiteViewerDep) -> CommandPublic:
    found = crud.get_site(session, site)
    return _command_public(service.get_command(session, found, command_id), found)


# --------------------------------------------------------------------------- rollout

ROLLOUT = "/sites/{site}/classifiers/{clf}/rollout"


def _rollout_public(session: Session, site: str, clf: str) -> RolloutPublic:
    found = crud.get_site(session, site)
    return RolloutPublic.model_validate(rollout.view(session, found, crud.get_classifier(session, site, clf)))


@router.get(ROLLOUT, operation_id="get_rollout", response_model=RolloutPublic)
def get_rollout(site: str, clf: str, session: SessionDep, _user: SiteViewerDep) -> RolloutPublic:
    """Production and staged versions, pins, and per agent the expected and applied version and any refusal."""
    return _rollout_public(session, site, clf)


@router.post(f"{ROLLOUT}/stage", operation_id="stage_rollout", response_model=RolloutPublic)
def stage_rollout(
    site: str, clf: str, body: RolloutStage, services: ServicesDep, session: SessionDep, user: SiteAdminDep
) -> RolloutPublic:
    classifier = crud.get_classifier(session, site, clf)
    rollout.stage(services, session, classifier, body.version, body.agents, body.percent, user.name)
    return _rollout_public(session, site, clf)


@router.post(f"{ROLLOUT}/promote", operation_id="promote_rollout", response_model=RolloutPublic)
def promote_rollout(
    site: str, clf: str, body: RolloutPromote, services: ServicesDep, session: SessionDep, _user: SiteAdminDep
) -> RolloutPublic:
    rollout.promote_all(services, session, crud.get_classifier(session, site, clf), body.version)
    return _rollout_public(session, site, clf)


@router.post(f"{ROLLOUT}/rollback", operation_id="rollback_rollout", response_model=RolloutPublic)
def rollback_rollout(
    site: str, clf: str, services: ServicesDep, session: SessionDep, _user: SiteAdminDep
) -> RolloutPublic:
    """One click: withdraw the staged version, or, with none staged, roll production back to the previous one."""
    rollout.rollback_all(services, session, crud.get_classifier(session, site, clf))
    return _rollout_public(session, site, clf)


@router.put(f"{ROLLOUT}/pins/{{agent}}", operation_id="pin_agent", response_model=RolloutPublic)
def pin_agent(
    site: str, clf: str, agent: str, body: PinCreate, services: ServicesDep, session: SessionDep, user: SiteAdminDep
) -> RolloutPublic:
    rollout.pin(services, session, crud.get_classifier(session, site, clf), agent, body.version, user.name)
    return _rollout_public(session, site, clf)


@router.delete(f"{ROLLOUT}/pins/{{agent}}", operation_id="unpin_agent", response_model=RolloutPublic)
def unpin_agent(
    site: str, clf: str, agent: str, services: ServicesDep, session: SessionDep, _user: SiteAdminDep
) -> RolloutPublic:
    rollout.unpin(services, session, crud.get_classifier(session, site, clf), agent)
    return _rollout_public(session, site, clf)


# --------------------------------------------------------------------------- metrics


def _scraper(request: Request, settings: SettingsDep, session: SessionDep) -> Principal:
    """A hub admin's token; a plain 401 (never the browser's redirect to /login) so a scraper sees what is wrong."""
    try:
        user = get_current_user(request, settings, session)
    except UnauthenticatedError as exc:
        raise HTTPException(401, detail=str(exc), headers={"WWW-Authenticate": "Bearer"}) from None
    user.require_admin()
    return user


@metrics_router.get("/metrics", operation_id="metrics", response_class=Response)
def metrics(request: Request, _user: Annotated[Principal, Depends(_scraper)]) -> Response:
    """Prometheus text format; scrape with a hub-admin token (see deploy/prometheus/prometheus.yml)."""
    hub_metrics: HubMetrics = request.app.state.metrics
    return Response(hub_metrics.render(), media_type=CONTENT_TYPE)


def install(app: FastAPI, services: object) -> None:
    """Wire the fleet domain's routes and the request metrics into the app (called once by ``create_app``)."""
    app.state.metrics = HubMetrics(services)  # type: ignore[arg-type]
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.include_router(router, prefix=API_PREFIX)
    app.include_router(metrics_router)
    app.include_router(pages.router)
