"""Liveness (``/healthz``: the process answers), readiness (``/readyz``: database, store and broker reachable), and
the older ``/health`` with versions. Probes stay apart so a database outage takes the hub out of the Service
(readiness) without the kubelet restarting it (liveness)."""

from __future__ import annotations

import logging
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text

import camfleet_contract
from camfleet_hub import __version__
from camfleet_hub.core.deps import ServicesDep, SessionDep
from camfleet_hub.core.schemas import Health

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)

# An object name no upload produces (not a sha256): a readiness probe reads its absence, never writes.
_PROBE_SHA = "0" * 64


class Alive(BaseModel):
    status: Literal["ok"] = "ok"
    hub_version: str
    contract_version: str


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    hub_version: str
    checks: dict[str, str] = Field(description="database, store, broker: 'ok' or what failed")


@router.get("/health", operation_id="health", response_model=Health)
def health(session: SessionDep, services: ServicesDep) -> Health:
    session.execute(text("SELECT 1"))
    return Health(
        hub_version=__version__,
        contract_version=camfleet_contract.__version__,
        protocol=camfleet_contract.PROTOCOL_VERSION,
        database=session.get_bind().dialect.name,
        mqtt_connected=services.mqtt.connected,
    )


@router.get("/healthz", operation_id="healthz", response_model=Alive)
def healthz() -> Alive:
    """The process serves requests; touches nothing else (a liveness probe)."""
    return Alive(hub_version=__version__, contract_version=camfleet_contract.__version__)


@router.get("/readyz", operation_id="readyz", response_model=Readiness, responses={503: {"model": Readiness}})
def readyz(services: ServicesDep) -> JSONResponse:
    """200 when the database, the object store and the broker answer; 503 naming each that does not."""
    checks: dict[str, str] = {}
    try:
        with services.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means "not reachable"; the message says which
        checks["database"] = f"unreachable: {type(exc).__name__}"
    try:
        services.store.exists(_PROBE_SHA)
        checks["store"] = "ok"
    except Exception as exc:
        checks["store"] = f"unreachable: {type(exc).__name__}"
    checks["broker"] = "ok" if services.mqtt.connected else "not connected"
    ready = all(v == "ok" for v in checks.values())
    if not ready:
        log.warning("not ready: %s", checks)
    body = Readiness(status="ready" if ready else "not ready", hub_version=__version__, checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
