"""``camfleet-hub mqtt export-mosquitto`` on a real Mosquitto: each agent is bound to its own site and agent name.

The hub issues the accounts, the CLI writes password_file and acl_file, and a private Mosquitto runs with them.
Denied publishes are dropped silently by the broker, so every check publishes the forbidden messages first and an
allowed sentinel after them on the same connection: once the sentinel arrives, the forbidden ones would have too.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from camfleet_hub.__main__ import main
from camfleet_hub.auth import mqtt_accounts
from camfleet_hub.auth.models import MqttAccountKind
from camfleet_hub.auth.mqtt_accounts import verify_secret
from camfleet_hub.core.comms.acl import MqttPrincipal, MqttRole, may_publish, may_subscribe
from camfleet_hub.core.comms.mosquitto_export import (
    ACL_FILE,
    PASSWORD_FILE,
    Exporter,
    acl_text,
    hub_user,
    password_text,
)
from camfleet_hub.core.db.session import make_engine, make_sessionmaker, migrate
from camfleet_hub.datasets import camera_owners, crud
from camfleet_hub.datasets.models import Camera
from tests.support.mqttprobe import ProbeClient

ROOT = Path(__file__).resolve().parents[2]
R = "camfleet/v1"
HUB_PASSWORD = "hub-export-pw"


@dataclass
class Fleet:
    config: Path
    out: Path
    broker: object  # conftest's MosquittoBroker
    port: int
    passwords: dict[str, str]  # username -> password
    clients: list[ProbeClient]

    def connect(self, user: str, password: str | None = None) -> ProbeClient:
        client = ProbeClient(self.port, user, password if password is not None else self.passwords[user])
        self.clients.append(client)
        return client

    def export(self) -> None:
        assert main(["mqtt", "export-mosquitto", "--config", str(self.config), "--out", str(self.out)]) == 0


def _config(tmp_path: Path, password: str | None) -> Path:
    config = tmp_path / "hub.toml"
    lines = [f'data_dir = "{tmp_path / "hub"}"', "[mqtt]", "embedded = false", 'username = "hub"']
    if password is not None:
        lines.append(f'password = "{password}"')
    config.write_text("\n".join(lines) + "\n")
    return config


@pytest.fixture
def fleet(mosquitto_factory, tmp_path: Path) -> Iterator[Fleet]:  # type: ignore[no-untyped-def]
    """Sites shop and plaza; agents a1, a2 of shop and b1 of plaza; observer ha of shop; exported and served."""
    config = _config(tmp_path, HUB_PASSWORD)
    (tmp_path / "hub").mkdir()
    engine = make_engine(f"sqlite:///{tmp_path / 'hub' / 'hub.db'}")
    passwords = {"hub": HUB_PASSWORD}
    try:
        migrate(engine)
        with make_sessionmaker(engine)() as session:
            shop, plaza = crud.create_site(session, "shop"), crud.create_site(session, "plaza")
            for kind, site, name in [
                (MqttAccountKind.AGENT, shop, "a1"),
                (MqttAccountKind.AGENT, shop, "a2"),
                (MqttAccountKind.AGENT, plaza, "b1"),
                (MqttAccountKind.OBSERVER, shop, "ha"),
            ]:
                issued = mqtt_accounts.create_account(session, kind, site, name, "test")
                passwords[issued.account.username] = issued.password
    finally:
        engine.dispose()
    out = tmp_path / "mosquitto"
    fleet = Fleet(config, out, None, 0, passwords, [])
    fleet.export()
    broker = mosquitto_factory(
        extra_config=["allow_anonymous false", f"password_file {out / PASSWORD_FILE}", f"acl_file {out / ACL_FILE}"]
    )
    fleet.broker, fleet.port = broker, broker.port
    try:
        yield fleet
    finally:
        for client in fleet.clients:
            client.close()


A1, A2, B1, HA = "agent/shop/a1", "agent/shop/a2", "agent/plaza/b1", "observer/shop/ha"


def test_every_user_connects_and_strangers_do_not(fleet: Fleet) -> None:
    for user in (A1, A2, B1, HA, "hub"):
        assert fleet.connect(user).rc == 0, user
    assert fleet.connect(A1, fleet.passwords[A2]).rc != 0  # a2's password is not a1's
    assert fleet.connect("shop", fleet.passwords[A1]).rc != 0  # the old site-name login is gone
    assert ProbeClient(fleet.port, None, None).rc != 0


def test_agent_publishes_its_own_status_and_frames_only(fleet: Fleet) -> None:
    hub, a1 = fleet.connect("hub"), fleet.connect(A1)
    hub.subscribe(f"{R}/+/+/frame", f"{R}/+/+/event", f"{R}/+/agents/+/status", f"{R}/+/agents/+/reply")
    a1.publish(f"{R}/shop/agents/a2/status", b"forged a2 status", retain=True)
    a1.publish(f"{R}/shop/agents/a2/reply", b"forged a2 reply")
    a1.publish(f"{R}/plaza/door/frame", b"forged plaza frame")
    a1.publish(f"{R}/shop/models/frame", b"forged via the camera wildcard")
    a1.publish(f"{R}/shop/agents/frame", b"forged camera 'agents'")
    a1.publish(f"{R}/shop/door/frame", b"frame")
    a1.publish(f"{R}/shop/door/event", b"event")
    a1.publish(f"{R}/shop/agents/a1/reply", b"reply")
    a1.publish(f"{R}/shop/agents/a1/status", b"status")
    assert hub.payloads_until(b"status") == [b"frame", b"event", b"reply", b"status"]


def test_agent_reads_neither_another_agents_commands_nor_everything(fleet: Fleet) -> None:
    hub, a1, a2 = fleet.connect("hub"), fleet.connect(A1), fleet.connect(A2)
    a2.publish(f"{R}/shop/agents/a2/status", b"a2 status", retain=True)
    a1.subscribe("#")
    a1.subscribe(f"{R}/shop/agents/a2/cmd", f"{R}/shop/agents/a2/config", f"{R}/shop/agents/+/cmd")
    a1.subscribe(f"{R}/shop/models/+", f"{R}/shop/agents/a1/cmd", f"{R}/shop/agents/a1/config")
    hub.publish(f"{R}/shop/agents/a2/cmd", b"a2 cmd")
    hub.publish(f"{R}/shop/agents/a2/config", b"a2 config")
    hub.publish(f"{R}/plaza/models/door", b"plaza model")
    a2.publish(f"{R}/shop/door/frame", b"a2 frame")
    hub.publish(f"{R}/shop/models/door", b"model")
    hub.publish(f"{R}/shop/agents/a1/config", b"config")
    hub.publish(f"{R}/shop/agents/a1/cmd", b"cmd")
    # a1 holds overlapping subscriptions, so Mosquitto may deliver its own messages more than once
    assert set(a1.payloads_until(b"cmd")) == {b"model", b"config", b"cmd"}


def test_agent_cannot_announce_models_or_send_commands(fleet: Fleet) -> None:
    hub, a1, a2 = fleet.connect("hub"), fleet.connect(A1), fleet.connect(A2)
    a2.subscribe(f"{R}/shop/models/+", f"{R}/shop/agents/a2/cmd", f"{R}/shop/agents/a2/config")
    a1.publish(f"{R}/shop/models/door", b"forged model", retain=True)
    a1.publish(f"{R}/shop/agents/a2/cmd", b"forged command")
    a1.publish(f"{R}/shop/agents/a2/config", b"forged settings")
    hub.publish(f"{R}/shop/agents/a2/cmd", b"sentinel")
    assert a2.payloads_until(b"sentinel") == [b"sentinel"]
    late = fleet.connect(A2)  # nothing forged was kept as the retained announcement
    late.subscribe(f"{R}/shop/models/+", f"{R}/shop/agents/a2/cmd")
    hub.publish(f"{R}/shop/agents/a2/cmd", b"second sentinel")
    assert late.payloads_until(b"second sentinel") == [b"second sentinel"]


def test_observer_reads_its_sites_events_and_statuses_and_never_publishes(fleet: Fleet) -> None:
    hub, a1, b1, ha = fleet.connect("hub"), fleet.connect(A1), fleet.connect(B1), fleet.connect(HA)
    ha.subscribe("#", f"{R}/+/+/event", f"{R}/shop/+/event", f"{R}/shop/agents/+/status")
    hub.subscribe(f"{R}/+/+/event")
    b1.publish(f"{R}/plaza/door/event", b"plaza event")
    a1.publish(f"{R}/shop/door/frame", b"frame")
    ha.publish(f"{R}/shop/door/event", b"forged event")
    a1.publish(f"{R}/shop/door/event", b"event")
    a1.publish(f"{R}/shop/agents/a1/status", b"status")
    assert set(ha.payloads_until(b"status")) == {b"event", b"status"}
    assert hub.payloads_until(b"event") == [b"plaza event", b"event"]


def test_revoked_credentials_are_refused_after_export_and_sighup(fleet: Fleet) -> None:
    assert fleet.connect(A2).rc == 0
    assert main(["mqtt", "revoke", "--config", str(fleet.config), A2]) == 0
    fleet.export()
    assert A2 not in (fleet.out / PASSWORD_FILE).read_text()
    proc = fleet.broker.proc  # type: ignore[attr-defined]
    os.kill(proc.pid, signal.SIGHUP)
    _wait_until_refused(fleet, A2)
    assert fleet.connect(A1).rc == 0 and fleet.connect("hub").rc == 0 and fleet.connect(HA).rc == 0


def test_cameras_owned_by_other_agents_are_denied_after_export_and_sighup(fleet: Fleet) -> None:
    """The export writes deny lines for the cameras other agents of the site own; Mosquitto enforces them."""
    engine = make_engine(f"sqlite:///{fleet.config.parent / 'hub' / 'hub.db'}")
    try:
        with make_sessionmaker(engine)() as session:
            shop = crud.get_site(session, "shop")
            for name, owner in (("door", "a2"), ("gate", "a1"), ("yard", None)):
                session.add(Camera(site_id=shop.id, name=name, agent=owner))
            session.commit()
    finally:
        engine.dispose()
    fleet.export()
    blocks = (fleet.out / ACL_FILE).read_text().split("\n\n")
    a1_block = next(b for b in blocks if b.startswith(f"user {A1}\n"))
    assert {f"topic deny {R}/shop/door/event", f"topic deny {R}/shop/door/frame"} <= set(a1_block.splitlines())
    assert "gate" not in a1_block and "yard" not in a1_block
    a2_block = next(b for b in blocks if b.startswith(f"user {A2}\n"))
    assert f"topic deny {R}/shop/gate/frame" in a2_block and "door" not in a2_block
    b1_block = next(b for b in blocks if b.startswith(f"user {B1}\n"))
    assert "deny camfleet/v1/shop" not in b1_block
    os.kill(fleet.broker.proc.pid, signal.SIGHUP)  # type: ignore[attr-defined]
    _wait_until_a1_is_denied_door(fleet)


def _wait_until_a1_is_denied_door(fleet: Fleet) -> None:
    """Poll (bounded: the reload is asynchronous) until a1's publishes on a2's camera door stop arriving while its
    own gate and nobody's yard still do; then a2 publishes on door."""
    hub = fleet.connect("hub")
    hub.subscribe(f"{R}/+/+/frame", f"{R}/+/+/event")
    for attempt in range(100):
        a1 = fleet.connect(A1)
        a1.publish(f"{R}/shop/door/frame", b"a1 on a2's door")
        a1.publish(f"{R}/shop/door/event", b"a1 event on a2's door")
        a1.publish(f"{R}/shop/gate/frame", b"a1 on its gate")
        a1.publish(f"{R}/shop/yard/event", f"a1 on nobody's yard {attempt}".encode())
        got = hub.payloads_until(f"a1 on nobody's yard {attempt}".encode())
        if got == [b"a1 on its gate", f"a1 on nobody's yard {attempt}".encode()]:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"a1 still publishes on a2's camera after the export and the reload: {got}")
    a2 = fleet.connect(A2)
    a2.publish(f"{R}/shop/door/event", b"a2 on its door")
    assert hub.payloads_until(b"a2 on its door") == [b"a2 on its door"]


