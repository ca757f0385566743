"""The ingest worker against the real Mosquitto, on SQLite and PostgreSQL: good frames, redelivery, bad input."""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hubcore_helpers import frame_payload, hub_settings, seed_site, unique, wait_for
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from camfleet_contract.envelope import MAGIC, encode_frame, new_header
from camfleet_contract.messages import AgentStatus, to_json
from camfleet_contract.topics import Topics
from camfleet_hub.core.comms.mqtt import MqttClient
from camfleet_hub.core.config import HubSettings
from camfleet_hub.core.db.session import make_sessionmaker
from camfleet_hub.core.store import DEAD_PREFIX, DirectoryStore
from camfleet_hub.datasets.models import Blob, Camera, Frame, Image, ImageStatus, Site
from camfleet_hub.fleet.models import Agent
from camfleet_hub.ingest.models import DeadLetter
from camfleet_hub.ingest.stats import IngestStats
from camfleet_hub.ingest.worker import IngestWorker

MAX_FRAME_BYTES = 512 * 1024
WAIT_S = 10.0


@dataclass
class Rig:
    """A running ingest worker with a seeded site 'shop' (camera 'cam1'; classifiers 'door', 'lights')."""

    settings: HubSettings
    topics: Topics
    sessions: sessionmaker[Session]
    store: DirectoryStore
    stats: IngestStats
    worker: IngestWorker
    pub: MqttClient

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.pub.publish(topic, payload, qos=1, retain=retain).wait_for_publish(WAIT_S)

    def frame(self, payload: bytes, site: str = "shop", camera: str = "cam1") -> None:
        self.publish(self.topics.frame(site, camera), payload)

    def count(self, model: type) -> int:
        with self.sessions() as s:
            return int(s.execute(select(func.count()).select_from(model)).scalar_one())

    def settled(self, accepted: int, duplicates: int = 0, rejected: int = 0) -> bool:
        snap = self.stats.snapshot()
        return (snap.accepted, snap.duplicates, snap.rejected_total) == (accepted, duplicates, rejected)


@contextmanager
def make_rig(tmp_path: Path, engine: Engine, host: str, port: int, **ingest: object) -> Iterator[Rig]:
    settings = hub_settings(
        tmp_path,
        str(engine.url.render_as_string(hide_password=False)),
        host,
        port,
        max_frame_bytes=MAX_FRAME_BYTES,
        **ingest,
    )
    seed_site(engine)
    sessions = make_sessionmaker(engine)
    store = DirectoryStore(tmp_path / "objects")
    stats = IngestStats()
    topics = Topics(settings.mqtt.root)
    worker = IngestWorker(settings, sessions, store, stats, topics)
    pub = MqttClient(host, port, unique("pub-"))
    try:
        assert worker.start(WAIT_S)
        assert worker.client.subscribed.wait(WAIT_S)
        assert pub.start(WAIT_S)
        yield Rig(settings, topics, sessions, store, stats, worker, pub)
    finally:
        pub.stop()
        worker.stop()


@pytest.fixture
def rig(tmp_path: Path, engine: Engine, mosquitto) -> Iterator[Rig]:  # type: ignore[no-untyped-def]
    with make_rig(tmp_path, engine, mosquitto.host, mosquitto.port) as r:
        yield r


# ---------------------------------------------------------------- good frames


def test_good_frames_are_stored_once(rig: Rig, jpegs: list[bytes]) -> None:
    payloads = [frame_payload(j, "shop", "cam1") for j in jpegs[:5]]
    for p in payloads:
        rig.frame(p)
    wait_for(lambda: rig.settled(accepted=5), "5 frames accepted")
    assert rig.count(Frame) == 5
    assert rig.count(Blob) == 5
    assert rig.count(Image) == 10  # one NEW image per classifier of the site
    with rig.sessions() as s:
        frames = s.execute(select(Frame).order_by(Frame.id)).scalars().all()
        for frame, jpeg in zip(frames, jpegs, strict=False):
            assert rig.store.get(frame.sha256) == jpeg
            assert frame.agent == "agent1" and frame.captured_at.tzinfo is not None
        images = s.execute(select(Image)).scalars().all()
        assert {i.status for i in images} == {ImageStatus.NEW.value}
        assert {i.source for i in images} == {"camera"}
        cam = s.execute(select(Camera).where(Camera.name == "cam1")).scalar_one()
        assert cam.last_seen_at is not None
    assert rig.count(DeadLetter) == 0


