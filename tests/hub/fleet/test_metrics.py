"""The hub's Prometheus /metrics: ingest counters, rejections by reason, commit latency, HTTP requests by route
(classify included), agents online; parsed with prometheus_client's own parser; hub admins only."""

from __future__ import annotations

from fastapi.testclient import TestClient
from fleethelpers import API, FleetHub, token_for, wait_for
from prometheus_client.parser import text_string_to_metric_families

from camfleet_contract.messages import AgentStatus, to_json
from camfleet_hub.auth.models import Role


def _samples(fleet: FleetHub) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = fleet.client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_follow_the_hub(sqlite_fleet: FleetHub) -> None:
    fleet = sqlite_fleet
    fleet.site("shop")
    before = _samples(fleet)
    assert before[("camfleet_hub_ingest_events_total", ())] == 0

    fleet.event()
    fleet.event()
    fleet.publish(fleet.topics.event("shop", "cam1"), b"{}")
    status = AgentStatus(state="online", agent="agent1", site="shop", cameras=["cam1"])
    fleet.publish(fleet.topics.status("shop", "agent1"), to_json(status), retain=True)
    wait_for(lambda: fleet.stats().events == 2 and fleet.stats().statuses == 1, "events and status handled")
    fleet.client.post(f"{API}/classify", data={"site": "shop", "classifier": "nope"}, files={"image": ("a.jpg", b"x")})

    after = _samples(fleet)
    assert after[("camfleet_hub_ingest_events_total", ())] == 2
    assert after[("camfleet_hub_ingest_rejected_total", (("reason", "bad_event"),))] == 1
    assert after[("camfleet_hub_agents_online", (("site", "shop"),))] == 1
    assert after[("camfleet_hub_ingest_commit_seconds_count", ())] >= 1
    assert ("camfleet_hub_ingest_queue_depth", ()) in after
    classify = [
        v
        for (name, labels), v in after.items()
        if name == "camfleet_hub_http_requests_total" and ("route", "/api/v1/classify") in labels
    ]
    assert sum(classify) == 1
    latency = ("camfleet_hub_http_request_seconds_count", (("method", "POST"), ("route", "/api/v1/classify")))
    assert after[latency] == 1
    # A path that matches no route is one label value, whatever the path.
    fleet.client.get("/no/such/path/1")
    fleet.client.get("/no/such/path/2")
    unmatched = _samples(fleet)[
        ("camfleet_hub_http_requests_total", (("method", "GET"), ("route", "unmatched"), ("status", "404")))
    ]
    assert unmatched == 2


def test_metrics_need_a_hub_admin(sqlite_fleet: FleetHub) -> None:
    fleet = sqlite_fleet
    fleet.site("shop")
    viewer = {"Authorization": f"Bearer {token_for(fleet.services, 'shop', Role.ADMIN)}"}
    assert fleet.client.get("/metrics", headers=viewer).status_code == 403
    anonymous = TestClient(fleet.client.app).get("/metrics", follow_redirects=False)
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
