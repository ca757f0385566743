"""The declarative base every domain's tables share, with deterministic constraint names and common sizes."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    MetaData,
)
from sqlalchemy.orm import DeclarativeBase

from camfleet_hub.core.db.types import UTCDateTime

NAME_LEN = 64


SHA256_LEN = 64


NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every hub table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


def one_of(column: str, values: type[StrEnum]) -> str:
    """SQL ``column IN (...)`` text for a CHECK constraint over an enum's values."""
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"