def test_redelivery_is_idempotent(rig: Rig, jpegs: list[bytes]) -> None:
    payload = frame_payload(jpegs[0], "shop", "cam1")
    rig.frame(payload)
    rig.frame(payload)
    wait_for(lambda: rig.settled(accepted=1, duplicates=1), "one accepted + one duplicate")
    rig.frame(payload)  # a later redelivery, in another batch
    wait_for(lambda: rig.settled(accepted=1, duplicates=2), "second duplicate")
    assert rig.count(Frame) == 1
    assert rig.count(Image) == 2


def test_same_image_in_two_frames(rig: Rig, jpegs: list[bytes]) -> None:
    rig.frame(frame_payload(jpegs[0], "shop", "cam1"))
    rig.frame(frame_payload(jpegs[0], "shop", "cam1"))
    wait_for(lambda: rig.settled(accepted=2), "two frames")
    assert (rig.count(Frame), rig.count(Blob), rig.count(Image)) == (2, 1, 2)


def test_deleted_image_is_not_offered_again(rig: Rig, jpegs: list[bytes]) -> None:
    rig.frame(frame_payload(jpegs[0], "shop", "cam1"))
    wait_for(lambda: rig.settled(accepted=1), "first frame")
    with rig.sessions() as s:
        s.execute(update(Image).values(status=ImageStatus.DELETED.value))
        s.commit()
    rig.frame(frame_payload(jpegs[0], "shop", "cam1"))
    wait_for(lambda: rig.settled(accepted=2), "second frame")
    with rig.sessions() as s:
        assert set(s.execute(select(Image.status)).scalars()) == {ImageStatus.DELETED.value}
    assert rig.count(Image) == 2


def test_frame_id_reused_with_other_bytes_is_rejected(rig: Rig, jpegs: list[bytes]) -> None:
    rig.frame(frame_payload(jpegs[0], "shop", "cam1", frame_id="fixed-id"))
    wait_for(lambda: rig.settled(accepted=1), "first frame")
    rig.frame(frame_payload(jpegs[1], "shop", "cam1", frame_id="fixed-id"))
    wait_for(lambda: rig.settled(accepted=1, rejected=1), "conflict rejected")
    assert rig.stats.snapshot().rejected == {"frame_id_conflict": 1}


# ---------------------------------------------------------------- bad input


