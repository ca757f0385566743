"""An attacker holding an agent's MQTT credentials publishes hostile messages on its own topics.

The broker lets an agent publish events, frames and its status under its own site (docs/SECURITY.md, "MQTT
access"); what it writes there must never crash, stall or poison the hub for every site. Each case publishes a
message that passes the topic rules, then a good one right behind it, and checks that the hostile one is refused
as *its own* fault (a named reason, not ``internal_error`` after the worker's retries and back-off, which stall
every site's ingest for seconds per message) and that the good one is stored and the API still answers.
SQLite and PostgreSQL: PostgreSQL refuses NUL characters, ``NaN`` in JSON and over-long strings that SQLite keeps.
"""

from __future__ import annotations

import io
import json
import struct
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hub" / "fleet"))  # the fleet tests' helpers

from fleethelpers import API, FleetHub, started_fleet  # noqa: E402

from camfleet_contract.envelope import MAGIC, new_header  # noqa: E402
from camfleet_hub.datasets.models import Camera  # noqa: E402
from camfleet_hub.fleet.models import Agent  # noqa: E402
from camfleet_hub.ingest.models import DeadLetter  # noqa: E402
from tests.support.polling import unique, wait_for  # noqa: E402


@pytest.fixture(params=["sqlite", "postgresql"])
def fleet(request: pytest.FixtureRequest, tmp_path: Path, mosquitto: Any) -> Iterator[FleetHub]:
    """A started hub with ingest on the session Mosquitto (its own topic root), site ``shop`` with camera ``cam1``."""
    db_url = f"sqlite:///{tmp_path / 'hub.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    with started_fleet(tmp_path / "h", db_url, mosquitto) as f:
        f.site("shop", ("cam1",))
        yield f


def _event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": unique("e"),
        "frame_id": unique("f"),
        "ts": datetime.now(UTC).isoformat(),
        "site": "shop",
        "camera": "cam1",
        "agent": "agent1",
        "classifier": "door",
        "model_version": "3",
        "label": "open",
        "probability": 0.9,
        "predictions": [{"label": "open", "probability": 0.9}],
        "anomaly": False,
        "anomaly_score": 0.1,
        "latency_ms": 4.0,
    }
    return base | fields


def _raw(doc: dict[str, Any], **raw: str) -> bytes:
    """``doc`` as JSON with some values spelled as raw JSON text (``NaN``, ``Infinity``: what ``json`` cannot say)."""
    text = json.dumps(doc)[:-1]
    return (text + "".join(f', "{k}": {v}' for k, v in raw.items()) + "}").encode()


def _status(**fields: Any) -> dict[str, Any]:
    return {"state": "online", "agent": "agent1", "site": "shop", "ts": datetime.now(UTC).isoformat()} | fields


def _dead(fleet: FleetHub, topic: str) -> list[tuple[str, str]]:
    with fleet.services.sessions() as s:
        return [(r.reason, r.detail) for r in s.scalars(select(DeadLetter).where(DeadLetter.topic == topic))]


def _refused_then_good_stored(fleet: FleetHub, topic: str, hostile: bytes, reason: str) -> None:
    """Publish ``hostile`` then a good event; the hostile one is a dead letter of ``reason``, the good one stored."""
    before = fleet.stats().events
    fleet.publish(topic, hostile)
    good = _event()
    fleet.publish(fleet.topics.event("shop", "cam1"), json.dumps(good).encode())
    dead = wait_for(lambda: _dead(fleet, topic), f"the hostile message on {topic} refused")
    assert [r for r, _ in dead] == [reason], dead
    wait_for(lambda: fleet.stats().events >= before + 1, "the good event behind it stored")
    r = fleet.client.get(f"{API}/events", params={"site": "shop"})
    assert r.status_code == 200, r.text
    assert good["event_id"] in {e["event_id"] for e in r.json()["items"]}


NON_FINITE = {
    "latency Infinity": {"latency_ms": "Infinity"},
    "motion NaN": {"motion": "NaN"},
    "motion -Infinity": {"motion": "-Infinity"},
}


@pytest.mark.parametrize("raw", NON_FINITE.values(), ids=NON_FINITE.keys())
def test_event_with_non_finite_numbers_is_refused(fleet: FleetHub, raw: dict[str, str]) -> None:
    """Before: stored, and then ``GET /events`` answered 500 for every reader of the site (JSON has no NaN)."""
    doc = {k: v for k, v in _event().items() if k not in raw}
    topic = fleet.topics.event("shop", "cam1")
    _refused_then_good_stored(fleet, topic, _raw(doc, **raw), "bad_event")
    assert "finite" in _dead(fleet, topic)[0][1]


OVERFLOW = {  # valid ISO 8601 instants that Python cannot express in UTC
    "after year 9999": "9999-12-31T23:59:59-05:00",
    "before year 1": "0001-01-01T00:00:00+05:00",
}


@pytest.mark.parametrize("ts", OVERFLOW.values(), ids=OVERFLOW.keys())
def test_event_timestamp_outside_utc_range_is_refused(fleet: FleetHub, ts: str) -> None:
    """Before: the batch raised OverflowError, was retried with back-off, then split: ~6 s of stalled ingest for
    every site per message, and the message ended as ``internal_error``."""
    topic = fleet.topics.event("shop", "cam1")
    _refused_then_good_stored(fleet, topic, json.dumps(_event(ts=ts)).encode(), "bad_event")


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(out, "JPEG")
    return out.getvalue()


