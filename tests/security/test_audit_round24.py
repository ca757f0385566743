"""Audit round 24: camera ownership, none-of-the-above groups and ``export-mosquitto --watch``, attacked by an agent
holding site ``shop``'s MQTT credentials (or the topics they open) and by a labeller of one site.

Tests marked ``xfail(strict=True, reason="HOLE: ...")`` demonstrate a hole that is still open (they pass once it is
closed and then must lose the mark); the others confirm a defence with a real attack. Real Mosquitto, real amqtt,
real SQLite; denied publishes are dropped silently, so each broker check publishes the forbidden message first and
an allowed sentinel after it: once the sentinel arrives, the forbidden one would have too.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import struct
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hub" / "fleet"))  # the fleet tests' helpers

from fleethelpers import API, FleetHub, started_fleet  # noqa: E402

from camfleet_contract.agent_config import MAX_AGENT_CAMERAS  # noqa: E402
from camfleet_contract.envelope import MAGIC, new_header  # noqa: E402
from camfleet_contract.messages import AgentStatus  # noqa: E402
from camfleet_hub.auth import mqtt_accounts  # noqa: E402
from camfleet_hub.auth.models import MqttAccountKind  # noqa: E402
from camfleet_hub.core.comms import mosquitto_export  # noqa: E402
from camfleet_hub.core.comms.broker import BrokerAccess, EmbeddedBroker  # noqa: E402
from camfleet_hub.core.db.session import make_engine, make_sessionmaker, migrate  # noqa: E402
from camfleet_hub.datasets import crud  # noqa: E402
from camfleet_hub.datasets.camera_owners import OwnerCache  # noqa: E402
from camfleet_hub.datasets.models import Camera, Site  # noqa: E402
from camfleet_hub.ingest import persist  # noqa: E402
from camfleet_hub.ingest.models import DeadLetter  # noqa: E402
from camfleet_hub.ingest.validate import StatusUpdate  # noqa: E402
from tests.support.mqttprobe import ProbeClient  # noqa: E402
from tests.support.polling import unique, wait_for  # noqa: E402

HUB_PASSWORD = "hub-audit-pw"
OWNERS_TTL_S = 0.3
R = "camfleet/v1"


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (30, 200, 30)).save(out, "JPEG")
    return out.getvalue()


def _frame(agent: str, site: str, camera: str) -> bytes:
    jpeg = _jpeg()
    head = json.dumps(new_header(agent, site, camera, jpeg, 8, 8).model_dump(mode="json")).encode()
    return MAGIC + struct.pack(">I", len(head)) + head + jpeg


def _drop(client: ProbeClient) -> None:
    """End the connection without a DISCONNECT packet (a pulled cable): the broker sends the client's last-will."""
    client.paho.loop_stop()
    sock = client.paho.socket()
    assert sock is not None
    sock.close()


# ---------------------------------------------------------------------------------------- the embedded broker


@dataclass
class Embedded:
    port: int
    broker: EmbeddedBroker
    sessions: sessionmaker[Session]
    passwords: dict[str, tuple[str, str]]  # agent -> (username, password)
    made: list[ProbeClient]

    def connect(self, who: str, will: tuple[str, bool] | None = None) -> ProbeClient:
        user, password = ("hub", HUB_PASSWORD) if who == "hub" else self.passwords[who]
        client = ProbeClient(self.port, user, password, will=will)
        self.made.append(client)
        return client

    def status(self, agent: str, *cameras: str) -> None:
        """What ingest does with ``agent``'s status naming ``cameras``: registers them, claims the unowned ones."""
        status = AgentStatus(state="online", site="plaza", agent=agent, ts=datetime.now(UTC), cameras=list(cameras))
        with self.sessions() as s:
            assert persist.apply_status(s, StatusUpdate("plaza", agent, status))
            s.commit()


@pytest.fixture
def embedded(tmp_path: Path, free_port: Callable[[], int]) -> Iterator[Embedded]:
    """The embedded broker with owner checks (cache TTL 0.3 s), site plaza, agents a1 and a2."""
    engine = make_engine(f"sqlite:///{tmp_path / 'hub.db'}")
    migrate(engine)
    sessions = make_sessionmaker(engine)
    access = BrokerAccess(
        "hub", HUB_PASSWORD, verify=mqtt_accounts.AccountVerifier(sessions), owners=OwnerCache(sessions, OWNERS_TTL_S)
    )
    port = free_port()
    broker = EmbeddedBroker("127.0.0.1", port, access, retained_file=tmp_path / "retained.json")
    broker.start()
    passwords = {}
    with sessions() as s:
        plaza = Site(name="plaza")
        s.add(plaza)
        s.commit()
        for name in ("a1", "a2"):
            issued = mqtt_accounts.create_account(s, MqttAccountKind.AGENT, plaza, name, "test")
            passwords[name] = (issued.account.username, issued.password)
    made: list[ProbeClient] = []
    try:
        yield Embedded(port, broker, sessions, passwords, made)
    finally:
        for c in made:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - a dropped client has no loop left to stop
                pass
        broker.stop()
        engine.dispose()


