"""Issue 10 hole 5e: failed logins counted in SQL (shared by hub processes), per username across addresses,
per address across usernames, and X-Forwarded-For believed only from auth.trusted_proxies."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).parent))

from test_auth import API, PASSWORD, make_user  # noqa: E402

from camfleet_hub.api import create_app  # noqa: E402
from camfleet_hub.app import Hub  # noqa: E402
from camfleet_hub.auth import logins
from camfleet_hub.core.config import HubSettings
from camfleet_hub.core.errors import UnauthenticatedError


def _fail(api, username: str, address: str) -> None:  # type: ignore[no-untyped-def]
    with api.services.sessions() as s, pytest.raises(UnauthenticatedError):
        logins.login(s, api.services.settings.auth, username, "wrong guess 0", address)


def _login(api, username: str, password: str, address: str) -> None:  # type: ignore[no-untyped-def]
    with api.services.sessions() as s:
        logins.login(s, api.services.settings.auth, username, password, address)


def test_one_username_from_many_addresses_is_limited(api) -> None:
    settings = api.services.settings.auth
    for i in range(settings.login_attempts_per_user):
        _fail(api, "admin", f"10.0.{i // 250}.{i % 250 + 1}")  # never 5 from one address
    with pytest.raises(logins.LoginRateLimited, match="for username='admin'") as err:
        _login(api, "admin", "admin-password-1", "10.9.9.9")
    assert 0 < err.value.retry_after_s <= settings.login_window_s


def test_one_password_sprayed_over_many_usernames_is_limited(sqlite_api) -> None:
    api = sqlite_api
    make_user(api, "victim")
    for i in range(api.services.settings.auth.login_attempts_per_address):
        _fail(api, f"user{i}", "192.0.2.7")
    with pytest.raises(logins.LoginRateLimited, match="from this address"):
        _login(api, "victim", PASSWORD, "192.0.2.7")
    _login(api, "victim", PASSWORD, "192.0.2.8")  # another address is not blocked


def test_the_limit_is_shared_by_hub_processes(sqlite_api) -> None:
    """Two apps over one database (two hub processes behind a balancer) count the same failures."""
    api = sqlite_api
    first, second = TestClient(create_app(api.services)), TestClient(create_app(api.services))
    for _ in range(api.services.settings.auth.login_attempts):
        r = first.post(f"{API}/auth/login", json={"username": "admin", "password": "wrong guess 0"})
        assert r.status_code == 401
    r = second.post(f"{API}/auth/login", json={"username": "admin", "password": "admin-password-1"})
    assert r.status_code == 429 and "retry-after" in r.headers


def _served_hub(tmp_path: Path, port: int, trusted: list[str]) -> Hub:
    settings = HubSettings.model_validate(
        {
            "data_dir": str(tmp_path / "hub"),
            "http": {"host": "127.0.0.1", "port": port},
            "mqtt": {"embedded": False},
            "auth": {"admin_password": "admin-password-1", "trusted_proxies": trusted},
        }
    )
    return Hub(settings, http=True, ingest=False, broker=False, publisher=False, datasets=False)


def _attempts_until_refused(url: str, forwarded: list[str]) -> list[int]:
    codes = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for hop in forwarded:
            body = {"username": "admin", "password": "wrong guess 0"}
            codes.append(client.post(f"{API}/auth/login", json=body, headers={"X-Forwarded-For": hop}).status_code)
    return codes


def test_x_forwarded_for_from_loopback_is_not_believed(tmp_path: Path, free_port) -> None:  # type: ignore[no-untyped-def]
    """Served by uvicorn as `camfleet-hub serve` does: rotating X-Forwarded-For no longer escapes the limit."""
    hub = _served_hub(tmp_path, free_port(), [])
    hub.start()
    try:
        attempts = hub.settings.auth.login_attempts
        codes = _attempts_until_refused(hub.url, [f"203.0.113.{i}" for i in range(attempts + 1)])
        assert codes == [401] * attempts + [429]
    finally:
        hub.stop()


def test_x_forwarded_for_from_a_trusted_proxy_names_the_client(tmp_path: Path, free_port) -> None:  # type: ignore[no-untyped-def]
    hub = _served_hub(tmp_path, free_port(), ["127.0.0.1/32"])
    hub.start()
    try:
        attempts = hub.settings.auth.login_attempts
        # the left-most hop is whatever the client wrote; the proxy's own entry (right-most) is what counts
        spoofed = [f"198.51.100.{i}, 203.0.113.5" for i in range(attempts + 1)]
        assert _attempts_until_refused(hub.url, spoofed) == [401] * attempts + [429]
        assert _attempts_until_refused(hub.url, ["203.0.113.6"]) == [401]  # another client is counted apart
    finally:
        hub.stop()


def test_trusted_proxies_are_checked_at_start() -> None:
    with pytest.raises(ValueError, match="trusted_proxies"):
        HubSettings.model_validate({"auth": {"trusted_proxies": ["not-an-address"]}})


def test_failed_login_rows_stay_bounded(sqlite_api) -> None:
    """Rows older than the window are dropped on the next failure."""
    from datetime import timedelta

    from sqlalchemy import func, select

    from camfleet_hub.auth.models import LoginAttempt

    api = sqlite_api
    for i in range(3):
        _fail(api, f"old{i}", "192.0.2.50")
    window = api.services.settings.auth.login_window_s
    with api.services.sessions() as s:
        for row in s.scalars(select(LoginAttempt)):
            row.at = row.at - timedelta(seconds=window + 1)
        s.commit()
    _fail(api, "new", "192.0.2.51")
    with api.services.sessions() as s:
        assert s.scalar(select(func.count(LoginAttempt.id))) == 1