def test_frame_capture_time_outside_utc_range_is_refused(fleet: FleetHub) -> None:
    jpeg = _jpeg()
    header = new_header("agent1", "shop", "cam1", jpeg, 8, 8).model_dump(mode="json")
    header["captured_at"] = "9999-12-31T23:59:59-05:00"
    head = json.dumps(header).encode()
    payload = MAGIC + struct.pack(">I", len(head)) + head + jpeg
    _refused_then_good_stored(fleet, fleet.topics.frame("shop", "cam1"), payload, "bad_header")


def test_event_with_nul_character_is_refused(fleet: FleetHub) -> None:
    """Before, on PostgreSQL: text columns cannot hold NUL, so the batch failed like the timestamps above."""
    topic = fleet.topics.event("shop", "cam1")
    _refused_then_good_stored(fleet, topic, json.dumps(_event(label="open\u0000")).encode(), "bad_event")


STATUSES: dict[str, Callable[[], bytes]] = {
    "fps NaN": lambda: _raw(_status(), fps='{"cam1": NaN}'),
    "NUL in a problem": lambda: json.dumps(_status(problems=["bad\u0000"])).encode(),
    "software version of 200 characters": lambda: json.dumps(_status(software_version="9" * 200)).encode(),
    "ts after year 9999": lambda: json.dumps(_status(ts="9999-12-31T23:59:59-05:00")).encode(),
    "first-frames classifier of 100 characters": lambda: json.dumps(
        _status(
            first_frames={
                "c" * 100: {
                    "current": {
                        "version": "1",
                        "since": datetime.now(UTC).isoformat(),
                        "frames": 1,
                        "anomaly_rate": 0.0,
                        "mean_confidence": 0.5,
                        "complete": False,
                    }
                }
            }
        )
    ).encode(),
}


@pytest.mark.parametrize("payload", STATUSES.values(), ids=STATUSES.keys())
def test_hostile_status_never_poisons_ingest(fleet: FleetHub, payload: Callable[[], bytes]) -> None:
    """An agent's own status: refused (``bad_status``) or stored as far as it is storable, never ``internal_error``."""
    topic = fleet.topics.status("shop", "agent1")
    fleet.publish(topic, payload())
    good = _event()
    fleet.publish(fleet.topics.event("shop", "cam1"), json.dumps(good).encode())
    wait_for(lambda: fleet.stats().events >= 1, "the good event behind it stored")
    wait_for(lambda: fleet.stats().statuses + fleet.stats().rejected_total >= 1, "the status handled")
    assert all(reason != "internal_error" for reason, _ in _dead(fleet, topic)), _dead(fleet, topic)
    r = fleet.client.get(f"{API}/sites/shop")
    assert r.status_code == 200, r.text
    with fleet.services.sessions() as s:
        agent = s.scalars(select(Agent)).first()
    if agent is not None and agent.software_version is not None:
        assert len(agent.software_version) <= 64


def test_frame_header_nested_too_deep_is_refused(fleet: FleetHub) -> None:
    """Before: ``json.loads`` raised RecursionError (not a ValueError) out of the envelope decoder, so the batch
    failed, was retried with back-off and the frame ended as ``internal_error``."""
    head = b"[" * 60_000
    payload = MAGIC + struct.pack(">I", len(head)) + head + _jpeg()
    _refused_then_good_stored(fleet, fleet.topics.frame("shop", "cam1"), payload, "bad_header")


@pytest.mark.parametrize("kind", ["event", "frame"])
def test_a_message_naming_another_agent_on_an_owned_camera_is_refused(fleet: FleetHub, kind: str) -> None:
    """cam1 is agent1's once its status names it: an event or frame header on cam1 naming agent2 is refused (the
    topic rules let any agent of the site write cam1's topics on Mosquitto until the export is run again)."""
    fleet.publish(fleet.topics.status("shop", "agent1"), json.dumps(_status(cameras=["cam1"])).encode())

    def owner() -> str | None:
        with fleet.services.sessions() as s:
            return s.scalar(select(Camera.agent).where(Camera.name == "cam1"))

    wait_for(lambda: owner() == "agent1", "cam1 claimed by agent1's status")
    if kind == "event":
        topic, hostile, reason = (
            fleet.topics.event("shop", "cam1"),
            json.dumps(_event(agent="agent2")).encode(),
            "bad_event",
        )
    else:
        jpeg = _jpeg()
        head = json.dumps(new_header("agent2", "shop", "cam1", jpeg, 8, 8).model_dump(mode="json")).encode()
        hostile = MAGIC + struct.pack(">I", len(head)) + head + jpeg
        topic, reason = fleet.topics.frame("shop", "cam1"), "bad_header"
    _refused_then_good_stored(fleet, topic, hostile, reason)
    assert _dead(fleet, topic)[0][1].startswith("camera 'cam1' belongs to agent 'agent1', not 'agent2'")
