"""Fleet web pages: ``/ui/fleet`` (every site, agent and camera, alerts, filters) and one camera's page (timeline,
latest frames, settings form with a region drawn on the snapshot, commands). Server-rendered; forms post back."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from camfleet_contract.agent_config import CameraConfig
from camfleet_hub.auth.deps import CurrentUserDep, SiteAdminDep, SiteViewerDep, visible_site_ids
from camfleet_hub.auth.principal import Principal
from camfleet_hub.core.deps import ServicesDep, SessionDep
from camfleet_hub.core.errors import InvalidError, NotFoundError, ServiceError
from camfleet_hub.core.http_errors import describe_errors
from camfleet_hub.datasets import camera_owners, crud
from camfleet_hub.datasets.models import Classifier, Site
from camfleet_hub.datasets.retention import SiteStorage, storage_by_site
from camfleet_hub.fleet import overview, rollout, service
from camfleet_hub.fleet.models import FleetCommand
from camfleet_hub.web.render import page_context, page_path, render

router = APIRouter(include_in_schema=False)

REFRESH_SECONDS = 15
STATES = ("online", "offline", "alert")


def camera_url(request: Request, site: str, camera: str) -> str:
    return page_path(request, "fleet.camera", site=site, camera=camera)


def _rollouts(session: Session, site_names: list[str]) -> dict[str, list[rollout.RolloutView]]:
    out: dict[str, list[rollout.RolloutView]] = {}
    for name in site_names:
        site = crud.get_site(session, name)
        clfs = session.scalars(select(Classifier).where(Classifier.site_id == site.id).order_by(Classifier.name))
        out[name] = [rollout.view(session, site, c) for c in clfs]
    return out


@dataclass(frozen=True, slots=True)
class FleetPage:
    """What the fleet page shows: the visible sites (filtered), their rollouts and storage use."""

    sites: list[overview.SiteRow]
    site_names: list[str]
    site: str
    state: str
    states: tuple[str, ...]
    refresh: int
    offline_min: float
    rollouts: dict[str, list[rollout.RolloutView]]
    storage: dict[str, SiteStorage]


def _fleet_context(session: Session, user: Principal, site: str | None, state: str | None) -> FleetPage:
    sites = overview.fleet(session, visible_site_ids(user, session), site or None, state if state in STATES else None)
    all_sites = [s.name for s in overview.fleet(session, visible_site_ids(user, session))] if site else None
    return FleetPage(
        sites=sites,
        site_names=all_sites or [s.name for s in sites],
        site=site or "",
        state=state or "",
        states=STATES,
        refresh=REFRESH_SECONDS,
        offline_min=overview.OFFLINE_ALERT_MIN,
        rollouts=_rollouts(session, [s.name for s in sites]),
        storage=storage_by_site(session),
    )


@router.get("/ui/fleet", response_class=HTMLResponse, name="fleet.fleet")
def fleet_page(
    request: Request, session: SessionDep, user: CurrentUserDep, site: str | None = None, state: str | None = None
) -> HTMLResponse:
    return render(request, "fleet/fleet.html", page_context(_fleet_context(session, user, site, state)))


@dataclass(frozen=True, slots=True)
class CameraClassifier:
    """A row of the camera form: the site's classifier, whether it runs on this camera, its region as text."""

    name: str
    on: bool
    region: str


@dataclass(frozen=True, slots=True)
class CameraPage:
    site: str
    camera: str
    agent: str | None
    owner: str | None  # the agent whose frames and events alone are taken for the camera (None: any of the site's)
    timeline: Markup
    events: list[overview.TimelinePoint]
    frames: list[str]
    settings: CameraConfig | None
    classifiers: list[CameraClassifier]
    settings_version: int | None
    applied_version: int | None
    commands: list[FleetCommand]


def _classifier_rows(session: Session, site: Site, settings: CameraConfig | None) -> list[CameraClassifier]:
    query = select(Classifier.name).where(Classifier.site_id == site.id).order_by(Classifier.name)
    bound = {b.classifier: b for b in settings.classifiers} if settings is not None else {}
    rows = []
    for name in session.scalars(query):
        b = bound.get(name)
        rect = b.region.bounds() if b is not None and b.region is not None else None
        rows.append(CameraClassifier(name, b is not None, ",".join(f"{v:.3f}" for v in rect) if rect else ""))
    return rows


def _camera_context(session: Session, site: Site, camera: str) -> CameraPage:
    points = overview.camera_events(session, site, camera)
    found = service.camera_settings(session, site, camera)
    agent, settings = found if found is not None else (None, None)
    if agent is None:
        row = next((a for s in overview.fleet(session, [site.id]) for a in s.agents if camera in a.cameras), None)
        agent = row.name if row is not None else None
    applied = service.applied_config_version(session, site, agent) if agent else None
    current = None
    if agent:
        try:
            current = service.current_settings(session, site, agent).version
        except NotFoundError:
            current = None
    return CameraPage(
        site=site.name,
        camera=camera,
        agent=agent,
        owner=camera_owners.owners(session, [(site.name, camera)]).get((site.name, camera)),
        timeline=Markup(overview.timeline_svg(points)),  # noqa: S704 - built from escaped parts
        events=points[:20],
        frames=overview.latest_frames(session, site, camera),
        settings=settings,
        classifiers=_classifier_rows(session, site, settings),
        settings_version=current,
        applied_version=applied,
        commands=service.list_commands(session, site, agent, 10) if agent else [],
    )


