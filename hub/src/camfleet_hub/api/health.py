"""Liveness and versions."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

import camfleet_contract
from camfleet_hub import __version__
from camfleet_hub.api.deps import ServicesDep, SessionDep
from camfleet_hub.schemas import Health

router = APIRouter(tags=["health"])


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
