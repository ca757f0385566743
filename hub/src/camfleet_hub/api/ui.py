"""The server-rendered web page (Jinja2, no JS framework) and its one form action, promote."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from camfleet_hub import __version__
from camfleet_hub.api.deps import CurrentUserDep, ServicesDep, SessionDep
from camfleet_hub.services import overview, registry

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(resources.files("camfleet_hub") / "templates"))

REFRESH_SECONDS = 10


@router.get("/", response_class=HTMLResponse)
def index(request: Request, session: SessionDep) -> HTMLResponse:
    context = {**overview.overview(session), "refresh": REFRESH_SECONDS, "version": __version__}
    return templates.TemplateResponse(request, "index.html", context)


@router.post("/ui/models/{model_id}/promote")
def promote(model_id: int, session: SessionDep, services: ServicesDep, _user: CurrentUserDep) -> RedirectResponse:
    registry.promote(services, session, registry.get_model(session, model_id))
    return RedirectResponse("/", status_code=303)
