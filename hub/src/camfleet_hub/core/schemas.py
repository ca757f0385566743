"""Base classes of every REST body: strict requests, public answers read from rows, a checked name, health."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from camfleet_contract.topics import validate_name  # a TopicError is a ValueError: pydantic reports it


class Request(BaseModel):
    """Base of request bodies: unknown fields are a client mistake, not something to ignore."""

    model_config = ConfigDict(extra="forbid")


class Public(BaseModel):
    """Base of response bodies."""

    model_config = ConfigDict(from_attributes=True)


class NameCreate(Request):
    """A body that only names the new thing."""

    name: str = Field(description="1-64 letters, digits, '_', '-' or '.', starting with a letter or digit")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return validate_name(v, "name")


class Health(Public):
    status: Literal["ok"] = "ok"
    hub_version: str
    contract_version: str
    protocol: str
    database: str = Field(description="the SQL dialect in use (sqlite, postgresql)")
    mqtt_connected: bool = Field(description="whether the hub's publisher is connected to the broker")
