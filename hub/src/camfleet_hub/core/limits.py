"""Request bodies bounded before they are read or spooled: an ASGI middleware in front of every route.

Each request gets the body limit of its route (large for image, zip and bundle uploads, ``limits.json_max_bytes``
for everything else). A ``Content-Length`` over it is refused at once with 413, before a byte of the body is read;
a chunked body is counted as it streams and cut off at the limit, so no route ever spools more than its limit.
On the upload routes the caller's credentials are checked first, so an anonymous 200 MiB upload is answered 401
without reading it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from camfleet_hub.core.errors import UnauthenticatedError
from camfleet_hub.core.urls import API_PREFIX

if TYPE_CHECKING:
    from camfleet_hub.core.container import HubServices

FORM_OVERHEAD = 1024 * 1024  # multipart boundaries and part headers around the files


@dataclass(frozen=True)
class Rule:
    """The body limit of the routes matching ``method`` + ``path``, and the setting that sets it (for messages)."""

    method: str
    path: re.Pattern[str]
    limit: int
    setting: str


class BodyTooLarge(Exception):
    """Raised from ``receive`` when a streamed body passes its route's limit."""


def rules_for(services: HubServices) -> list[Rule]:
    """The upload routes and their limits, from the settings (everything else gets ``limits.json_max_bytes``)."""
    s = services.settings
    classify = s.classify.max_request_bytes * 4 // 3 + FORM_OVERHEAD  # base64 JSON is 4/3 of the bytes
    bundle = s.limits.bundle_max_bytes + FORM_OVERHEAD
    seg = r"[^/]+"
    return [
        Rule("POST", re.compile(rf"^{API_PREFIX}/classify$"), classify, "classify.max_request_bytes"),
        Rule(
            "POST",
            re.compile(rf"^{API_PREFIX}/sites/{seg}/classifiers/{seg}/import$"),
            s.imports.max_upload_bytes + FORM_OVERHEAD,
            "imports.max_upload_bytes",
        ),
        Rule("POST", re.compile(rf"^{API_PREFIX}/jobs/{seg}/result$"), bundle, "limits.bundle_max_bytes"),
        Rule("PUT", re.compile(rf"^{API_PREFIX}/models/default$"), bundle, "limits.bundle_max_bytes"),
        # The older tools' JSON bodies carry base64 images (compat/): one image, or a list like /classify's. Their
        # clients may add a slash (the router redirects it with the body), so both spellings get the same limit.
        Rule("POST", re.compile(r"^/api/save_data/?$"), classify, "classify.max_request_bytes"),
        Rule("POST", re.compile(r"^/api/predict/?$"), classify, "classify.max_request_bytes"),
    ]


# The older tools' clients read ``error_msg`` (compat/schemas.py): a string from save_data, a list from the others.
COMPAT_PATH = re.compile(r"^/api/(save_data|make_model|predict)/?$")


def refusal(path: str, detail: str) -> dict[str, object]:
    """The body of a refusal on ``path``: ``detail``, and on the older tools' routes their ``error_msg`` too."""
    compat = COMPAT_PATH.match(path)
    if compat is None:
        return {"detail": detail}
    return {"error_msg": detail if compat[1] == "save_data" else [detail], "detail": detail}


async def _answer(send: Send, scope: Scope, status: int, detail: str) -> None:
    body = json.dumps(refusal(scope["path"], detail)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    # The unread rest of the body is the server's to drop: uvicorn closes such a connection after the answer.
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimits:
    """ASGI middleware: refuse or cut off bodies over their route's limit; authenticate before large uploads."""

    def __init__(self, app: ASGIApp, services: HubServices) -> None:
        self.app = app
        self.services = services
        self.rules = rules_for(services)
        self.default = services.settings.limits.json_max_bytes

    def rule_for(self, method: str, path: str) -> Rule | None:
        return next((r for r in self.rules if r.method == method and r.path.match(path)), None)

    def _authenticate(self, scope: Scope) -> str | None:
        """Why the caller is refused (no valid token or session), or None; the route still checks its role."""
        from camfleet_hub.auth.deps import get_current_user

        with self.services.sessions() as session:
            try:
                get_current_user(Request(scope), self.services.settings, session)
            except UnauthenticatedError as exc:
                return exc.detail
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rule = self.rule_for(scope["method"], scope["path"])
        limit, setting = (rule.limit, rule.setting) if rule else (self.default, "limits.json_max_bytes")
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await _answer(send, scope, 400, f"Content-Length={declared[:40]!r}: not a byte count")
                return
            if int(declared) > limit:
                await _answer(
                    send, scope, 413, f"body of {int(declared)} bytes exceeds {setting} (limit {limit} bytes)"
                )
                return
        if rule is not None and self.services.settings.auth.enabled:
            refused = await run_in_threadpool(self._authenticate, scope)
            if refused is not None:
                await _answer(send, scope, 401, refused)
                return
        await self._bounded(scope, receive, send, limit, setting)

    async def _bounded(self, scope: Scope, receive: Receive, send: Send, limit: int, setting: str) -> None:
        """Run the app with a ``receive`` that counts body bytes and stops at ``limit``."""
        received = 0
        exceeded = False
        started = False
        detail = f"body exceeds {setting} (limit {limit} bytes)"

        async def counted() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise BodyTooLarge(detail)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge(detail)
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if exceeded:  # the app turned the cut-off into its own error (e.g. "error parsing the body"): say why
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _answer(send, scope, 413, detail)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except BodyTooLarge:
            if not started:
                started = True
                await _answer(send, scope, 413, detail)
