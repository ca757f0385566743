"""The embedded broker's access rules, against a real amqtt broker, real paho clients and hub-issued accounts.

Denied publishes are dropped silently, so each check publishes the forbidden message first and an allowed
sentinel after it on the same connection: once the sentinel arrives, the forbidden one would have too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from camfleet_contract.messages import AgentStatus
from camfleet_hub.auth import mqtt_accounts
from camfleet_hub.auth.models import MqttAccountKind
from camfleet_hub.core.comms.acl import MqttPrincipal, MqttRole, covers, may_publish, may_subscribe
from camfleet_hub.core.comms.broker import BrokerAccess, EmbeddedBroker
from camfleet_hub.core.db.session import make_engine, make_sessionmaker, migrate
from camfleet_hub.datasets.camera_owners import OwnerCache
from camfleet_hub.datasets.models import Site
from camfleet_hub.ingest import persist
from camfleet_hub.ingest.validate import StatusUpdate
from tests.support.mqttprobe import ProbeClient

HUB_PASSWORD = "hub-secret"
OWNERS_TTL_S = 0.3
NOT_AUTHORISED = 135  # paho reports CONNACK 5 (not authorised) as reason code 135
REFUSED = 0x80


@dataclass
class Fleet:
    port: int
    broker: EmbeddedBroker
    sessions: sessionmaker[Session]
    passwords: dict[str, tuple[str, str]]  # label -> (username, password)
    made: list[ProbeClient]

    def connect(self, label: str | None, password: str | None = None, **kw: object) -> ProbeClient:
        if label is None:
            client = ProbeClient(self.port, None, None, **kw)  # type: ignore[arg-type]
        elif label == "hub":
            client = ProbeClient(self.port, "hub", password or HUB_PASSWORD, **kw)  # type: ignore[arg-type]
        else:
            user, real = self.passwords[label]
            client = ProbeClient(self.port, user, password or real, **kw)  # type: ignore[arg-type]
        self.made.append(client)
        return client


def _start(tmp_path: Path, port: int, *, anonymous: bool = False) -> tuple[EmbeddedBroker, sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'hub.db'}")
    migrate(engine)
    sessions = make_sessionmaker(engine)
    access = BrokerAccess(
        "hub",
        HUB_PASSWORD,
        verify=mqtt_accounts.AccountVerifier(sessions),
        allow_anonymous_loopback=anonymous,
        owners=OwnerCache(sessions, ttl_s=OWNERS_TTL_S),
    )
    broker = EmbeddedBroker("127.0.0.1", port, access, retained_file=tmp_path / "retained.json")
    broker.start()
    return broker, sessions


@pytest.fixture
def fleet(tmp_path: Path, free_port: Callable[[], int]) -> Iterator[Fleet]:
    """Sites plaza and harbour; agents plaza/a1, plaza/a2, harbour/h1; an observer of plaza."""
    port = free_port()
    broker, sessions = _start(tmp_path, port)
    passwords = {}
    with sessions() as s:
        plaza, harbour = Site(name="plaza"), Site(name="harbour")
        s.add_all([plaza, harbour])
        s.commit()
        for label, site, name, kind in (
            ("a1", plaza, "a1", MqttAccountKind.AGENT),
            ("a2", plaza, "a2", MqttAccountKind.AGENT),
            ("h1", harbour, "h1", MqttAccountKind.AGENT),
            ("watch", plaza, "watch", MqttAccountKind.OBSERVER),
        ):
            issued = mqtt_accounts.create_account(s, kind, site, name, "test")
            passwords[label] = (issued.account.username, issued.password)
    made: list[ProbeClient] = []
    try:
        yield Fleet(port, broker, sessions, passwords, made)
    finally:
        for c in made:
            c.close()
        broker.stop()


def test_anonymous_wrong_password_and_revoked_are_refused(fleet: Fleet) -> None:
    assert fleet.connect(None).rc == NOT_AUTHORISED
    assert fleet.connect("hub", "wrong").rc == NOT_AUTHORISED
    assert fleet.connect("a1", "wrong").rc == NOT_AUTHORISED
    assert ProbeClient(fleet.port, "plaza", "anything").rc == NOT_AUTHORISED  # a bare site name is no account
    assert fleet.connect("a1").rc == 0 and fleet.connect("hub").rc == 0
    with fleet.sessions() as s:
        mqtt_accounts.revoke(s, mqtt_accounts.get_account_by_username(s, fleet.passwords["a1"][0]))
    assert fleet.connect("a1").rc == NOT_AUTHORISED


def test_anonymous_on_loopback_only_when_allowed(tmp_path: Path, free_port: Callable[[], int]) -> None:
    port = free_port()
    broker, _ = _start(tmp_path, port, anonymous=True)
    try:
        client = ProbeClient(port, None, None)
        try:
            assert client.rc == 0
        finally:
            client.close()
    finally:
        broker.stop()
    access = BrokerAccess("hub", HUB_PASSWORD, allow_anonymous_loopback=True)
    assert access.principal(None, None, "10.0.0.7") is None  # not loopback: refused even with the setting
    assert access.principal(None, None, "::1") is not None


def test_agent_cannot_read_everything_or_other_agents_commands(fleet: Fleet) -> None:
    a1 = fleet.connect("a1")
    assert a1.subscribe("#") == [REFUSED]
    assert a1.subscribe("camfleet/v1/plaza/#") == [REFUSED]
    assert a1.subscribe("camfleet/v1/+/models/+") == [REFUSED]
    assert a1.subscribe("camfleet/v1/plaza/agents/a2/cmd", "camfleet/v1/plaza/+/frame") == [REFUSED, REFUSED]
    assert a1.subscribe("camfleet/v1/plaza/models/+", "camfleet/v1/plaza/agents/a1/cmd") == [1, 1]
    hub = fleet.connect("hub")
    hub.publish("camfleet/v1/harbour/models/door", b"other site's model")
    hub.publish("camfleet/v1/plaza/agents/a2/cmd", b"other agent's command")
    hub.publish("camfleet/v1/plaza/models/door", b"model")
    hub.publish("camfleet/v1/plaza/agents/a1/cmd", b"cmd")
    assert a1.payloads_until(b"cmd") == [b"model", b"cmd"]


def test_agent_publishes_only_its_own_site_and_status(fleet: Fleet) -> None:
    hub, a1 = fleet.connect("hub"), fleet.connect("a1")
    assert hub.subscribe("camfleet/v1/#") == [1]
    a1.publish("camfleet/v1/harbour/door/frame", b"other site's frame")
    a1.publish("camfleet/v1/harbour/door/event", b"other site's event")
    a1.publish("camfleet/v1/plaza/agents/a2/status", b"other agent's status")
    a1.publish("camfleet/v1/plaza/models/door", b"forged model", retain=True)
    a1.publish("camfleet/v1/plaza/agents/a1/cmd", b"forged command")
    a1.publish("camfleet/v1/plaza/models/frame", b"a model topic dressed as a frame")
    a1.publish("elsewhere/topic", b"outside the tree")
    a1.publish("camfleet/v1/plaza/door/frame", b"frame")
    a1.publish("camfleet/v1/plaza/door/event", b"event")
    a1.publish("camfleet/v1/plaza/agents/a1/status", b"status")
    assert hub.payloads_until(b"status") == [b"frame", b"event", b"status"]


def test_agent_retains_only_its_status_and_nothing_forged_is_persisted(fleet: Fleet, tmp_path: Path) -> None:
    a1 = fleet.connect("a1")
    a1.publish("camfleet/v1/plaza/models/door", b"forged model", retain=True)
    a1.publish("camfleet/v1/plaza/door/event", b"retained event", retain=True)
    a1.publish("camfleet/v1/plaza/agents/a1/status", b"online", retain=True)
    hub = fleet.connect("hub")
    hub.publish("camfleet/v1/plaza/models/clothing", b"real model", retain=True)
    late = fleet.connect("hub")
    late.subscribe("camfleet/v1/#")
    seen = {late.messages.get(timeout=10)[:2] for _ in range(2)}
    assert seen == {
        ("camfleet/v1/plaza/agents/a1/status", b"online"),
        ("camfleet/v1/plaza/models/clothing", b"real model"),
    }
    assert late.messages.empty()
    stored = {item["topic"] for item in json.loads((tmp_path / "retained.json").read_text())}
    assert stored == {"camfleet/v1/plaza/agents/a1/status", "camfleet/v1/plaza/models/clothing"}


def test_hub_announces_models_and_agents_receive_them(fleet: Fleet) -> None:
    hub = fleet.connect("hub")
    hub.publish("camfleet/v1/plaza/models/door", b"v2", retain=True)
    a1, h1 = fleet.connect("a1"), fleet.connect("h1")
    assert a1.subscribe("camfleet/v1/plaza/models/+") == [1]
    assert a1.messages.get(timeout=10) == ("camfleet/v1/plaza/models/door", b"v2", True)
    assert h1.subscribe("camfleet/v1/harbour/models/+", "camfleet/v1/plaza/models/+") == [1, REFUSED]


def test_a_last_will_the_client_may_not_publish_refuses_the_connection(fleet: Fleet) -> None:
    assert fleet.connect("a1", will=("camfleet/v1/plaza/models/door", True)).rc == NOT_AUTHORISED
    assert fleet.connect("a1", will=("camfleet/v1/plaza/agents/a2/status", True)).rc == NOT_AUTHORISED
    assert fleet.connect("a1", will=("camfleet/v1/plaza/door/event", True)).rc == NOT_AUTHORISED  # retained
    assert fleet.connect("a1", will=("camfleet/v1/plaza/agents/a1/status", True)).rc == 0


def test_observer_reads_events_and_statuses_of_its_site_and_publishes_nothing(fleet: Fleet) -> None:
    watch, a1, h1, hub = fleet.connect("watch"), fleet.connect("a1"), fleet.connect("h1"), fleet.connect("hub")
    assert watch.subscribe("camfleet/v1/plaza/+/frame", "camfleet/v1/+/+/event") == [REFUSED, REFUSED]
    assert watch.subscribe("camfleet/v1/plaza/+/event", "camfleet/v1/plaza/agents/+/status") == [1, 1]
    hub.subscribe("camfleet/v1/#")
    watch.publish("camfleet/v1/plaza/door/event", b"forged event")
    h1.publish("camfleet/v1/harbour/door/event", b"other site")
    a1.publish("camfleet/v1/plaza/door/frame", b"frame")
    a1.publish("camfleet/v1/plaza/door/event", b"event")
    assert watch.payloads_until(b"event") == [b"event"]
    # One client's messages keep their order; two clients' need not (an agent's first publish may wait for the
    # broker to re-read the camera owners), so the hub's are compared as a set.
    got = hub.payloads_until(b"event")
    if b"other site" not in got:
        got += hub.payloads_until(b"other site")
    assert sorted(got) == sorted([b"other site", b"frame", b"event"])


def _status(fleet: Fleet, agent: str, *cameras: str) -> None:
    """What ingest does with ``agent``'s status naming ``cameras``: registers them, claims the unowned ones."""
    status = AgentStatus(state="online", site="plaza", agent=agent, ts=datetime.now(UTC), cameras=list(cameras))
    with fleet.sessions() as s:
        assert persist.apply_status(s, StatusUpdate("plaza", agent, status))
        s.commit()


