"""A model's behaviour after a swap, as agents report it in their retained status over the real Mosquitto: the hub
stores the figures per agent and version and flags a version whose anomaly rate jumps against the one before
(over REST on the rollout route, and as an alert on the fleet page)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fleethelpers import API, FleetHub, wait_for

from camfleet_contract.messages import AgentStatus, FirstFrames, SwapBehaviour, to_json
from camfleet_hub.fleet import behaviour

ROLLOUT = f"{API}/sites/shop/classifiers/clothes/rollout"
T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def ff(version: str, rate: float, frames: int = 200, hours: int = 0, complete: bool = True) -> FirstFrames:
    return FirstFrames(
        version=version,
        since=T0 + timedelta(hours=hours),
        frames=frames,
        anomaly_rate=rate,
        mean_confidence=0.8,
        complete=complete,
    )


def status(fleet: FleetHub, agent: str, current: FirstFrames, previous: FirstFrames | None = None) -> None:
    msg = AgentStatus(
        state="online",
        agent=agent,
        site="shop",
        models={"clothes": current.version},
        first_frames={"clothes": SwapBehaviour(current=current, previous=previous)},
    )
    fleet.publish(fleet.topics.status("shop", agent), to_json(msg), retain=True)


def rollout_agent(fleet: FleetHub, agent: str) -> dict[str, Any]:
    return next(a for a in fleet.client.get(ROLLOUT).json()["agents"] if a["agent"] == agent)


def test_a_version_whose_anomaly_rate_jumps_is_flagged_per_agent(fleet: FleetHub) -> None:
    fleet.site("shop", ("cam1",))
    assert fleet.client.post(f"{API}/sites/shop/classifiers", json={"name": "clothes"}).status_code == 201
    v1 = ff("1", 0.04)
    status(fleet, "agent1", ff("2", 0.40, hours=5), v1)  # 10x and +36 points: a jump
    status(fleet, "agent2", ff("2", 0.12, hours=5), v1)  # 3x but only +8 points: no jump
    status(fleet, "agent3", ff("2", 1.0, frames=5, hours=5, complete=False), v1)  # 5 frames: too early to say
    wait_for(lambda: fleet.stats().statuses == 3, "three statuses stored")

    body = fleet.client.get(ROLLOUT).json()
    assert body["flagged_versions"] == ["2"]
    assert [(j["agent"], j["version"], j["previous"]) for j in body["anomaly_jumps"]] == [("agent1", "2", "1")]
    jump = body["anomaly_jumps"][0]
    assert (jump["anomaly_rate"], jump["previous_rate"], jump["frames"]) == (0.40, 0.04, 200)
    a1 = rollout_agent(fleet, "agent1")
    assert a1["first_frames"]["version"] == "2" and a1["first_frames"]["complete"]
    assert a1["previous_frames"]["version"] == "1" and a1["previous_frames"]["anomaly_rate"] == 0.04

    page = fleet.client.get("/ui/fleet").text
    assert page.count("anomaly rate jump") >= 2  # the agent's card and the rollout block
    assert "clothes v2: anomaly rate 40% over its first 200 frames, was 4% with v1" in page
    alerts = fleet.client.get("/ui/fleet", params={"state": "alert"}).text
    assert 'data-agent="agent1"' in alerts and 'data-agent="agent2"' not in alerts

    # agent3's count grows past the minimum: now it is a jump too.
    status(fleet, "agent3", ff("2", 0.5, frames=40, hours=5, complete=False), v1)
    wait_for(
        lambda: {j["agent"] for j in fleet.client.get(ROLLOUT).json()["anomaly_jumps"]} == {"agent1", "agent3"},
        "agent3 flagged once 40 frames back the figure",
    )
    # A restarted agent no longer knows the previous version's figures: the hub still does.
    status(fleet, "agent1", ff("2", 0.40, hours=5))
    wait_for(lambda: fleet.stats().statuses == 5, "the restarted agent's status")
    assert [j["agent"] for j in fleet.client.get(ROLLOUT).json()["anomaly_jumps"]] == ["agent1", "agent3"]
    # Rolled back to v1 on agent1: v1's fresh figures compare against v2, and v1 is no jump against v2.
    status(fleet, "agent1", ff("1", 0.05, hours=9), ff("2", 0.40, hours=5))
    wait_for(lambda: rollout_agent(fleet, "agent1")["first_frames"]["version"] == "1", "agent1 back on v1")
    assert [j["agent"] for j in fleet.client.get(ROLLOUT).json()["anomaly_jumps"]] == ["agent3"]


def test_the_jump_rule_needs_both_the_factor_and_the_points() -> None:
    old = behaviour.Figures("1", T0, 200, 0.20, 0.8, True)

    def new(rate: float, frames: int = 200, complete: bool = True) -> behaviour.Figures:
        return behaviour.Figures("2", T0, frames, rate, 0.8, complete)

    assert behaviour.is_jump(new(0.40), old)  # 2x and +20 points
    assert not behaviour.is_jump(new(0.35), old)  # +15 points but not 2x
    assert not behaviour.is_jump(new(0.05), behaviour.Figures("1", T0, 200, 0.0, 0.8, True))  # +5 points from 0
    assert not behaviour.is_jump(new(0.9, frames=behaviour.JUMP_MIN_FRAMES - 1, complete=False), old)
    assert behaviour.is_jump(new(0.9, frames=3, complete=True), old)  # the minutes ran out: the count is final
