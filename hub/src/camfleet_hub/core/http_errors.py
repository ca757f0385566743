"""Every error leaves the API as ``{"detail": "<what was wrong, naming the field and value>"}``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import DataError

from camfleet_hub.core.errors import InvalidError, ServiceError

MAX_SHOWN_VALUE = 80
SECRET_FIELDS = ("password", "secret", "token")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_SHOWN_VALUE else text[:MAX_SHOWN_VALUE] + "…"


def describe_errors(errors: list[Any]) -> str:
    """Pydantic/FastAPI error entries as one sentence per problem: ``field: message (got value)``."""
    parts = []
    for err in errors[:5]:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "form")]
        field = ".".join(loc) or "body"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        shown = ""
        secret = any(w in field.lower() for w in SECRET_FIELDS)  # never echo a submitted password or token
        echo = "input" in err and not secret and not isinstance(err["input"], dict | list)
        if echo and err.get("type") not in ("missing",):
            shown = f" (got {_shown(err['input'])})"
        parts.append(f"{field}: {msg}{shown}")
    return "; ".join(parts)


def invalid_from(exc: ValidationError) -> InvalidError:
    """A pydantic error raised while parsing a body by hand, as a 422 service error."""
    return InvalidError(describe_errors(exc.errors()))


async def _service_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    retry_after = getattr(exc, "retry_after", None)
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse(status_code=exc.status_code, content={"detail": exc.detail}, headers=headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(status_code=422, content={"detail": describe_errors(list(exc.errors()))})


OUT_OF_RANGE = "a number in the path or query is out of range (ids and counts are below 2^63)"
PG_NUMERIC_OUT_OF_RANGE = "22003"


async def _overflow(_request: Request, exc: Exception) -> JSONResponse:
    """SQLite cannot bind an int above 2^63 - 1 (OverflowError): the value came from the request, so 422."""
    return JSONResponse(status_code=422, content={"detail": OUT_OF_RANGE})


async def _data_error(_request: Request, exc: Exception) -> JSONResponse:
    """PostgreSQL's "integer out of range" for the same values; any other DataError stays a 500."""
    assert isinstance(exc, DataError)
    if getattr(exc.orig, "pgcode", None) == PG_NUMERIC_OUT_OF_RANGE:
        return JSONResponse(status_code=422, content={"detail": OUT_OF_RANGE})
    raise exc


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(OverflowError, _overflow)
    app.add_exception_handler(DataError, _data_error)