def test_an_agent_cannot_publish_for_a_camera_another_agent_owns(fleet: Fleet) -> None:
    hub, a1 = fleet.connect("hub"), fleet.connect("a1")
    assert hub.subscribe("camfleet/v1/#") == [1]
    a1.publish("camfleet/v1/plaza/door/frame", b"before a2 claims door")
    assert hub.payloads_until(b"before a2 claims door") == [b"before a2 claims door"]
    _status(fleet, "a2", "door")
    _status(fleet, "a1", "gate", "door")  # a1 naming door later does not take it from a2
    time.sleep(OWNERS_TTL_S * 2)  # the broker's cache of owners expires
    a1.publish("camfleet/v1/plaza/door/frame", b"a1 on a2's door")
    a1.publish("camfleet/v1/plaza/door/event", b"a1 event on a2's door")
    a1.publish("camfleet/v1/plaza/gate/frame", b"a1 on its gate")
    a1.publish("camfleet/v1/plaza/yard/event", b"a1 on nobody's yard")
    assert hub.payloads_until(b"a1 on nobody's yard") == [b"a1 on its gate", b"a1 on nobody's yard"]
    a2 = fleet.connect("a2")
    a2.publish("camfleet/v1/plaza/door/event", b"a2 on its door")
    assert hub.payloads_until(b"a2 on its door") == [b"a2 on its door"]
    assert fleet.connect("a1", will=("camfleet/v1/plaza/door/event", False)).rc == NOT_AUTHORISED  # a2's camera
    assert fleet.connect("a1", will=("camfleet/v1/plaza/gate/event", False)).rc == 0