def _wait_until_refused(fleet: Fleet, user: str) -> None:
    for _ in range(100):  # the reload is asynchronous: poll, bounded
        if fleet.connect(user).rc != 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"{user} still connects after its credentials were revoked and Mosquitto reloaded")


def test_watch_keeps_mosquitto_current_with_claims_and_revocations(fleet: Fleet, tmp_path: Path) -> None:
    """``export-mosquitto --watch --pid-file``: a camera claimed in the hub's database and a revoked account reach
    Mosquitto by themselves (export + SIGHUP), and an unchanged export rewrites nothing."""
    pid_file = tmp_path / "mosquitto.pid"
    pid_file.write_text(f"{fleet.broker.proc.pid}\n")  # type: ignore[attr-defined]
    inode = (fleet.out / ACL_FILE).stat().st_ino
    argv = ["mqtt", "export-mosquitto", "--config", str(fleet.config), "--out", str(fleet.out)]
    log = (tmp_path / "watch.log").open("w")
    watcher = subprocess.Popen(
        [sys.executable, "-m", "camfleet_hub", *argv, "--watch", "--interval", "0.2", "--pid-file", str(pid_file)],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        first = watcher.stdout.readline()
        assert "the files are current" in first, first  # the hub's hash was kept: nothing to rewrite
        assert "watching" in watcher.stdout.readline()
        assert (fleet.out / ACL_FILE).stat().st_ino == inode
        engine = make_engine(f"sqlite:///{fleet.config.parent / 'hub' / 'hub.db'}")
        try:
            with make_sessionmaker(engine)() as session:
                shop = crud.get_site(session, "shop")
                session.add_all([Camera(site_id=shop.id, name=n) for n in ("door", "gate", "yard")])
                session.flush()
                camera_owners.claim(session, shop.id, "a2", ["door"])  # what a2's first status does in the hub
                camera_owners.claim(session, shop.id, "a1", ["gate"])
                session.commit()
        finally:
            engine.dispose()
        _wait_until_a1_is_denied_door(fleet)
        assert main(["mqtt", "revoke", "--config", str(fleet.config), A2]) == 0
        _wait_until_refused(fleet, A2)
        assert fleet.connect(A1).rc == 0 and fleet.connect("hub").rc == 0
        watcher.send_signal(signal.SIGTERM)
        assert watcher.wait(timeout=30) == 0
        assert "Mosquitto reloaded" in (tmp_path / "watch.log").read_text()
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait(timeout=30)
        log.close()


def test_export_needs_the_hub_password(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, None)
    out = tmp_path / "out"
    assert main(["mqtt", "export-mosquitto", "--config", str(config), "--out", str(out)]) == 1
    assert "mqtt.password" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_the_hubs_hash_is_kept_only_while_it_matches_the_password(tmp_path: Path) -> None:
    previous = tmp_path / PASSWORD_FILE
    first = hub_user("hub", "pw-1")
    previous.write_text(password_text([first]))
    assert hub_user("hub", "pw-1", previous).password_hash == first.password_hash  # same file, no reload
    changed = hub_user("hub", "pw-2", previous)
    assert changed.password_hash != first.password_hash and verify_secret("pw-2", changed.password_hash)
    assert hub_user("other", "pw-1", previous).password_hash != first.password_hash


def test_a_failed_reload_is_logged_and_retried_until_it_works(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The watcher survives a bad pid file: the files are written, the reload is retried each round, unchanged
    files or not, and the first good pid gets its SIGHUP."""
    engine = make_engine(f"sqlite:///{tmp_path / 'hub.db'}")
    migrate(engine)
    pid_file, out = tmp_path / "mosquitto.pid", tmp_path / "mqtt"
    exporter = Exporter(
        make_sessionmaker(engine), out, "camfleet", hub_user("hub", "pw"), interval_s=0.05, pid_file=pid_file
    )
    stop = threading.Event()
    runner = threading.Thread(target=exporter.watch, args=(stop,))
    # Stands in for Mosquitto: SIGHUP ends it. Its SIGHUP is reset to the default before exec, as a runner started
    # under nohup passes "ignore" down to every child (CI hit it once: the signal came and `sleep` slept on).
    mosquitto = subprocess.Popen(["sleep", "60"], preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    try:
        with caplog.at_level(logging.ERROR):
            runner.start()
            for _ in range(200):  # bounded
                if "this round failed" in caplog.text:
                    break
                time.sleep(0.05)
        assert "no process id" in caplog.text and (out / ACL_FILE).exists()
        pid_file.write_text(str(mosquitto.pid))
        try:
            assert mosquitto.wait(timeout=30) == -signal.SIGHUP
        except subprocess.TimeoutExpired:
            pytest.fail(f"no SIGHUP in 30 s; watcher alive: {runner.is_alive()}; log: {caplog.text[-2000:]}")
    finally:
        stop.set()
        runner.join(timeout=30)
        mosquitto.kill()
        engine.dispose()
    assert not runner.is_alive()


def test_files_are_owner_only(fleet: Fleet) -> None:
    for name in (PASSWORD_FILE, ACL_FILE):
        assert (fleet.out / name).stat().st_mode & 0o777 == 0o600
    assert "pattern" not in (fleet.out / ACL_FILE).read_text()


def test_the_checked_in_bootstrap_acl_is_the_export_of_the_hub_alone() -> None:
    """deploy/mosquitto/acl (used before the first export) is generated from the same table, never hand-edited."""
    assert (ROOT / "deploy" / "mosquitto" / "acl").read_text() == acl_text([hub_user("hub", "x")], "camfleet")


def test_the_embedded_broker_denies_the_same_wildcard_gaps() -> None:
    agent = MqttPrincipal(MqttRole.AGENT, A1, site="shop", agent="a1")
    for topic in (f"{R}/shop/models/frame", f"{R}/shop/models/event", f"{R}/shop/agents/frame"):
        assert not may_publish(agent, topic, "camfleet")
    assert may_subscribe(agent, f"{R}/shop/models/+", "camfleet")
    assert not may_subscribe(agent, f"{R}/shop/models/frame", "camfleet")


AGENT_PASSWORD = "sample-agent-password-0123456789"


def _create_with_password(config: Path, password: str, monkeypatch: pytest.MonkeyPatch, *extra: str) -> int:
    """``mqtt create --site plaza --create-site --agent sample-agent --password-stdin`` with ``password`` on stdin."""
    monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
    argv = ["mqtt", "create", "--config", str(config), "--site", "plaza", "--create-site", "--agent", "sample-agent"]
    return main([*argv, "--password-stdin", *extra])


def test_create_with_a_given_password_is_idempotent_and_mosquitto_accepts_it(
    mosquitto_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    """What compose's mqtt-users runs at every start: create twice with one password, export, log in for real."""
    config = _config(tmp_path, HUB_PASSWORD)
    assert _create_with_password(config, AGENT_PASSWORD, monkeypatch) == 0
    first = capsys.readouterr().out
    assert "created site plaza" in first and AGENT_PASSWORD not in first
    assert _create_with_password(config, AGENT_PASSWORD, monkeypatch) == 0  # a re-run: no 409
    assert "same password" in capsys.readouterr().out
    assert _create_with_password(config, "another-password-0123456789", monkeypatch) == 1
    assert "revoke it first" in capsys.readouterr().err  # a different password does not replace the stored one

    out = tmp_path / "mosquitto"
    argv = ["mqtt", "export-mosquitto", "--config", str(config), "--out", str(out), "--file-mode", "0640"]
    assert main(argv) == 0
    assert (out / PASSWORD_FILE).stat().st_mode & 0o777 == 0o640
    assert (out / PASSWORD_FILE).read_text().count("agent/plaza/sample-agent:$7$") == 1
    broker = mosquitto_factory(
        extra_config=["allow_anonymous false", f"password_file {out / PASSWORD_FILE}", f"acl_file {out / ACL_FILE}"]
    )
    user = "agent/plaza/sample-agent"
    clients = [
        ProbeClient(broker.port, user, AGENT_PASSWORD),
        ProbeClient(broker.port, user, "another-password-0123456789"),
    ]
    try:
        assert clients[0].rc == 0 and clients[1].rc != 0
        hub = ProbeClient(broker.port, "hub", HUB_PASSWORD)
        clients.append(hub)
        hub.subscribe(f"{R}/plaza/agents/+/status")
        clients[0].publish(f"{R}/plaza/agents/sample-agent/status", b"online")  # its own block in the acl_file
        assert hub.payloads_until(b"online") == [b"online"]
    finally:
        for client in clients:
            client.close()


def test_create_refuses_a_bad_given_password_before_creating_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, HUB_PASSWORD)
    assert _create_with_password(config, "short", monkeypatch) == 1
    assert "--password-stdin: the password has 5 characters; 16 to 1024 are needed" in capsys.readouterr().err
    monkeypatch.delenv("NO_SUCH_PASSWORD_VAR", raising=False)
    argv = ["mqtt", "create", "--config", str(config), "--site", "plaza", "--agent", "a", "--password-env"]
    assert main([*argv, "NO_SUCH_PASSWORD_VAR", "--create-site"]) == 1
    assert "--password-env NO_SUCH_PASSWORD_VAR: the password has 0 characters" in capsys.readouterr().err
    monkeypatch.setenv("SAMPLE_PASSWORD", AGENT_PASSWORD)
    assert main([*argv, "SAMPLE_PASSWORD"]) == 1  # the refusals created no site, and no --create-site: none now
    assert "site='plaza' not found" in capsys.readouterr().err