def _with_sof_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The same JPEG with its SOF0/SOF2 header claiming another size (a decompression bomb when huge)."""
    i = 2
    while i < len(jpeg):
        marker, length = jpeg[i + 1], int.from_bytes(jpeg[i + 2 : i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):
            return jpeg[: i + 5] + struct.pack(">HH", height, width) + jpeg[i + 9 :]
        i += 2 + length
    raise AssertionError("no SOF marker")


def _with_broken_huffman_table(jpeg: bytes) -> bytes:
    """The same JPEG with its first Huffman table overwritten: the header probes fine, decoding fails."""
    i = 2
    while i < len(jpeg):
        marker, length = jpeg[i + 1], int.from_bytes(jpeg[i + 2 : i + 4], "big")
        if marker == 0xC4:
            return jpeg[: i + 5] + b"\xff" * (length - 3) + jpeg[i + 2 + length :]
        i += 2 + length
    raise AssertionError("no DHT marker")


def _envelope(jpeg: bytes, **changes: object) -> bytes:
    """A valid envelope whose header hashes ``jpeg`` as given (so only the image itself is bad)."""
    header = new_header("agent1", "shop", "cam1", jpeg, 256, 256).model_copy(update=changes)
    return encode_frame(header, jpeg)


def _raw(head: bytes, body: bytes) -> bytes:
    return MAGIC + struct.pack(">I", len(head)) + head + body


BadCase = Callable[[list[bytes]], tuple[str, bytes]]  # jpegs → (topic site/camera or raw topic, payload)

BAD_INPUTS: dict[str, tuple[str, BadCase]] = {
    "wrong magic": ("bad_magic", lambda j: ("shop/cam1", b"JPEG" + frame_payload(j[0], "shop", "cam1")[4:])),
    "bad header json": ("bad_header", lambda j: ("shop/cam1", _raw(b"{not json", j[0]))),
    "header schema": ("bad_header", lambda j: ("shop/cam1", _raw(json.dumps({"frame_id": "x"}).encode(), j[0]))),
    "truncated envelope": ("truncated", lambda j: ("shop/cam1", frame_payload(j[0], "shop", "cam1")[:6])),
    "hash mismatch": (
        "hash_mismatch",
        lambda j: ("shop/cam1", encode_frame(new_header("agent1", "shop", "cam1", j[1], 10, 10), j[0])),
    ),
    "not a jpeg": ("not_jpeg", lambda j: ("shop/cam1", _envelope(b"GIF89a" + j[0][6:]))),
    "truncated jpeg": ("corrupt_image", lambda j: ("shop/cam1", _envelope(j[0][: len(j[0]) // 2]))),
    "corrupt jpeg body": ("corrupt_image", lambda j: ("shop/cam1", _envelope(_with_broken_huffman_table(j[0])))),
    "decompression bomb 50000x50000": (
        "too_many_pixels",
        lambda j: ("shop/cam1", _envelope(_with_sof_size(j[0], 50000, 50000))),
    ),
    "over max_pixels 8000x8000": (
        "too_many_pixels",
        lambda j: ("shop/cam1", _envelope(_with_sof_size(j[0], 8000, 8000))),
    ),
    "oversize payload": (
        "oversize",
        lambda j: ("shop/cam1", frame_payload(j[0], "shop", "cam1") + b"\0" * MAX_FRAME_BYTES),
    ),
    "unknown site": ("unknown_site", lambda j: ("elsewhere/cam1", frame_payload(j[0], "elsewhere", "cam1"))),
    "unknown camera": ("unknown_camera", lambda j: ("shop/cam9", frame_payload(j[0], "shop", "cam9"))),
    "header/topic mismatch": ("topic_mismatch", lambda j: ("shop/cam1", frame_payload(j[0], "shop", "cam2"))),
    "illegal topic characters": ("bad_topic", lambda j: ("bad site!/cam1", frame_payload(j[0], "shop", "cam1"))),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_is_dead_lettered_and_ingest_goes_on(rig: Rig, jpegs: list[bytes], case: str) -> None:
    reason, make = BAD_INPUTS[case]
    where, payload = make(jpegs)
    rig.publish(f"{rig.topics.prefix}/{where}/frame", payload)
    wait_for(lambda: rig.settled(accepted=0, rejected=1), f"the {case!r} message rejected")
    assert rig.stats.snapshot().rejected == {reason: 1}
    with rig.sessions() as s:
        dead = s.execute(select(DeadLetter)).scalar_one()
    assert dead.reason == reason
    assert dead.topic == f"{rig.topics.prefix}/{where}/frame"
    assert dead.size == len(payload) and dead.detail
    # the first dead_letters.keep_bytes are kept; the detail names the whole payload's size and hash
    keep = rig.settings.dead_letters.keep_bytes
    assert dead.payload_sha256 == hashlib.sha256(payload[:keep]).hexdigest()
    assert rig.store.get(dead.payload_sha256, prefix=DEAD_PREFIX) == payload[:keep]
    if len(payload) > keep:
        assert f"sha256={hashlib.sha256(payload).hexdigest()}" in dead.detail
    assert rig.count(Frame) == 0 and rig.count(Blob) == 0

    rig.frame(frame_payload(jpegs[2], "shop", "cam1"))  # the worker still ingests good frames
    wait_for(lambda: rig.settled(accepted=1, rejected=1), "a good frame after the bad one")
    assert rig.count(Frame) == 1


def test_mixed_batch(rig: Rig, jpegs: list[bytes]) -> None:
    """Good, bad and duplicate messages interleaved: each gets its own outcome, none blocks another."""
    good = [frame_payload(j, "shop", "cam1") for j in jpegs[:6]]
    for i, payload in enumerate(good):
        rig.frame(payload)
        rig.frame(b"garbage %d" % i)
        if i % 2 == 0:
            rig.frame(payload)
    wait_for(lambda: rig.settled(accepted=6, duplicates=3, rejected=6), "the mixed batch")
    assert rig.count(Frame) == 6 and rig.count(DeadLetter) == 6


def test_auto_register_cameras(tmp_path: Path, engine: Engine, mosquitto, jpegs: list[bytes]) -> None:  # type: ignore[no-untyped-def]
    with make_rig(tmp_path, engine, mosquitto.host, mosquitto.port, auto_register_cameras=True) as rig:
        rig.frame(frame_payload(jpegs[0], "shop", "new-cam"), site="shop", camera="new-cam")
        rig.frame(frame_payload(jpegs[1], "nowhere", "cam"), site="nowhere", camera="cam")
        wait_for(lambda: rig.settled(accepted=1, rejected=1), "one accepted, unknown site still rejected")
        with rig.sessions() as s:
            assert set(s.execute(select(Camera.name)).scalars()) == {"cam1", "new-cam"}
        assert rig.stats.snapshot().rejected == {"unknown_site": 1}


# ---------------------------------------------------------------- agent status


def test_agent_status_registers_agent_and_cameras(rig: Rig, jpegs: list[bytes]) -> None:
    status = AgentStatus(state="online", agent="edge1", site="shop", software_version="0.1.0", cameras=["cam7"])
    rig.publish(rig.topics.status("shop", "edge1"), to_json(status), retain=True)
    wait_for(lambda: rig.stats.snapshot().statuses == 1, "the status handled")
    with rig.sessions() as s:
        agent = s.execute(select(Agent)).scalar_one()
        assert (agent.name, agent.state, agent.software_version) == ("edge1", "online", "0.1.0")
        assert agent.status is not None and agent.status["cameras"] == ["cam7"]
        camera = s.execute(select(Camera).where(Camera.name == "cam7")).scalar_one()
        assert camera.agent == "edge1"  # claimed by the first status that names it

    rig.frame(frame_payload(jpegs[1], "shop", "cam7", agent="agent1"), camera="cam7")  # not its owner
    wait_for(lambda: rig.settled(accepted=0, rejected=1), "frame of another agent refused")
    with rig.sessions() as s:
        dead = s.execute(select(DeadLetter)).scalar_one()
        assert dead.reason == "bad_header"
        assert dead.detail.startswith("camera 'cam7' belongs to agent 'edge1', not 'agent1'")
    rig.frame(
        frame_payload(jpegs[0], "shop", "cam7", agent="edge1"), camera="cam7"
    )  # a camera registered by the status
    wait_for(lambda: rig.settled(accepted=1, rejected=1), "frame of the registered camera")

    rig.publish(rig.topics.status("shop", "edge1"), b"offline", retain=True)  # the last-will payload
    wait_for(lambda: rig.stats.snapshot().statuses == 2, "the offline status handled")
    with rig.sessions() as s:
        agent = s.execute(select(Agent)).scalar_one()
        assert agent.state == "offline"
        assert agent.status is not None and agent.status["cameras"] == ["cam7"]  # last full status kept
    rig.publish(rig.topics.status("shop", "edge1"), b"", retain=True)  # clean up the retained message


def test_a_status_dated_in_the_future_does_not_freeze_the_agent(rig: Rig) -> None:
    """A skewed or hostile clock (year 9000) must not make the agent's later, genuine statuses look older."""
    far = AgentStatus(state="online", agent="edge9", site="shop", ts=datetime(9000, 1, 1, tzinfo=UTC), cameras=["c1"])
    rig.publish(rig.topics.status("shop", "edge9"), to_json(far))
    wait_for(lambda: rig.stats.snapshot().statuses == 1, "the future-dated status handled")
    genuine = AgentStatus(state="online", agent="edge9", site="shop", cameras=["c2"])
    rig.publish(rig.topics.status("shop", "edge9"), to_json(genuine))
    wait_for(lambda: rig.stats.snapshot().statuses == 2, "the genuine status handled")
    with rig.sessions() as s:
        agent = s.execute(select(Agent).where(Agent.name == "edge9")).scalar_one()
        assert agent.status is not None and agent.status["cameras"] == ["c2"]
        assert agent.last_seen_at is not None and agent.last_seen_at <= datetime.now(UTC)