@pytest.mark.parametrize(
    ("allowed", "requested", "expected"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/+/c", True),
        ("a/+/c", "a/#", False),
        ("a/b/c", "a/+/c", False),
        ("a/#", "a/b/c/d", True),
        ("a/b", "a/b/c", False),
        ("a/b/c", "a/b", False),
    ],
)
def test_filter_covering(allowed: str, requested: str, expected: bool) -> None:
    assert covers(allowed, requested) is expected


def test_rules_use_the_configured_root() -> None:
    agent = MqttPrincipal(MqttRole.AGENT, "agent/plaza/a1", site="plaza", agent="a1")
    assert may_publish(agent, "shop/v1/plaza/door/frame", "shop")
    assert not may_publish(agent, "camfleet/v1/plaza/door/frame", "shop")
    assert may_subscribe(agent, "shop/v1/plaza/agents/a1/cmd", "shop")


def test_hashes_are_mosquitto_compatible_and_checked() -> None:
    stored = mqtt_accounts.hash_secret("s3cret")
    assert stored.startswith("$7$") and mqtt_accounts.verify_secret("s3cret", stored)
    assert not mqtt_accounts.verify_secret("other", stored)
    assert not mqtt_accounts.verify_secret("s3cret", "$7$99999999$AAAA$AAAA")  # absurd cost is refused
    assert not mqtt_accounts.verify_secret("s3cret", "garbage")