@router.get("/ui/fleet/sites/{site}/cameras/{camera}", response_class=HTMLResponse, name="fleet.camera")
def camera_page(request: Request, site: str, camera: str, session: SessionDep, _user: SiteViewerDep) -> HTMLResponse:
    page = _camera_context(session, crud.get_site(session, site), camera)
    return render(request, "fleet/camera.html", page_context(page))


def _rect(text: str, classifier: str) -> list[float] | None:
    """The region field's "x0,y0,x1,y1" as four numbers (checked further by ``Region``); None when empty."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        return None
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"region of {classifier!r}: {text!r} is not four numbers x0,y0,x1,y1") from None
    if len(values) != 4:
        raise ValueError(f"region of {classifier!r}: {text!r} is not four numbers x0,y0,x1,y1")
    return values


@router.post("/ui/fleet/sites/{site}/cameras/{camera}/settings", response_model=None, name="fleet.camera_settings")
async def save_camera_settings(
    request: Request, site: str, camera: str, services: ServicesDep, session: SessionDep, user: SiteAdminDep
) -> Response:
    """The camera page's settings form: this camera's entry in its agent's settings, saved as a new version."""
    form = await request.form()
    found = crud.get_site(session, site)
    agent = str(form.get("agent", "")).strip()
    try:
        bindings = []
        for name in session.scalars(select(Classifier.name).where(Classifier.site_id == found.id)):
            if form.get(f"clf_{name}"):
                rect = _rect(str(form.get(f"region_{name}", "")), name)
                bindings.append({"classifier": name, **({"region": {"rect": rect}} if rect else {})})
        cam = CameraConfig.model_validate(
            {
                "name": camera,
                "source": str(form.get("source", "")).strip(),
                "fps": str(form.get("fps", "2") or "2"),
                "classifiers": bindings,
                "gate": {
                    "enabled": bool(form.get("gate_enabled")),
                    "sensitivity": str(form.get("sensitivity", "0.5") or "0.5"),
                    "min_area": str(form.get("min_area", "0.002") or "0.002"),
                },
                "uploads": [],
            }
        )
        if not agent:
            raise InvalidError("agent: name the agent that runs this camera")
        try:
            cameras = [c for c in service.current_settings(session, found, agent).config.cameras if c.name != camera]
            old = next(
                (c for c in service.current_settings(session, found, agent).config.cameras if c.name == camera), None
            )
        except NotFoundError:
            cameras, old = [], None
        if old is not None:
            cam = cam.model_copy(
                update={"uploads": old.uploads, "gate": cam.gate.model_copy(update={"mask": old.gate.mask})}
            )
        take_over = bool(form.get("take_over"))
        service.save_settings(services, session, found, agent, [*cameras, cam], user.name, take_over)
    except ValidationError as exc:
        return _settings_error(request, session, found, camera, describe_errors(exc.errors()), 422)
    except ValueError as exc:
        return _settings_error(request, session, found, camera, str(exc), 422)
    except ServiceError as exc:
        return _settings_error(request, session, found, camera, exc.detail, exc.status_code)
    return RedirectResponse(camera_url(request, site, camera), status_code=303)


def _settings_error(
    request: Request, session: Session, site: Site, camera: str, detail: str, code: int
) -> HTMLResponse:
    return render(
        request, "fleet/camera.html", page_context(_camera_context(session, site, camera), error=detail), code
    )


@router.post("/ui/fleet/sites/{site}/cameras/{camera}/commands", response_model=None, name="fleet.camera_command")
async def camera_command(
    request: Request, site: str, camera: str, services: ServicesDep, session: SessionDep, user: SiteAdminDep
) -> Response:
    form = await request.form()
    found = crud.get_site(session, site)
    command, agent = str(form.get("command", "")), str(form.get("agent", ""))
    if command not in ("snapshot", "reload", "restart"):
        return _settings_error(
            request, session, found, camera, f"command={command!r}: use snapshot, reload or restart", 422
        )
    try:
        service.send_command(
            services, session, found, agent, command, None if command == "reload" else camera, user.name
        )
    except ServiceError as exc:
        return _settings_error(request, session, found, camera, exc.detail, exc.status_code)
    return RedirectResponse(camera_url(request, site, camera), status_code=303)


@router.post("/ui/fleet/sites/{site}/classifiers/{clf}/rollout", response_model=None, name="fleet.rollout")
async def rollout_action(
    request: Request, site: str, clf: str, services: ServicesDep, session: SessionDep, user: SiteAdminDep
) -> Response:
    """The fleet page's rollout forms: stage (agents, percent), promote to all, roll back."""
    form = await request.form()
    action = str(form.get("action", ""))
    classifier = crud.get_classifier(session, site, clf)
    try:
        if action == "stage":
            agents = [a.strip() for a in str(form.get("agents", "")).split(",") if a.strip()]
            version, percent = str(form.get("version", "")).strip(), str(form.get("percent", "") or "0").strip()
            if not version.isdigit() or not percent.isdigit() or int(percent) > 100:
                raise InvalidError(f"version={version!r} percent={percent!r}: whole numbers, percent 0-100")
            rollout.stage(services, session, classifier, int(version), agents, int(percent), user.name)
        elif action == "promote":
            rollout.promote_all(services, session, classifier, None)
        elif action == "rollback":
            rollout.rollback_all(services, session, classifier)
        else:
            raise InvalidError(f"action={action!r}: use stage, promote or rollback")
    except ServiceError as exc:
        context = page_context(_fleet_context(session, user, site, None), error=exc.detail)
        return render(request, "fleet/fleet.html", context, exc.status_code)
    return RedirectResponse(page_path(request, "fleet.fleet") + f"?site={site}#rollout-{site}-{clf}", status_code=303)
