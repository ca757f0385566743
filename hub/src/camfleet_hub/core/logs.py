"""One log format for the hub's own lines and uvicorn's, plain text or JSON, with the request id in every line
logged while a request is handled (the access line included).

- ``setup_logging(settings)`` installs one handler on the root logger; uvicorn's loggers propagate to it (the
  hub starts uvicorn with ``log_config=None`` so uvicorn installs no handlers of its own); uvicorn's access log is
  on only with ``log.access_log``.
- ``RequestIdMiddleware`` (outermost ASGI layer) takes a well-formed ``X-Request-ID`` from the caller or makes one,
  keeps it in a context variable for the request's lines, and returns it in the response's ``X-Request-ID``.

Example (JSON; one object per line)::

    {"ts": "2026-11-30T23:40:01.120Z", "level": "INFO", "logger": "uvicorn.access", "request_id": "5f0c…",
     "message": "127.0.0.1:50312 - \\"GET /api/v1/healthz HTTP/1.1\\" 200"}
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

REQUEST_HEADER = "x-request-id"
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")  # what we echo back and log: no spaces, quotes or newlines
QUIET_LOGGERS = ("transitions", "amqtt", "alembic")
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("camfleet_request_id", default=None)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class LogSettings(BaseModel):
    """``[log]`` of the hub's config."""

    model_config = ConfigDict(extra="forbid")

    level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR")
    format: Literal["text", "json"] = "text"
    access_log: bool = Field(default=False, description="one line per HTTP request (uvicorn's access log)")


class RequestIdFilter(logging.Filter):
    """Puts the current request's id (or None outside requests) on every record as ``request_id``."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "request_id", None) is None:
            record.request_id = "-"
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ms), level, logger, request_id, message, and exc_info when present."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        out: dict[str, Any] = {
            "ts": ts,
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", None),
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(settings: LogSettings, level: str | None = None) -> None:
    """Configure the root logger once for the process; ``level`` (the CLI's --log-level) overrides the setting."""
    name = (level or settings.level).upper()
    numeric = getattr(logging, name, None)
    if not isinstance(numeric, int):
        raise ValueError(f"log.level must be DEBUG, INFO, WARNING or ERROR, got {name!r}")
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if settings.format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for logger_name in UVICORN_LOGGERS:  # one format: uvicorn's lines go through the root handler
        logger = logging.getLogger(logger_name)
        logger.handlers.clear()
        logger.propagate = True
    access = logging.getLogger("uvicorn.access")
    access.disabled = not settings.access_log
    if numeric > logging.DEBUG:
        for noisy in QUIET_LOGGERS:  # state-machine and plugin chatter at INFO
            logging.getLogger(noisy).setLevel(logging.WARNING)


class RequestIdMiddleware:
    """Outermost ASGI layer: a request id for every HTTP request, in its log lines and its response headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        given = ""
        for key, value in scope.get("headers") or []:
            if key.lower() == REQUEST_HEADER.encode():
                given = value.decode("latin-1")
                break
        rid = given if _REQUEST_ID_RE.match(given) else uuid.uuid4().hex
        token = request_id.set(rid)

        async def send_with_id(message: Message) -> None:
            if message.get("type") == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_HEADER.encode()]
                message["headers"] = [*headers, (REQUEST_HEADER.encode(), rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