def test_status_for_a_site_created_later_is_applied(rig: Rig) -> None:
    status = AgentStatus(state="online", agent="edge2", site="later", cameras=["c1"])
    rig.publish(rig.topics.status("later", "edge2"), to_json(status))
    wait_for(lambda: rig.stats.snapshot().statuses == 1, "the status handled")
    assert rig.count(Agent) == 0
    with rig.sessions() as s:
        s.add(Site(name="later"))
        s.commit()
    wait_for(lambda: rig.count(Agent) == 1, "the kept status applied once the site exists")
    with rig.sessions() as s:
        assert s.execute(select(Camera.name).join(Site).where(Site.name == "later")).scalar_one() == "c1"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "bad_status"),
        (b'{"state": "online", "agent": "other", "site": "shop"}', "topic_mismatch"),
    ],
)
def test_bad_status_is_dead_lettered(rig: Rig, payload: bytes, reason: str) -> None:
    rig.publish(rig.topics.status("shop", "edge3"), payload)
    wait_for(lambda: rig.stats.snapshot().rejected_total == 1, "status rejected")
    with rig.sessions() as s:
        assert s.execute(select(DeadLetter.reason)).scalar_one() == reason
    assert rig.count(Agent) == 0


def test_camera_announced_and_used_at_once(rig: Rig, jpegs: list[bytes]) -> None:
    """A status and a frame of its new camera published back to back (often one batch): the frame is kept."""
    status = AgentStatus(state="online", agent="edge4", site="shop", cameras=["cam8"])
    rig.pub.publish(rig.topics.status("shop", "edge4"), to_json(status), qos=1)
    rig.frame(frame_payload(jpegs[0], "shop", "cam8", agent="edge4"), camera="cam8")
    wait_for(lambda: rig.settled(accepted=1), "the frame of the just-announced camera")
