"""The role matrix: every route the hub serves × every kind of caller × resources of site A and of site B, checked
against the expected statuses in ``role_matrix.yaml``. A route without a row fails, naming the route."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.routing import APIRoute
from starlette.routing import Mount, Route

from tests.security.world import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    API,
    ROLES,
    SESSION_USERS,
    World,
    victim_group,
    victim_mqtt_account,
    victim_token,
    victim_user,
)

MATRIX = yaml.safe_load((Path(__file__).parent / "role_matrix.yaml").read_text())
ROUTES: dict[str, dict[str, Any]] = MATRIX["routes"]
POLICIES: dict[str, dict[str, list[Any]]] = MATRIX["policies"]
PARAM = re.compile(r"\{(\w+)\}")


def served_routes(app: Any) -> set[str]:
    """``METHOD /path`` of every route the app serves (API and web UI, included routers walked; HEAD and the
    static mount left out)."""
    found: set[str] = set()

    def walk(routes: list[Any], prefix: str) -> None:
        for route in routes:
            if isinstance(route, Mount):
                continue
            if isinstance(route, APIRoute | Route):
                for method in sorted(route.methods or ()):
                    if method != "HEAD":
                        found.add(f"{method} {prefix}{route.path}")
            elif hasattr(route, "original_router"):  # FastAPI ≥ 0.16x keeps included routers as one entry
                walk(route.original_router.routes, prefix + route.include_context.prefix)
            else:
                raise AssertionError(f"unknown route kind {type(route).__name__}: extend served_routes")

    walk(app.routes, "")
    return found


def test_matrix_is_well_formed() -> None:
    assert MATRIX["roles"] == list(ROLES)
    for name, rows in POLICIES.items():
        for site, row in rows.items():
            assert site in ("a", "b") and len(row) == len(ROLES), f"policy {name}.{site}"
            assert all(str(c) in ("ok", "401", "403", "deny") for c in row), f"policy {name}.{site}: {row}"
    for key, spec in ROUTES.items():
        assert spec["policy"] in POLICIES, f"{key}: unknown policy {spec['policy']!r}"


def test_every_route_has_a_row(world: World) -> None:
    served = served_routes(world.app)
    documented = {f"{m.upper()} {p}" for p, ops in world.app.openapi()["paths"].items() for m in ops}
    assert documented <= served
    missing = sorted(served - set(ROUTES))
    assert not missing, "routes without a row in tests/security/role_matrix.yaml: " + ", ".join(missing)
    stale = sorted(set(ROUTES) - served)
    assert not stale, "rows in role_matrix.yaml for routes the hub no longer serves: " + ", ".join(stale)


def _fill(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        return PARAM.sub(lambda m: names.get(m.group(1), m.group(0)), value)
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    return value


def _image_bytes(world: World, site: str) -> bytes:
    r = world.admin.get(f"{API}/images/{world.sites[site].image_id}/content")
    assert r.status_code == 200
    return r.content


def _call(world: World, key: str, spec: dict[str, Any], site_key: str, role: str) -> Any:
    method, path = key.split(" ", 1)
    sw = world.sites[site_key]
    client = world.client(role)
    names = {"site": sw.site, "clf": sw.clf}
    victim = spec.get("victim")
    if victim == "user":
        names["user_id"] = str(victim_user(world, sw.site))
    elif victim == "token":
        names["token_id"] = str(victim_token(world, sw.site))
    elif victim == "mqtt_account":
        names["account_id"] = str(victim_mqtt_account(world, sw.site))
    elif victim == "group":
        names["group"] = victim_group(world, sw.site, sw.clf)
    elif victim == "login" and role in SESSION_USERS:
        client = world.login(SESSION_USERS[role][0])
    elif victim == "login" and role == "hub_admin_session":
        client = world.login(ADMIN_USER, ADMIN_PASSWORD)
    for name in PARAM.findall(path):
        if name not in names:
            names[name] = sw.param(spec.get("params", {}).get(name, name))
    kwargs: dict[str, Any] = {"follow_redirects": False}
    if "json" in spec:
        kwargs["json"] = _fill(spec["json"], names)
    if "form" in spec:
        kwargs["data"] = _fill(spec["form"], names)
    if spec.get("files") == "image":
        kwargs["files"] = [("files", ("x.jpg", _image_bytes(world, site_key), "image/jpeg"))]
    if "query" in spec:
        kwargs["params"] = _fill(spec["query"], names)
    return client.request(method, _fill(path, names), **kwargs)


def _verdict(r: Any, ui: bool) -> str:
    """401 (web pages: the redirect to ``/login?next=…``; 429 once too many logins failed), 403, 404 or "ok"."""
    to_login = r.status_code in (302, 303, 307) and r.headers.get("location", "").startswith("/login?")
    if r.status_code in (401, 429) or (ui and to_login):
        return "401"
    if r.status_code in (403, 404):
        return str(r.status_code)
    return "ok"


def _matches(expected: str, got: str) -> bool:
    """Cell "ok": let through (a 404 of a resource the caller may see, e.g. "nothing to undo", is still let through)."""
    if expected == "ok":
        return got in ("ok", "404")
    return got == expected or (expected == "deny" and got in ("403", "404"))


def _crashed(r: Any) -> bool:
    """A 5xx other than 503 (a deliberate "not configured here", e.g. no image search provider) is a crash."""
    return r.status_code >= 500 and r.status_code != 503


@pytest.mark.parametrize("key", list(ROUTES))
def test_route(world: World, key: str) -> None:
    """Each caller on each site gets the expected answer; never a 5xx."""
    spec = ROUTES[key]
    ui = not key.split(" ", 1)[1].startswith(API)
    failures = []
    for site_key, row in POLICIES[spec["policy"]].items():
        for role, expected in zip(ROLES, row, strict=True):
            r = _call(world, key, spec, site_key, role)
            got = _verdict(r, ui)
            if _crashed(r) or not _matches(str(expected), got):
                failures.append(f"{role} on site {site_key}: expected {expected}, got {r.status_code} {r.text[:160]!r}")
    assert not failures, f"{key} ({spec['policy']}):\n  " + "\n  ".join(failures)


def test_cells_counted() -> None:
    """The size of the matrix (routes × callers × sites), as recorded in docs/SECURITY.md."""
    cells = sum(len(POLICIES[s["policy"]]) * len(ROLES) for s in ROUTES.values())
    assert len(ROUTES) >= 100 and cells >= 8 * len(ROUTES)
