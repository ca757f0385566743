"""The hub's REST API and web page: ``create_app(services)`` wires one router per resource onto FastAPI."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from camfleet_hub import __version__
from camfleet_hub.auth import mqtt_router as mqtt_accounts
from camfleet_hub.auth import pages as ui_auth
from camfleet_hub.auth import router as auth
from camfleet_hub.compat import router as compat_router
from camfleet_hub.core import docs, health
from camfleet_hub.core.browser_guard import BrowserGuard
from camfleet_hub.core.http_errors import install_error_handlers
from camfleet_hub.core.limits import BodyLimits
from camfleet_hub.core.urls import API_PREFIX
from camfleet_hub.datasets import pages as ui_curation
from camfleet_hub.datasets.routes import (
    blobs,
    cameras,
    classifiers,
    curation,
    duplicates,
    frames,
    groups,
    images,
    sites,
)
from camfleet_hub.fleet import router as fleet_router
from camfleet_hub.imports import pages as ui_imports
from camfleet_hub.imports import router as imports
from camfleet_hub.ingest import router as ingest
from camfleet_hub.serving import analysis_page, logs_page, review_pages, try_page
from camfleet_hub.serving import router as classify
from camfleet_hub.training import registry_router as models
from camfleet_hub.training import router as jobs
from camfleet_hub.training.announce import announce_all
from camfleet_hub.web import pages as ui

if TYPE_CHECKING:
    from camfleet_hub.core.container import HubServices

log = logging.getLogger(__name__)

ROUTERS = (
    health,
    auth,
    sites,
    cameras,
    classifiers,
    groups,
    images,
    curation,
    imports,
    duplicates,
    jobs,
    blobs,
    models,
    classify,
    frames,
    ingest,
    mqtt_accounts,
)

DESCRIPTION = """REST API of the camfleet hub: sites, cameras, classifiers, groups and images (datasets),
imports, training jobs (claimed by trainers under a lease), the model registry with signed bundles, REST
classification, camera frames and ingest statistics. Errors are `{"detail": "..."}` naming the field and value.
"""


def create_app(services: HubServices) -> FastAPI:
    """The FastAPI app over ``services``; re-announces every site's models when it starts."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            await run_in_threadpool(announce_all, services)
        except Exception:  # a broker or database hiccup must not keep the API from starting
            log.exception("start-up model announcement failed; it is repeated on the next promotion")
        yield

    app = FastAPI(
        title="camfleet hub",
        version=__version__,
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url=None,  # docs.install serves /docs from local files
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.services = services
    fleet_router.install(app, services)  # events, settings, commands, /metrics; request metrics (inside the guards)
    install_error_handlers(app)
    app.add_middleware(BodyLimits, services=services)  # bodies bounded before any route reads them
    app.add_middleware(BrowserGuard, settings=services.settings)  # outermost: CSRF refusals, security headers
    ui_auth.install_auth_handlers(app)
    for module in ROUTERS:
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(ui.router)
    app.include_router(ui_auth.router)
    app.include_router(ui_curation.router)
    app.include_router(ui_imports.router)
    app.include_router(compat_router.router)  # the older tools' paths, outside /api/v1
    for serving_pages in (try_page, analysis_page, review_pages, logs_page):
        app.include_router(serving_pages.router)  # Try it, Analysis, Outliers and Errors bulk form, prediction Logs
    docs.install(app)
    app.mount("/static", StaticFiles(directory=str(resources.files("camfleet_hub.web") / "static")), name="static")
    return app


__all__ = ["create_app"]
