"""API documentation that works offline: Swagger UI from the installed ``swagger_ui_bundle`` files, and the
OpenAPI document completed with the Bearer scheme, the hub's real error shape and request examples.

``install(app)`` replaces FastAPI's CDN-backed ``/docs``: the page loads only same-origin scripts (no inline
script), so it runs under the hub's normal CSP.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import swagger_ui_bundle
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict
from starlette.routing import BaseRoute

from camfleet_hub.auth.deps import get_current_user

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"
SCHEME = "bearer"

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} - API</title>
<link rel="stylesheet" href="{assets}/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script src="{docs}/init.js"></script></body></html>
"""
# A file, not an inline script: the page then needs no 'unsafe-inline' or nonce.
INIT_JS = """window.ui = SwaggerUIBundle({
  url: "%s", dom_id: "#swagger-ui", deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis], layout: "BaseLayout"
});
"""


class ErrorPublic(BaseModel):
    """Every refusal of the hub: one sentence naming the field and the value that was wrong."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"detail": "name: already exists"}]})

    detail: str


ERRORS = {
    "401": "Not logged in: no valid session cookie or 'Authorization: Bearer <token>'",
    "403": "Logged in without the role this needs in the site (or a CSRF refusal for a browser session)",
    "404": "A site, classifier, group, image, model or job named in the path does not exist",
    "409": "Conflicts with the current state (a name that exists, a job already claimed, a changed image)",
    "413": "The body, an image or the pixels it would decode are over a configured bound",
    "422": "A field is missing or invalid; the detail names it and the value",
}
WRITES = ("post", "put", "patch", "delete")
# Routes that authenticate inside the handler (the older tools' paths parse their own bodies first; /metrics
# takes the hub-admin token), so no dependency shows it.
MANUAL_AUTH_PATHS = frozenset({"/api/save_data", "/api/make_model", "/api/predict", "/cv", "/metrics"})

# Request examples of the main JSON bodies, by operation id.
EXAMPLES: dict[str, dict[str, Any]] = {
    "login": {"username": "admin", "password": "a long passphrase"},
    "create_site": {"name": "shop"},
    "create_camera": {"name": "door"},
    "create_classifier": {"name": "clothes"},
    "create_group": {"name": "hat", "parent": None, "common": False},
    "update_group": {"name": "hats"},
    "update_image": {"group": "hat", "status": "GROUP", "expected_status": "NEW"},
    "bulk_images": {"ids": [12, 13], "action": "move", "group": "hat", "create_group": False},
    "create_job": {"mode": "quick", "auto_promote": True},
    "claim_job": {"worker": "gpu-box-1", "gpu": True},
    "heartbeat_job": {"worker": "gpu-box-1", "progress": 0.4, "stage": "training"},
    "fail_job": {"worker": "gpu-box-1", "reason": "CUDA out of memory"},
    "resolve_duplicates": {"keep": 12, "drop": [13, 14]},
    "set_duplicate_threshold": {"max_equal_distance": 0.05},
    "create_user": {"username": "ana", "password": "a long passphrase", "is_admin": False},
    "update_user": {"password": "a new long passphrase", "current_password": "a long passphrase"},
    "set_user_site_role": {"role": "labeller"},
    "create_token": {"name": "ci", "site": "shop", "role": "viewer"},
    "create_mqtt_account": {"name": "agent-1", "kind": "agent"},
    "classify": {"site": "shop", "classifier": "clothes", "images": ["/9j/4AAQSkZJRgABAQ..."]},
    "import_images": {"url": "https://example.org/dataset.zip"},
    "analyse_image": {"image_id": 12},
}


def _needs_user(dependant: Dependant) -> bool:
    return any(d.call is get_current_user or _needs_user(d) for d in dependant.dependencies)


def _api_routes(routes: Iterable[BaseRoute]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)  # FastAPI >= 0.16x keeps included routers lazily
        if included is not None:
            yield from _api_routes(included.routes)


def _authenticated_ops(app: FastAPI) -> set[str]:
    """Operation ids whose route depends on ``get_current_user`` (directly or through a role check)."""
    return {
        r.operation_id or r.unique_id
        for r in _api_routes(app.routes)
        if r.include_in_schema and (_needs_user(r.dependant) or r.path in MANUAL_AUTH_PATHS)
    }


def _error_response(code: str) -> dict[str, Any]:
    return {
        "description": ERRORS[code],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorPublic"}}},
    }


def complete(doc: dict[str, Any], authenticated: set[str]) -> dict[str, Any]:
    """Add the Bearer scheme, ``ErrorPublic`` responses and request examples to an OpenAPI document."""
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["ErrorPublic"] = ErrorPublic.model_json_schema()
    # FastAPI's {loc, msg, type} lists are never sent: errors.py turns them into one sentence.
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    components["securitySchemes"] = {
        SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token (POST /api/v1/tokens); a browser session cookie works too",
        }
    }
    for ops in doc.get("paths", {}).values():
        for method, op in ops.items():
            responses = op.setdefault("responses", {})
            codes = []
            if op.get("operationId") in authenticated:
                op["security"] = [{SCHEME: []}]
                codes += ["401", "403"]
            params = op.get("parameters", [])
            if any(p.get("in") == "path" for p in params):
                codes.append("404")
            if method in WRITES:
                codes.append("409")
            body = op.get("requestBody")
            if body is not None:
                codes.append("413")
            if body is not None or params:
                codes.append("422")
            for code in codes:
                responses[code] = _error_response(code)
            example = EXAMPLES.get(op.get("operationId", ""))
            json_body = (body or {}).get("content", {}).get("application/json")
            if example is not None and json_body is not None:
                json_body["example"] = example
    return doc


def install(app: FastAPI) -> None:
    """Serve ``/docs`` from local files and complete ``app.openapi()``; call with ``FastAPI(docs_url=None)``."""
    assets = StaticFiles(directory=swagger_ui_bundle.swagger_ui_path)
    app.mount(ASSETS_PATH, assets, name="swagger-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get(DOCS_PATH, include_in_schema=False)
    async def docs_page() -> HTMLResponse:
        return HTMLResponse(PAGE.format(title=app.title, assets=ASSETS_PATH, docs=DOCS_PATH))

    @app.get(f"{DOCS_PATH}/init.js", include_in_schema=False)
    async def docs_init() -> Response:
        return Response(INIT_JS % openapi_url, media_type="text/javascript")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
                servers=app.servers,
            )
            app.openapi_schema = complete(doc, _authenticated_ops(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