def test_a_will_armed_before_the_claim_cannot_publish_on_the_new_owners_camera(embedded: Embedded) -> None:
    """a1 connects with a last-will on door's frame topic while nobody owns door (allowed then), a2's status
    claims door, a1 drops the connection: the will is a frame naming a2, which ingest would take as a2's."""
    hub = embedded.connect("hub")
    assert hub.subscribe(f"{R}/+/+/frame", f"{R}/+/+/event") == [1, 1]
    forged = _frame("a2", "plaza", "door")
    paho = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique("armed-"), protocol=mqtt.MQTTv311)
    paho.username_pw_set(*embedded.passwords["a1"])
    paho.will_set(f"{R}/plaza/door/frame", forged, qos=1, retain=False)
    connected: list[int] = []
    paho.on_connect = lambda _c, _u, _f, rc, _p: connected.append(rc.value)
    paho.connect("127.0.0.1", embedded.port, keepalive=30)
    paho.loop_start()
    wait_for(lambda: connected, "a1's armed connection accepted")
    assert connected == [0], "the will on an unowned camera is a1's right at CONNECT"

    embedded.status("a2", "door")
    time.sleep(OWNERS_TTL_S * 2)  # the broker's cache of owners expires
    a1 = embedded.connect("a1")
    a1.publish(f"{R}/plaza/door/frame", b"a1 on a2's door, refused")
    a1.publish(f"{R}/plaza/gate/event", b"a1 on nobody's gate")
    assert hub.payloads_until(b"a1 on nobody's gate") == [b"a1 on nobody's gate"]  # the PUBLISH check holds

    paho.loop_stop()
    sock = paho.socket()
    assert sock is not None
    sock.close()  # no DISCONNECT: the broker sends the will
    time.sleep(1.0)
    a2 = embedded.connect("a2")
    a2.publish(f"{R}/plaza/door/event", b"a2 on its door")
    got = hub.payloads_until(b"a2 on its door")
    leaked = [p[:120] for p in got if p == forged]
    assert not leaked, f"a1's will reached a2's camera door: a frame header naming a2, which ingest stores: {leaked}"
    assert got == [b"a2 on its door"]


# ------------------------------------------------------------------------------------ Mosquitto with the export


@dataclass
class Exported:
    config: Path
    db: Path
    out: Path
    broker: Any
    passwords: dict[str, str]  # username -> password
    made: list[ProbeClient]

    def connect(self, user: str, will: tuple[str, bool] | None = None) -> ProbeClient:
        client = ProbeClient(self.broker.port, user, self.passwords[user], will=will)
        self.made.append(client)
        return client

    def sessions(self) -> Any:
        return make_sessionmaker(make_engine(f"sqlite:///{self.db}"))

    def export(self) -> None:
        from camfleet_hub.__main__ import main

        assert main(["mqtt", "export-mosquitto", "--config", str(self.config), "--out", str(self.out)]) == 0


A1, A2 = "agent/shop/a1", "agent/shop/a2"


@pytest.fixture
def exported(mosquitto_factory, tmp_path: Path) -> Iterator[Exported]:  # type: ignore[no-untyped-def]
    """Site shop with agents a1 and a2, exported and served by a private Mosquitto."""
    config = tmp_path / "hub.toml"
    (tmp_path / "hub").mkdir()
    config.write_text(
        "\n".join(
            [f'data_dir = "{tmp_path / "hub"}"', "[mqtt]", "embedded = false", 'username = "hub"',
             f'password = "{HUB_PASSWORD}"']
        ) + "\n"
    )  # fmt: skip
    db = tmp_path / "hub" / "hub.db"
    engine = make_engine(f"sqlite:///{db}")
    passwords = {"hub": HUB_PASSWORD}
    try:
        migrate(engine)
        with make_sessionmaker(engine)() as session:
            shop = crud.create_site(session, "shop")
            for name in ("a1", "a2"):
                issued = mqtt_accounts.create_account(session, MqttAccountKind.AGENT, shop, name, "test")
                passwords[issued.account.username] = issued.password
    finally:
        engine.dispose()
    out = tmp_path / "mosquitto"
    fx = Exported(config, db, out, None, passwords, [])
    fx.export()
    fx.broker = mosquitto_factory(
        extra_config=[
            "allow_anonymous false",
            f"password_file {out / mosquitto_export.PASSWORD_FILE}",
            f"acl_file {out / mosquitto_export.ACL_FILE}",
        ]
    )
    try:
        yield fx
    finally:
        for c in fx.made:
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass


