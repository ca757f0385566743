"""Browser protections for every response: CSRF checks on state-changing requests and security headers.

CSRF: a request that changes state (any method but GET/HEAD/OPTIONS) and carries no ``Authorization`` header
is one a browser could send on its own, with its cookies. It is refused (403) when
- ``Sec-Fetch-Site`` says ``cross-site`` or ``same-site`` (another origin made the browser send it), or
- ``Origin`` names another host than this hub (its ``Host`` or ``http.public_url``), or
- it carries the session cookie without the session's CSRF token: the ``X-CSRF-Token`` header (the page's
  ``<meta name="csrf-token">`` for the JS, the login answer's header for API clients) or, for HTML forms,
  the ``csrf_token`` field.
SameSite=Lax alone is not enough: a same-site sibling (``evil.example.com`` next to the hub) and older
browsers still send the cookie. Bearer-token requests need none of this: no browser adds that header by itself.

Headers: a Content-Security-Policy (scripts only from the hub itself or with this response's nonce, no
framing), ``X-Frame-Options: DENY``, ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy``.
"""

from __future__ import annotations

import html
import json
import secrets
from urllib.parse import parse_qs, urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from camfleet_hub.auth.deps import SESSION_COOKIE
from camfleet_hub.auth.logins import csrf_matches, csrf_token
from camfleet_hub.core.config import HubSettings
from camfleet_hub.core.urls import API_PREFIX

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_FIELD = "csrf_token"
# A login form (username, password, next) is far below this; a bigger urlencoded body is not one of our forms.
MAX_FORM_BYTES = 64 * 1024
# Logging in needs no session yet; a stale cookie must not keep someone from logging in again.
NO_TOKEN_PATHS = frozenset({"/login", f"{API_PREFIX}/auth/login"})

CSP = (
    "default-src 'self'; script-src 'self' 'nonce-{nonce}'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob: https:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
STATIC_HEADERS = (
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)


def _cookie(headers: dict[str, str], name: str) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name and value:
            return value.strip('"')
    return None


class BrowserGuard:
    """Pure ASGI middleware (no body is read except a small urlencoded form that lacks the header)."""

    def __init__(self, app: ASGIApp, settings: HubSettings) -> None:
        self.app = app
        self.settings = settings
        public = settings.http.public_url
        self.public_host = urlsplit(public).netloc.lower() if public else ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        cookie = _cookie(headers, SESSION_COOKIE)
        nonce = secrets.token_urlsafe(16)
        state = scope.setdefault("state", {})
        state["csp_nonce"] = nonce
        state["csrf_token"] = csrf_token(cookie) if cookie else ""
        send = self._with_headers(send, scope["path"], nonce)
        if scope["method"] not in SAFE_METHODS and "authorization" not in headers:
            refusal = self._cross_origin(headers)
            if refusal is None and cookie and scope["path"] not in NO_TOKEN_PATHS:
                refusal, receive = await self._token(headers, cookie, receive)
            if refusal is not None:
                await self._refuse(scope, send, refusal)
                return
        await self.app(scope, receive, send)

    def _cross_origin(self, headers: dict[str, str]) -> str | None:
        site = headers.get("sec-fetch-site", "")
        if site in ("cross-site", "same-site"):
            return f"cross-origin request refused (Sec-Fetch-Site: {site})"
        origin = headers.get("origin")
        if origin is not None:
            host = urlsplit(origin).netloc.lower()
            if not host or host not in (headers.get("host", "").lower(), self.public_host):
                return f"cross-origin request refused (Origin: {origin[:100]!r} is not this hub)"
        return None

    async def _token(self, headers: dict[str, str], cookie: str, receive: Receive) -> tuple[str | None, Receive]:
        """Check the CSRF token in the header or, for an urlencoded form, in its ``csrf_token`` field."""
        sent = headers.get("x-csrf-token")
        if sent is None and headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            body, receive = await _read_small(receive)
            if body is None:
                return "form too large for a CSRF check", receive
            sent = (parse_qs(body.decode("latin-1")).get(CSRF_FIELD) or [""])[0]
        if not sent:
            return "missing CSRF token: send the X-CSRF-Token header (or the form's csrf_token field)", receive
        if not csrf_matches(cookie, sent):
            return "CSRF token does not match this session; reload the page", receive
        return None, receive

    async def _refuse(self, scope: Scope, send: Send, detail: str) -> None:
        if scope["path"].startswith(API_PREFIX):
            body, kind = json.dumps({"detail": detail}).encode(), b"application/json"
        else:
            text = f"<!doctype html><title>Refused</title><h1>403 Forbidden</h1><p>{html.escape(detail)}</p>"
            body, kind = text.encode(), b"text/html; charset=utf-8"
        start = {"type": "http.response.start", "status": 403, "headers": [(b"content-type", kind)]}
        await send(start)
        await send({"type": "http.response.body", "body": body})

    def _with_headers(self, send: Send, path: str, nonce: str) -> Send:
        csp = CSP.format(nonce=nonce).encode()  # /docs too: its Swagger UI files are served here

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw = list(message.get("headers", []))
                present = {k.lower() for k, _ in raw}
                extra = [(b"content-security-policy", csp), *STATIC_HEADERS]
                raw.extend((k, v) for k, v in extra if k not in present)
                message = {**message, "headers": raw}
            await send(message)

        return wrapped


async def _read_small(receive: Receive) -> tuple[bytes | None, Receive]:
    """Read a body up to MAX_FORM_BYTES and hand back a receive that replays it (None: larger than that)."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            return None, receive
        chunks.append(chunk)
        more = message.get("more_body", False)
    body = b"".join(chunks)
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay
