"""A model's first frames after a swap: counted from the real pipeline's classifications, reported in the status."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import yaml
from bundles import build_bundle

from camfleet_agent.capture import CapturedFrame, open_source
from camfleet_agent.config import AgentSettings, CameraSettings
from camfleet_agent.events import Identity
from camfleet_agent.pipeline import CameraPipeline
from camfleet_agent.swap_watch import SwapWatch, SwapWatchSettings
from camfleet_contract.messages import AgentStatus, Event, from_json
from camfleet_contract.runtime import ClassifierRuntime
from camfleet_contract.signing import public_key_of
from camfleet_contract.topics import Topics

SPEC = yaml.safe_load((Path(__file__).parents[2] / "docs" / "asyncapi.yaml").read_text())


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        if topic.endswith("/event"):
            self.events.append(from_json(Event, payload))
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def frame(seq: int) -> CapturedFrame:
    rgb = np.random.default_rng(seq).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    return CapturedFrame(bgr=rgb, captured_at=datetime.now(UTC), seq=seq)


@pytest.fixture
def bundles(tmp_path: Path, fleet_seed: str) -> dict[str, ClassifierRuntime]:
    build_bundle(tmp_path / "v3", fleet_seed, classifier="clothes", version="3")
    build_bundle(tmp_path / "v4", fleet_seed, classifier="clothes", version="4", model_seed=7)
    key = public_key_of(fleet_seed)
    return {"3": ClassifierRuntime(tmp_path / "v3", key), "4": ClassifierRuntime(tmp_path / "v4", key)}


def figures(events: list[Event]) -> tuple[float, float]:
    return sum(e.anomaly for e in events) / len(events), sum(e.probability for e in events) / len(events)


def test_first_frames_of_a_swapped_model_and_the_previous_ones_match_the_events(
    bundles: dict[str, ClassifierRuntime], image_folder: Path
) -> None:
    active = {"clothes": bundles["3"]}
    completions: list[int] = []
    watch = SwapWatch(SwapWatchSettings(frames=5), on_complete=lambda: completions.append(1))
    rec = Recorder()
    camera = CameraSettings(name="cam", source=str(image_folder), upload_interval_s=0)
    pipeline = CameraPipeline(
        camera, open_source(str(image_folder), 100, loop=False), lambda: active, rec, Identity("s1", "a1", Topics())
    )
    pipeline.on_classified = watch.observe
    for i in range(3):
        pipeline.process(frame(i))
    running = watch.report()["clothes"]
    assert running.previous is None and running.current.version == "3"
    assert running.current.frames == 3 and not running.current.complete and completions == []

    active["clothes"] = bundles["4"]  # the swap: the next frame is classified by version 4
    for i in range(3, 11):
        pipeline.process(frame(i))
    report = watch.report()["clothes"]
    v3 = [e for e in rec.events if e.model_version == "3"]
    v4 = [e for e in rec.events if e.model_version == "4"][:5]  # only the first 5 count
    assert report.previous is not None and report.previous.version == "3" and report.previous.frames == 3
    assert (report.previous.anomaly_rate, report.previous.mean_confidence) == pytest.approx(figures(v3))
    assert report.current.version == "4" and report.current.frames == 5 and report.current.complete
    assert (report.current.anomaly_rate, report.current.mean_confidence) == pytest.approx(figures(v4))
    assert completions == [1]  # the status goes out once, when the count completes


def test_counting_stops_after_the_minutes_even_with_few_frames() -> None:
    clock = Clock()
    watch = SwapWatch(SwapWatchSettings(frames=200, minutes=1), clock=clock)
    watch.observe("k", "2", 0.9, True)
    watch.observe("k", "2", 0.5, False)
    clock.now += 61
    watch.observe("k", "2", 0.1, True)  # after the minute: not counted, and the count is complete
    watch.observe("k", "2", 0.1, True)
    got = watch.report()["k"].current
    assert (got.frames, got.complete) == (2, True)
    assert (got.anomaly_rate, got.mean_confidence) == pytest.approx((0.5, 0.7))
    watch.observe("k", "1", 0.4, False)  # a rollback is a swap too: the previous keeps its figures
    back = watch.report()["k"]
    assert back.current.version == "1" and back.current.frames == 1
    assert back.previous is not None and (back.previous.version, back.previous.frames) == ("2", 2)


def test_the_agents_status_carries_the_figures_and_matches_the_documented_schema(tmp_path: Path) -> None:
    from camfleet_agent.app import Agent

    settings = AgentSettings(agent="a1", site="s1", data_dir=tmp_path, swap_watch={"frames": 2, "minutes": 5})
    agent = Agent(settings)
    assert agent.swap_watch.settings.frames == 2
    agent.swap_watch.observe("clothes", "3", 0.8, False)
    agent.swap_watch.observe("clothes", "3", 0.6, True)
    status = agent.status("online")
    assert status.first_frames["clothes"].current.complete
    doc = status.model_dump(mode="json")
    schema: dict[str, Any] = {**SPEC["components"]["schemas"]["AgentStatus"], "components": SPEC["components"]}
    jsonschema.validate(doc, schema)
    assert from_json(AgentStatus, status.model_dump_json()) == status
    with pytest.raises(ValueError, match="swap_watch.frames"):
        AgentSettings(agent="a1", site="s1", swap_watch={"frames": 0})
