"""The fleet pages rendered by the real app: agents with versions against production, cameras with their latest
frame, alerts and filters; a camera's timeline (anomalies marked), settings form (region, refusals), commands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fleethelpers import API, FleetHub, wait_for

from camfleet_contract.messages import AgentStatus, to_json


def _agent(fleet: FleetHub, name: str, **fields: object) -> None:
    status = AgentStatus(state="online", agent=name, site="shop", **fields)  # type: ignore[arg-type]
    fleet.publish(fleet.topics.status("shop", name), to_json(status), retain=True)


def test_fleet_page_shows_agents_cameras_and_alerts(sqlite_fleet: FleetHub) -> None:
    fleet = sqlite_fleet
    fleet.site("shop", ("cam1", "cam2"))
    _agent(
        fleet,
        "agent1",
        cameras=["cam1"],
        fps={"cam1": 2.0},
        gate_ratio={"cam1": 0.25},
        outbox_depth=250,
        software_version="0.9.1",
    )
    _agent(fleet, "agent2", cameras=["cam2"], problems=["model door/3 refused: bad signature"])
    fleet.publish(fleet.topics.status("shop", "agent3"), b"offline", retain=True)  # a last will
    now = datetime.now(UTC)
    for i in range(12):  # cam1: 6 anomalies of 12 in the last hour, none the day before
        fleet.event(ts=now - timedelta(minutes=i), anomaly=i % 2 == 0)
    for i in range(12):
        fleet.event(ts=now - timedelta(hours=5, minutes=i))
    wait_for(lambda: fleet.stats().events == 24 and fleet.stats().statuses == 3, "events and statuses")

    page = fleet.client.get("/ui/fleet")
    assert page.status_code == 200, page.text
    html = page.text
    for text in (
        "agent1",
        "agent2",
        "agent3",
        "cam1",
        "cam2",
        "fps cam1 2.0",
        "classified cam1 25%",
        "v0.9.1",
        "outbox 250",
    ):
        assert text in html, text
    assert "outbox holds 250 messages" in html
    assert "stored 0 files, 0 Bytes" in html  # storage use per site (events alone keep no objects)
    assert "model: model door/3 refused: bad signature" in html
    assert "offline for more than 5 min" in html
    assert "anomaly rate jumped to 50% in the last hour (was 0%)" in html

    online = fleet.client.get("/ui/fleet", params={"state": "online"}).text
    assert 'data-agent="agent1"' in online and 'data-agent="agent3"' not in online
    offline = fleet.client.get("/ui/fleet", params={"state": "offline"}).text
    assert 'data-agent="agent3"' in offline and 'data-agent="agent1"' not in offline
    assert fleet.client.get("/ui/fleet", params={"site": "nowhere"}).text.count("fleet-site") == 0


def test_camera_page_timeline_settings_and_commands(sqlite_fleet: FleetHub) -> None:
    fleet = sqlite_fleet
    fleet.site("shop", ("cam1",))
    assert fleet.client.post(f"{API}/sites/shop/classifiers", json={"name": "door"}).status_code == 201
    _agent(fleet, "agent1", cameras=["cam1"])
    fleet.event(anomaly=True)
    fleet.event(label="closed")
    wait_for(lambda: fleet.stats().events == 2 and fleet.stats().statuses == 1, "events and the status")
    url = "/ui/fleet/sites/shop/cameras/cam1"
    html = fleet.client.get(url).text
    assert "<svg" in html and html.count('class="ev"') == 2 and html.count('class="anomaly"') == 1
    assert "door: open" in html and "door: closed" in html
    assert 'name="agent" value="agent1"' in html

    form = {
        "agent": "agent1",
        "source": "rtsp://cam1/stream",
        "fps": "5",
        "clf_door": "1",
        "region_door": "0.1,0.2,0.6,0.9",
    }
    r = fleet.client.post(
        f"{url}/settings", data={**form, "gate_enabled": "1", "sensitivity": "0.7"}, follow_redirects=False
    )
    assert r.status_code == 303, r.text
    saved = fleet.client.get(f"{API}/sites/shop/agents/agent1/config").json()
    cam = saved["cameras"][0]
    assert saved["version"] == 1 and cam["fps"] == 5 and cam["gate"]["sensitivity"] == 0.7
    assert cam["classifiers"] == [{"classifier": "door", "region": {"rect": [0.1, 0.2, 0.6, 0.9], "polygon": None}}]
    assert "not applied yet" in fleet.client.get(url).text
    _agent(fleet, "agent1", cameras=["cam1"], config_version=1)
    wait_for(lambda: "applied</span>" in fleet.client.get(url).text, "the applied badge")

    bad = fleet.client.post(f"{url}/settings", data={**form, "region_door": "0.6,0.2,0.1,0.9"})
    assert bad.status_code == 422 and "x0 &lt; x1" in bad.text
    worse = fleet.client.post(f"{url}/settings", data={**form, "region_door": "a,b"})
    assert worse.status_code == 422 and "region of &#39;door&#39;" in worse.text
    assert fleet.client.get(f"{API}/sites/shop/agents/agent1/config").json()["version"] == 1

    r = fleet.client.post(f"{url}/commands", data={"agent": "agent1", "command": "snapshot"}, follow_redirects=False)
    assert r.status_code == 303
    assert "snapshot cam1" in fleet.client.get(url).text and "waiting…" in fleet.client.get(url).text
    assert fleet.client.post(f"{url}/commands", data={"agent": "agent1", "command": "rm"}).status_code == 422

    # agent1 owns cam1 (its status named it first): naming agent2 is refused until the box to move it is ticked
    assert "Agent <strong>agent1</strong> owns this camera" in fleet.client.get(url).text
    moved = fleet.client.post(f"{url}/settings", data={**form, "agent": "agent2"})
    assert moved.status_code == 409 and "camera &#39;cam1&#39; belongs to agent &#39;agent1&#39;" in moved.text
    r = fleet.client.post(f"{url}/settings", data={**form, "agent": "agent2", "take_over": "1"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    assert [c["agent"] for c in fleet.client.get(f"{API}/sites/shop/cameras").json()] == ["agent2"]
    assert fleet.client.get(f"{API}/sites/shop/agents/agent2/config").json()["version"] == 1


def test_frames_of_a_none_of_the_above_group_do_not_raise_the_anomaly_rate_alert(fleet: FleetHub) -> None:
    """A model trained with a none group flags the rejected kind by design; on the fleet page those frames count as
    frames, not as anomalies, while other anomalies still raise the alert (SQLite and PostgreSQL)."""
    fleet.site("shop", ("cam1", "cam2"))
    groups = f"{API}/sites/shop/classifiers/door/groups"
    assert fleet.client.post(f"{API}/sites/shop/classifiers", json={"name": "door"}).status_code == 201
    for body in ({"name": "open"}, {"name": "closed"}, {"name": "junk", "none_of_the_above": True}):
        assert fleet.client.post(groups, json=body).status_code == 201
    now = datetime.now(UTC)
    for i in range(12):  # each camera: 6 of 12 flagged in the last hour, none the day before
        flagged = i % 2 == 0
        fleet.event(camera="cam1", ts=now - timedelta(minutes=i), anomaly=flagged, label="junk" if flagged else "open")
        fleet.event(camera="cam2", ts=now - timedelta(minutes=i), anomaly=flagged)
    wait_for(lambda: fleet.stats().events == 24, "events")
    html = fleet.client.get("/ui/fleet").text
    cards = {c: html.split(f'data-camera="{c}"', 1)[1].split("</a>", 1)[0] for c in ("cam1", "cam2")}
    assert "anomaly rate jumped" not in cards["cam1"]
    assert "anomaly rate jumped to 50% in the last hour (was 0%)" in cards["cam2"]
