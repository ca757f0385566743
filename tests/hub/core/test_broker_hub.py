"""The hub on embedded defaults: an agent's MQTT credentials issued over REST, used, refused once revoked."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
from hubcore_helpers import frame_payload, wait_for
from sqlalchemy import func, select
from test_broker_access import NOT_AUTHORISED

from camfleet_hub.app import Hub
from camfleet_hub.core.config import HubSettings
from camfleet_hub.datasets.models import Frame
from tests.support.mqttprobe import ProbeClient

API = "/api/v1"
ADMIN_PASSWORD = "broker-test-admin-pw"


def _refused(port: int, user: str | None, password: str | None) -> bool:
    client = ProbeClient(port, user, password)
    client.close()
    return client.rc == NOT_AUTHORISED


def test_agent_credentials_from_rest_ingest_and_revoke(
    tmp_path: Path, free_port: Callable[[], int], jpegs: list[bytes]
) -> None:
    settings = HubSettings.model_validate(
        {
            "data_dir": str(tmp_path / "hub"),
            "http": {"port": free_port()},
            "mqtt": {"port": free_port()},
            "auth": {"admin_password": ADMIN_PASSWORD},
        }
    )
    with Hub(settings) as hub:
        services = hub.services
        assert services is not None and services.mqtt.connected  # the hub's own client has hub credentials
        port = settings.mqtt.port
        assert _refused(port, None, None)
        c = httpx.Client(base_url=hub.url, timeout=30)
        login = c.post(f"{API}/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        assert login.status_code == 200
        if "x-csrf-token" in login.headers:  # the session's CSRF token, for state-changing API calls
            c.headers["X-CSRF-Token"] = login.headers["x-csrf-token"]
        for reserved in ("hub", "observer"):
            r = c.post(f"{API}/sites", json={"name": reserved})
            assert r.status_code == 422 and "reserved" in r.text, r.text
        assert c.post(f"{API}/sites", json={"name": "shop"}).status_code == 201
        assert c.post(f"{API}/sites/shop/cameras", json={"name": "cam1"}).status_code == 201

        r = c.post(f"{API}/sites/shop/mqtt-accounts", json={"kind": "agent", "name": "pi-1"})
        assert r.status_code == 201, r.text
        issued = r.json()
        assert issued["username"] == "agent/shop/pi-1" and len(issued["password"]) >= 32
        again = c.post(f"{API}/sites/shop/mqtt-accounts", json={"kind": "agent", "name": "pi-1"})
        assert again.status_code == 409
        listed = c.get(f"{API}/sites/shop/mqtt-accounts").json()
        assert [a["username"] for a in listed] == ["agent/shop/pi-1"] and "password" not in listed[0]

        token = c.post(f"{API}/tokens", json={"name": "script", "site": "shop", "role": "admin"}).json()["token"]
        by_token = httpx.post(
            f"{hub.url}{API}/sites/shop/mqtt-accounts",
            json={"name": "pi-2"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert by_token.status_code == 403 and "session" in by_token.text

        agent = ProbeClient(port, issued["username"], issued["password"])
        try:
            assert agent.rc == 0
            agent.publish(services.topics.frame("shop", "cam1"), frame_payload(jpegs[0], "shop", "cam1", "pi-1"))
            wait_for(lambda: services.ingest_stats.snapshot().accepted == 1, "the agent's frame ingested")
        finally:
            agent.close()
        with services.sessions() as s:
            assert s.execute(select(func.count()).select_from(Frame)).scalar_one() == 1

        assert c.delete(f"{API}/sites/shop/mqtt-accounts/{issued['id']}").status_code == 204
        assert c.get(f"{API}/sites/shop/mqtt-accounts").json()[0]["revoked_at"] is not None
        assert _refused(port, issued["username"], issued["password"])


def test_cli_issues_and_revokes_mqtt_credentials(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from camfleet_hub.__main__ import main
    from camfleet_hub.auth.mqtt_accounts import AccountVerifier
    from camfleet_hub.core.db.session import make_engine, make_sessionmaker, migrate
    from camfleet_hub.datasets.models import Site

    config = tmp_path / "hub.toml"
    config.write_text(f'data_dir = "{tmp_path / "hub"}"\n')
    assert main(["mqtt", "create", "--config", str(config), "--site", "shop", "--agent", "pi-1"]) == 1  # no site
    engine = make_engine(f"sqlite:///{tmp_path / 'hub' / 'hub.db'}")
    try:
        migrate(engine)
        sessions = make_sessionmaker(engine)
        with sessions() as s:
            s.add(Site(name="shop"))
            s.commit()
        capsys.readouterr()
        assert main(["mqtt", "create", "--config", str(config), "--site", "shop", "--agent", "pi-1"]) == 0
        out = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
        principal = AccountVerifier(sessions)(out["username"], out["password"])
        assert principal is not None and (principal.site, principal.agent) == ("shop", "pi-1")
        assert main(["mqtt", "revoke", "--config", str(config), out["username"]]) == 0
        assert AccountVerifier(sessions)(out["username"], out["password"]) is None
    finally:
        engine.dispose()


def test_demo_secrets_are_owner_only(tmp_path: Path) -> None:
    import argparse
    import stat

    from camfleet_hub import demo

    d = tmp_path / "demo"
    d.mkdir(mode=0o755)
    (d / "admin-password").write_text("old\n")
    (d / "admin-password").chmod(0o644)  # left by an older demo
    args = argparse.Namespace(data_dir=d, port=8600, mqtt_port=11883, camera=tmp_path)
    paths = demo._write_configs(args)
    paths.update(demo._write_configs(args, {"trainer": "cf_every_site", "agent": "cf_viewer"}, ("u", "p")))
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for path in [d / "admin-password", *paths.values()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert 'username = "u"' in paths["agent"].read_text()