def test_mosquitto_checks_a_will_when_it_is_sent_so_an_armed_will_misses_the_new_owners_camera(
    exported: Exported,
) -> None:
    """The same attack on Mosquitto with the export: a1 arms a will on door while nobody owns it, a2 claims door,
    export + SIGHUP, a1 drops the connection: Mosquitto checks the will against the reloaded acl_file and drops it."""
    hub = exported.connect("hub")
    assert hub.subscribe(f"{R}/+/+/frame", f"{R}/+/+/event") == [1, 1]
    armed = exported.connect(A1, will=(f"{R}/shop/door/event", False))
    assert armed.rc == 0
    sessions = exported.sessions()
    with sessions() as session:
        shop = crud.get_site(session, "shop")
        session.add(Camera(site_id=shop.id, name="door"))
        session.flush()
        assert persist.apply_status(
            session,
            StatusUpdate("shop", "a2", AgentStatus(state="online", site="shop", agent="a2", cameras=["door"])),
        )
        session.commit()
    exported.export()
    os.kill(exported.broker.proc.pid, signal.SIGHUP)
    for attempt in range(100):  # the reload is asynchronous: until a1's direct publish on door is dropped
        probe = exported.connect(A1)
        probe.publish(f"{R}/shop/door/event", b"a1 direct on door")
        probe.publish(f"{R}/shop/gate/event", f"gate {attempt}".encode())
        got = hub.payloads_until(f"gate {attempt}".encode())
        if got == [f"gate {attempt}".encode()]:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("Mosquitto never applied the deny line for door")
    _drop(armed)
    time.sleep(1.0)
    exported.connect(A2).publish(f"{R}/shop/door/event", b"a2 on its door")
    assert hub.payloads_until(b"a2 on its door") == [b"a2 on its door"]


# --------------------------------------------------------------------------- ingest on Mosquitto (agent's view)


@pytest.fixture
def fleet(tmp_path: Path, mosquitto: Any) -> Iterator[FleetHub]:
    """A started hub with ingest on the session Mosquitto (its own topic root), site shop with camera cam1, SQLite."""
    with started_fleet(tmp_path / "h", f"sqlite:///{tmp_path / 'hub.db'}", mosquitto) as f:
        f.site("shop", ("cam1",))
        with f.services.sessions() as s:
            shop = crud.get_site(s, "shop")
            for name in ("agent1", "agent2"):
                mqtt_accounts.create_account(s, MqttAccountKind.AGENT, shop, name, "test")
        yield f


def _status(agent: str, **fields: Any) -> bytes:
    doc = {"state": "online", "agent": agent, "site": "shop", "ts": datetime.now(UTC).isoformat()} | fields
    return json.dumps(doc).encode()


def _cameras(fleet: FleetHub) -> dict[str, str | None]:
    with fleet.services.sessions() as s:
        return {n: a for n, a in s.execute(select(Camera.name, Camera.agent))}


def _acl_blocks(fleet: FleetHub) -> dict[str, list[str]]:
    """The acl_file the export would write now, as ``{username: lines}``."""
    with fleet.services.sessions() as s:
        files = mosquitto_export.render(
            s, root=fleet.services.settings.mqtt.root, hub=mosquitto_export.hub_user("hub", HUB_PASSWORD)
        )
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in files.acl_text.splitlines():
        if line.startswith("user "):
            current = blocks.setdefault(line[5:], [])
        elif line and not line.startswith("#") and current is not None:
            current.append(line)
    return blocks


CLAIMED = 3000


def test_one_status_cannot_claim_an_unbounded_number_of_cameras(fleet: FleetHub) -> None:
    """agent1's credentials publish one status of ~30 KB naming 3000 made-up cameras: the site gains 3000 cameras
    owned by agent1 (a name a future agent would use is squatted), and agent2's Mosquitto block 6000 deny lines,
    which Mosquitto walks on every publish of agent2 (deny entries are checked first)."""
    names = [f"c{i:05d}" for i in range(CLAIMED)]
    before = fleet.stats().statuses
    fleet.publish(fleet.topics.status("shop", "agent1"), _status("agent1", cameras=names))
    wait_for(lambda: fleet.stats().statuses > before or fleet.stats().rejected_total, "the status handled")
    owned = sum(1 for agent in _cameras(fleet).values() if agent == "agent1")
    assert owned == 0 and fleet.stats().rejected_total  # a status names at most MAX_AGENT_CAMERAS: refused whole
    # Statuses within the bound, each naming other cameras: the agent comes to own MAX_AGENT_CAMERAS, no more.
    for batch in range(3):
        chunk = names[batch * 200 : (batch + 1) * 200]
        fleet.publish(fleet.topics.status("shop", "agent1"), _status("agent1", cameras=chunk))
    wait_for(lambda: fleet.stats().statuses >= before + 3, "three statuses applied")
    owned = sum(1 for agent in _cameras(fleet).values() if agent == "agent1")
    denies = [line for line in _acl_blocks(fleet)["agent/shop/agent2"] if line.startswith("topic deny ")]
    assert owned == MAX_AGENT_CAMERAS and len(_cameras(fleet)) == 1 + MAX_AGENT_CAMERAS  # cam1 and agent1's
    assert len(denies) <= 2 * MAX_AGENT_CAMERAS + 4, f"agent2's acl block holds {len(denies)} deny lines"


