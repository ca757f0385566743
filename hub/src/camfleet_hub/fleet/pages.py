"""Fleet web pages: ``/ui/fleet`` (every site, agent and camera, alerts, filters) and one camera's page (timeline,
latest frames, settings form with a region drawn on the snapshot, commands). Server-rendered; forms post back."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from camfleet_contract.agent_config import CameraConfig
from camfleet_hub.auth.deps import CurrentUserDep, SiteAdminDep, SiteViewerDep, visible_site_ids
from camfleet_hub.core.deps import ServicesDep, SessionDep
from camfleet_hub.core.errors import InvalidError, NotFoundError, ServiceError
from camfleet_hub.core.http_errors import describe_errors
from camfleet_hub.datasets import crud
from camfleet_hub.datasets.models import Classifier, Site
from camfleet_hub.datasets.retention import storage_by_site
from camfleet_hub.fleet import overview, rollout, service
from camfleet_hub.web.render import page_path, render

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


def _fleet_context(session: Session, user: CurrentUserDep, site: str | None, state: str | None) -> dict[str, Any]:
    """What the fleet page shows: the visible sites (filtered), their rollouts and storage use."""
    sites = overview.fleet(session, visible_site_ids(user, session), site or None, state if state in STATES else None)
    all_sites = [s.name for s in overview.fleet(session, visible_site_ids(user, session))] if site else None
    return {
        "sites": sites,
        "site_names": all_sites or [s.name for s in sites],
        "site": site or "",
        "state": state or "",
        "states": STATES,
        "refresh": REFRESH_SECONDS,
        "offline_min": overview.OFFLINE_ALERT_MIN,
        "rollouts": _rollouts(session, [s.name for s in sites]),
        "storage": storage_by_site(session),
    }


@router.get("/ui/fleet", response_class=HTMLResponse, name="fleet.fleet")
def fleet_page(
    request: Request, session: SessionDep, user: CurrentUserDep, site: str | None = None, state: str | None = None
) -> HTMLResponse:
    return render(request, "fleet/fleet.html", _fleet_context(session, user, site, state))


def _camera_context(session: Session, site: Site, camera: str) -> dict[str, Any]:
    points = overview.camera_events(session, site, camera)
    found = service.camera_settings(session, site, camera)
    agent, settings = found if found is not None else (None, None)
    if agent is None:
        row = next((a for s in overview.fleet(session, [site.id]) for a in s.agents if camera in a.cameras), None)
        agent = row.name if row is not None else None
    classifiers = list(
        session.scalars(select(Classifier.name).where(Classifier.site_id == site.id).order_by(Classifier.name))
    )
    bound = {b.classifier: b for b in settings.classifiers} if settings is not None else {}
    rows = []
    for name in classifiers:
        b = bound.get(name)
        rect = b.region.bounds() if b is not None and b.region is not None else None
        rows.append({"name": name, "on": b is not None, "region": ",".join(f"{v:.3f}" for v in rect) if rect else ""})
    applied = service.applied_config_version(session, site, agent) if agent else None
    current = None
    if agent:
        try:
            current = service.current_settings(session, site, agent).version
        except NotFoundError:
            current = None
    return {
        "site": site.name,
        "camera": camera,
        "agent": agent,
        "timeline": Markup(overview.timeline_svg(points)),  # noqa: S704 - built from escaped parts
        "events": points[:20],
        "frames": overview.latest_frames(session, site, camera),
        "settings": settings,
        "classifiers": rows,
        "settings_version": current,
        "applied_version": applied,
        "commands": service.list_commands(session, site, agent, 10) if agent else [],
    }


@router.get("/ui/fleet/sites/{site}/cameras/{camera}", response_class=HTMLResponse, name="fleet.camera")
def camera_page(request: Request, site: str, camera: str, session: SessionDep, _user: SiteViewerDep) -> HTMLResponse:
    return render(request, "fleet/camera.html", _camera_context(session, crud.get_site(session, site), camera))


def _region(text: str, classifier: str) -> dict[str, Any] | None:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        return None
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"region of {classifier!r}: {text!r} is not four numbers x0,y0,x1,y1") from None
    if len(values) != 4:
        raise ValueError(f"region of {classifier!r}: {text!r} is not four numbers x0,y0,x1,y1")
    return {"rect": values}


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
                region = _region(str(form.get(f"region_{name}", "")), name)
                bindings.append({"classifier": name, **({"region": region} if region else {})})
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
        service.save_settings(services, session, found, agent, [*cameras, cam], user.name)
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
    return render(request, "fleet/camera.html", {**_camera_context(session, site, camera), "error": detail}, code)


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
        context = _fleet_context(session, user, site, None) | {"error": exc.detail}
        return render(request, "fleet/fleet.html", context, exc.status_code)
    return RedirectResponse(page_path(request, "fleet.fleet") + f"?site={site}#rollout-{site}-{clf}", status_code=303)
