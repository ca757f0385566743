"""MQTT credentials of a site's agents and observers: issued by a site admin's logged-in session, shown once."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Request, Response, status
from pydantic import Field, field_validator

from camfleet_contract.topics import validate_name
from camfleet_hub.auth import mqtt_accounts
from camfleet_hub.auth.deps import SiteAdminDep
from camfleet_hub.auth.models import MqttAccount, MqttAccountKind
from camfleet_hub.core.deps import SessionDep
from camfleet_hub.core.errors import ForbiddenError
from camfleet_hub.core.schemas import Public
from camfleet_hub.core.schemas import Request as RequestBody
from camfleet_hub.datasets import crud

router = APIRouter(tags=["mqtt"])


class MqttAccountCreate(RequestBody):
    """An agent (publishes its site's frames/events and its own status) or an observer (reads events/statuses)."""

    kind: Literal["agent", "observer"] = "agent"
    name: str = Field(description="the agent's name (as in its config), or what the observer is")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return validate_name(v, "name")


class MqttAccountPublic(Public):
    id: int
    username: str
    kind: str
    site: str
    name: str
    created_by: str
    created_at: datetime
    revoked_at: datetime | None


class MqttAccountIssued(MqttAccountPublic):
    password: str = Field(description="shown only in this response")


def _public(row: MqttAccount, site: str) -> MqttAccountPublic:
    return MqttAccountPublic(
        id=row.id,
        username=row.username,
        kind=row.kind,
        site=site,
        name=row.name,
        created_by=row.created_by,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def _session_only(request: Request) -> None:
    """Credentials are made by a person who logged in, never by a token (a token cannot mint credentials)."""
    if request.headers.get("authorization"):
        raise ForbiddenError("MQTT credentials are managed from a logged-in session, not with an API token")


@router.post(
    "/sites/{site}/mqtt-accounts",
    operation_id="create_mqtt_account",
    response_model=MqttAccountIssued,
    status_code=status.HTTP_201_CREATED,
)
def create_mqtt_account(
    site: str, body: MqttAccountCreate, request: Request, session: SessionDep, user: SiteAdminDep
) -> MqttAccountIssued:
    """Issue MQTT credentials bound to this site (and, for an agent, to its name); 409 while unrevoked ones exist."""
    _session_only(request)
    found = crud.get_site(session, site)
    issued = mqtt_accounts.create_account(session, MqttAccountKind(body.kind), found, body.name, user.name)
    return MqttAccountIssued(**_public(issued.account, found.name).model_dump(), password=issued.password)


@router.get("/sites/{site}/mqtt-accounts", operation_id="list_mqtt_accounts", response_model=list[MqttAccountPublic])
def list_mqtt_accounts(
    site: str, request: Request, session: SessionDep, _user: SiteAdminDep
) -> list[MqttAccountPublic]:
    """The site's MQTT accounts, revoked ones included (never a password)."""
    _session_only(request)
    found = crud.get_site(session, site)
    return [_public(row, found.name) for row in mqtt_accounts.list_accounts(session, found)]


@router.delete(
    "/sites/{site}/mqtt-accounts/{account_id}",
    operation_id="revoke_mqtt_account",
    status_code=status.HTTP_204_NO_CONTENT,
)
def revoke_mqtt_account(
    site: str, account_id: int, request: Request, session: SessionDep, _user: SiteAdminDep
) -> Response:
    """Revoke: the embedded broker refuses these credentials from the next connection on."""
    _session_only(request)
    found = crud.get_site(session, site)
    mqtt_accounts.revoke(session, mqtt_accounts.get_account(session, found, account_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