# Hostile names an agent can put where the export writes them: camera names of its status (they become
# ``topic deny R/shop/<camera>/frame`` lines in the other agents' blocks).
HOSTILE_CAMERAS = {
    "newline then a rule": "door\ntopic readwrite #",
    "newline then a user": "door\nuser hub",
    "space": "door topic",
    "hash": "#",
    "plus": "+",
    "slash": "door/x",
    "carriage return": "door\rtopic readwrite #",
    "NUL": "door\u0000",
    "unicode line separator": "door\u2028topic readwrite #",
    "leading dollar": "$SYS",
}
# Every line the export may write: the header comments, user lines, topic lines with one access and one filter.
EXPORT_LINE = re.compile(r"^(#.*|user [^\s:#]+|topic (read|write|readwrite|deny) [A-Za-z0-9_.+#/-]+|)$")


def test_hostile_camera_names_in_a_status_never_reach_the_mosquitto_files(fleet: FleetHub) -> None:
    """Each hostile camera name is refused with its status (``bad_status``, naming the camera field): no camera is
    registered or claimed, and the acl_file the watcher would write keeps one rule per line for every user."""
    topic = fleet.topics.status("shop", "agent1")
    for i, name in enumerate(HOSTILE_CAMERAS.values(), start=1):
        fleet.publish(topic, _status("agent1", cameras=["gate", name]))

        def dead(n: int = i) -> list[DeadLetter] | None:
            with fleet.services.sessions() as s:
                rows = list(s.scalars(select(DeadLetter).where(DeadLetter.topic == topic)))
            return rows if len(rows) >= n else None

        rows = wait_for(dead, f"status {i} refused")
        assert rows[-1].reason == "bad_status" and "camera" in rows[-1].detail, (rows[-1].reason, rows[-1].detail)
    assert _cameras(fleet) == {"cam1": None}, "a refused status registered or claimed a camera"
    fleet.publish(topic, _status("agent1", cameras=["gate"]))  # a good one claims gate: a deny line for agent2
    wait_for(lambda: _cameras(fleet).get("gate") == "agent1", "gate claimed by agent1")
    with fleet.services.sessions() as s:
        files = mosquitto_export.render(
            s, root=fleet.services.settings.mqtt.root, hub=mosquitto_export.hub_user("hub", HUB_PASSWORD)
        )
    bad = [line for line in files.acl_text.split("\n") if not EXPORT_LINE.fullmatch(line)]
    assert not bad, bad
    assert all(re.fullmatch(r"[^\s:#]+:\$7\$[^\s:]+", line) for line in files.password_text.splitlines())
    root = fleet.services.settings.mqtt.root
    assert _acl_blocks(fleet)["agent/shop/agent2"][-2:] == [
        f"topic deny {root}/v1/shop/gate/event",
        f"topic deny {root}/v1/shop/gate/frame",
    ]


@pytest.mark.parametrize("agent", ["a1\ntopic readwrite #", "a1 #", "+", "a1/x", "a1\r", "a1\u0085"])
def test_a_hostile_owner_name_is_refused_by_the_camera_patch(fleet: FleetHub, agent: str) -> None:
    """``PATCH …/cameras/{camera} {"agent": …}`` is the other way a name reaches the owners the export reads."""
    r = fleet.client.patch(f"{API}/sites/shop/cameras/cam1", json={"agent": agent})
    assert r.status_code == 422, r.text
    assert "agent" in r.text
    assert _cameras(fleet) == {"cam1": None}


def test_a_status_cannot_register_a_reserved_camera_name(fleet: FleetHub) -> None:
    assert fleet.client.post(f"{API}/sites/shop/cameras", json={"name": "models"}).status_code == 422
    fleet.publish(fleet.topics.status("shop", "agent1"), _status("agent1", cameras=["models", "agents", "gate"]))
    wait_for(lambda: "gate" in _cameras(fleet), "the status applied")
    assert not {"models", "agents"} & set(_cameras(fleet)), _cameras(fleet)
