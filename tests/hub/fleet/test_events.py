"""Event history: agents' events through the real Mosquitto into SQL (SQLite and PostgreSQL), queried over REST
with filters, cursor pages and CSV; per-camera hourly counts; retention per site; site roles."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import numpy as np
from fastapi.testclient import TestClient
from fleethelpers import API, FleetHub, token_for, wait_for
from sqlalchemy import select

from camfleet_contract.messages import Event, to_json
from camfleet_hub.auth.models import Role
from camfleet_hub.datasets.models import Site
from camfleet_hub.serving.models import PredictionLog
from camfleet_hub.serving.ranking import SCORE_DTYPE
from camfleet_hub.serving.service import class_list_id


def _stored(fleet: FleetHub, n: int) -> None:
    wait_for(lambda: fleet.stats().events == n, f"{n} events stored")


def test_events_are_stored_and_filtered(fleet: FleetHub) -> None:
    fleet.site("shop", ("cam1", "cam2"))
    now = datetime.now(UTC)
    sent: list[Event] = []
    for i in range(7):  # cam1 door events, one per minute back in time; every third an anomaly
        sent.append(fleet.event(ts=now - timedelta(minutes=i), label="open" if i % 2 else "closed", anomaly=i % 3 == 0))
    sent.append(fleet.event(camera="cam2", classifier="lights", label="on", ts=now - timedelta(hours=3)))
    _stored(fleet, 8)

    page = fleet.client.get(f"{API}/events", params={"site": "shop"}).json()
    assert [e["event_id"] for e in page["items"]] == [
        e.event_id for e in sorted(sent, key=lambda e: e.ts, reverse=True)
    ]
    first = page["items"][0]
    assert first["predictions"] == [{"label": "open", "probability": 0.9}, {"label": "closed", "probability": 0.1}]
    assert first["site"] == "shop" and first["camera"] == "cam1" and first["agent"] == "agent1"

    def ids(**params: object) -> set[str]:
        r = fleet.client.get(f"{API}/events", params={"site": "shop", **params})
        assert r.status_code == 200, r.text
        return {e["event_id"] for e in r.json()["items"]}

    assert ids(camera="cam2") == {sent[7].event_id}
    assert ids(classifier="lights") == {sent[7].event_id}
    assert ids(label="open") == {e.event_id for e in sent if e.label == "open"}
    assert ids(anomaly="true") == {e.event_id for e in sent if e.anomaly}
    assert ids(anomaly="false", camera="cam1") == {e.event_id for e in sent[:7] if not e.anomaly}
    since = (now - timedelta(minutes=2, seconds=30)).isoformat()
    assert ids(since=since) == {e.event_id for e in sent[:3]}
    assert ids(until=since) == {e.event_id for e in sent[3:]}


def test_cursor_pages_cover_everything_once(fleet: FleetHub) -> None:
    fleet.site()
    ts = datetime.now(UTC).replace(microsecond=0)
    sent = [fleet.event(ts=ts - timedelta(seconds=i // 2)) for i in range(11)]  # pairs share a timestamp
    _stored(fleet, 11)
    seen: list[str] = []
    cursor = None
    for _ in range(10):  # bounded: 11 events in pages of 3 are 4 pages
        params = {"site": "shop", "limit": 3, **({"cursor": cursor} if cursor else {})}
        body = fleet.client.get(f"{API}/events", params=params).json()
        seen += [e["event_id"] for e in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(e.event_id for e in sent) and len(seen) == 11
    bad = fleet.client.get(f"{API}/events", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 422 and "cursor" in bad.json()["detail"]
    naive = fleet.client.get(f"{API}/events", params={"since": "2026-01-01T00:00:00"})
    assert naive.status_code == 422 and "since" in naive.json()["detail"]


def test_csv_export_and_hourly_counts(sqlite_fleet: FleetHub) -> None:
    fleet = sqlite_fleet
    fleet.site()
    now = datetime.now(UTC)
    hour_ago = now - timedelta(hours=1)
    fleet.event(ts=now, label="open")
    fleet.event(ts=now, label="open", anomaly=True)
    fleet.event(ts=hour_ago, label="closed")
    fleet.event(ts=now, classifier="lights", label="on")
    _stored(fleet, 4)

    r = fleet.client.get(f"{API}/events", params={"site": "shop", "format": "csv", "classifier": "door"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 3 and {row["label"] for row in rows} == {"open", "closed"}
    assert rows[0]["predictions"].startswith("[{")

    counts = fleet.client.get(f"{API}/sites/shop/cameras/cam1/event-counts", params={"hours": 3}).json()
    by_key = {(c["hour"][:13], c["classifier"], c["label"]): (c["count"], c["anomalies"]) for c in counts}
    h_now = now.strftime("%Y-%m-%dT%H")
    assert by_key[(h_now, "door", "open")] == (2, 1)
    assert by_key[(hour_ago.strftime("%Y-%m-%dT%H"), "door", "closed")] == (1, 0)
    assert by_key[(h_now, "lights", "on")] == (1, 0)


def test_redelivery_bad_events_and_unknown_sites(sqlite_fleet: FleetHub) -> None:
    fleet = sqlite_fleet
    fleet.site()
    event = fleet.event()
    _stored(fleet, 1)
    fleet.publish(fleet.topics.event("shop", "cam1"), to_json(event))  # the broker redelivers: a no-op
    wait_for(lambda: fleet.stats().event_duplicates == 1, "the duplicate counted")
    other = fleet.event(camera="cam9").model_copy(update={"event_id": "x1"})
    fleet.publish(fleet.topics.event("shop", "cam1"), to_json(other))  # body says cam9, topic cam1
    fleet.publish(fleet.topics.event("shop", "cam1"), b'{"not": "an event"}')
    fleet.event(site="nowhere")
    wait_for(lambda: fleet.stats().rejected_total >= 3, "three rejections")
    rejected = fleet.stats().rejected
    assert rejected["topic_mismatch"] == 1 and rejected["bad_event"] == 1 and rejected["unknown_site"] == 1
    wait_for(lambda: fleet.stats().events == 2, "the cam9 event on its own topic stored")
    body = fleet.client.get(f"{API}/events", params={"site": "shop"}).json()
    assert {e["camera"] for e in body["items"]} == {"cam1", "cam9"} and len(body["items"]) == 2


def test_retention_per_site(sqlite_fleet: FleetHub) -> None:
    fleet = sqlite_fleet
    fleet.site("shop")
    fleet.site("plant")
    now = datetime.now(UTC)
    old_shop = fleet.event(ts=now - timedelta(days=40))
    fleet.event(ts=now - timedelta(days=1))
    old_plant = fleet.event(site="plant", ts=now - timedelta(days=40))
    _stored(fleet, 3)
    r = fleet.client.patch(f"{API}/sites/plant/fleet-settings", json={"event_retention_days": 60})
    assert r.status_code == 200 and r.json()["event_retention_days"] == 60
    bad = fleet.client.patch(f"{API}/sites/plant/fleet-settings", json={"event_retention_days": 0})
    assert bad.status_code == 422 and "event_retention_days" in bad.text

    logged = {site: _prediction_logs(fleet, site, now - timedelta(days=40), now) for site in ("shop", "plant")}

    assert fleet.services.fleet is not None
    assert fleet.services.fleet.sweep_now() == 1  # shop keeps 30 days (default), plant 60
    shop = {e["event_id"] for e in fleet.client.get(f"{API}/events", params={"site": "shop"}).json()["items"]}
    plant = {e["event_id"] for e in fleet.client.get(f"{API}/events", params={"site": "plant"}).json()["items"]}
    assert old_shop.event_id not in shop and len(shop) == 1
    assert plant == {old_plant.event_id}
    # REST prediction logs age out in the same sweep, by the same per-site retention (reading them deletes nothing)
    with fleet.services.sessions() as session:
        kept = set(session.scalars(select(PredictionLog.id)))
    assert kept == {logged["shop"][1], *logged["plant"]}


def test_an_event_dated_in_the_future_is_stored_at_the_hubs_time(sqlite_fleet: FleetHub) -> None:
    """Dated year 9000 (a skewed or hostile clock), it would head every list and outlive every retention."""
    fleet = sqlite_fleet
    fleet.site()
    far = fleet.event(ts=datetime(9000, 1, 1, tzinfo=UTC))
    _stored(fleet, 1)
    item = fleet.client.get(f"{API}/events", params={"site": "shop"}).json()["items"][0]
    assert item["event_id"] == far.event_id
    assert datetime.fromisoformat(item["ts"]) <= datetime.now(UTC)


def _prediction_logs(fleet: FleetHub, site: str, *times: datetime) -> list[int]:
    """One prediction log row per time in ``site``; their ids."""
    with fleet.services.sessions() as session:
        site_id = session.scalars(select(Site.id).where(Site.name == site)).one()
        rows = [
            PredictionLog(
                site_id=site_id,
                classifier="door",
                model_version=1,
                caller="t",
                route="classify",
                label="open",
                probability=0.9,
                class_list_id=class_list_id(session, ["open"]),
                scores=np.asarray([0.9], SCORE_DTYPE).tobytes(),
                created_at=t,
            )
            for t in times
        ]
        session.add_all(rows)
        session.commit()
        return [r.id for r in rows]


def test_site_roles(sqlite_fleet: FleetHub) -> None:
    fleet = sqlite_fleet
    fleet.site("shop")
    fleet.site("plant")
    fleet.event()
    mine = fleet.event(site="plant")
    _stored(fleet, 2)
    viewer = {"Authorization": f"Bearer {token_for(fleet.services, 'plant', Role.VIEWER)}"}
    denied = fleet.client.get(f"{API}/events", params={"site": "shop"}, headers=viewer)
    assert denied.status_code == 403 and "shop" in denied.json()["detail"]
    everything = fleet.client.get(f"{API}/events", headers=viewer).json()
    assert [e["event_id"] for e in everything["items"]] == [mine.event_id]
    assert fleet.client.get(f"{API}/sites/shop/cameras/cam1/event-counts", headers=viewer).status_code == 403
    patch = fleet.client.patch(f"{API}/sites/plant/fleet-settings", json={"homeassistant": False}, headers=viewer)
    assert patch.status_code == 403
    anonymous = TestClient(fleet.client.app).get(f"{API}/events")
    assert anonymous.status_code == 401
