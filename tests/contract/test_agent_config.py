"""The per-camera settings the hub will deliver: regions, gate, upload rules, refusals that name the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from camfleet_contract.agent_config import AgentConfig, CameraConfig, Region, UploadRule


def test_rect_and_polygon_regions() -> None:
    rect = Region(rect=(0.1, 0.2, 0.5, 0.9))
    assert rect.points() == [(0.1, 0.2), (0.5, 0.2), (0.5, 0.9), (0.1, 0.9)]
    poly = Region(polygon=[(0.2, 0.1), (0.8, 0.3), (0.4, 0.7)])
    assert poly.bounds() == (0.2, 0.1, 0.8, 0.7)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "exactly one of rect"),
        ({"rect": (0, 0, 1, 1), "polygon": [(0, 0), (1, 0), (1, 1)]}, "exactly one of rect"),
        ({"rect": (0.5, 0.0, 0.1, 1.0)}, "x0 < x1"),
        ({"rect": (0.0, 0.0, 1.5, 1.0)}, "less than or equal to 1"),
        ({"polygon": [(0, 0), (1, 0)]}, "at least 3"),
        ({"polygon": [(0, 0.5), (0.5, 0.5), (1, 0.5)]}, "no area"),
    ],
)
def test_bad_regions_are_refused(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Region.model_validate(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"rule": "sample"}, "exactly one of every_n or every_s"),
        ({"rule": "sample", "every_n": 5, "every_s": 10}, "exactly one of every_n or every_s"),
        ({"rule": "low_confidence"}, "needs below"),
        ({"rule": "anomalous", "below": 0.5}, "below applies to rule 'low_confidence' only"),
        ({"rule": "class_change", "every_n": 3}, "every_n / every_s apply to rule 'sample' only"),
        ({"rule": "sample", "every_n": 0}, "greater than or equal to 1"),
        ({"rule": "uploaded_by_magic"}, "rule"),
        ({"rule": "anomalous", "per_week": 3}, "per_week"),
    ],
)
def test_bad_upload_rules_are_refused(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        UploadRule.model_validate(data)


def test_camera_round_trips_and_refuses_duplicates() -> None:
    cam = CameraConfig(
        name="gate",
        source="rtsp://10.0.0.5/s",
        classifiers=[{"classifier": "door", "region": {"rect": [0.1, 0.2, 0.5, 0.9]}}, {"classifier": "lights"}],
        gate={"sensitivity": 0.7, "mask": [[[0, 0], [1, 0], [1, 0.1]]]},
        uploads=[{"rule": "sample", "every_s": 30, "daily_cap": 100}, {"rule": "low_confidence", "below": 0.6}],
    )
    assert CameraConfig.model_validate_json(cam.model_dump_json()) == cam
    with pytest.raises(ValidationError, match="'door' is listed twice"):
        CameraConfig(name="gate", source="0", classifiers=[{"classifier": "door"}, {"classifier": "door"}])
    with pytest.raises(ValidationError, match="'gate' is used twice"):
        AgentConfig(version=1, cameras=[cam, cam])
    with pytest.raises(ValidationError, match="sensitivity"):
        CameraConfig(name="gate", source="0", gate={"sensitivity": 2})


def test_an_agent_runs_at_most_max_agent_cameras() -> None:
    """The hub's settings, the agent's own and its status are bounded alike, so a status the agent sends is never
    refused for its length and a stolen agent login cannot name thousands of cameras."""
    from camfleet_agent.config import AgentSettings
    from camfleet_contract.agent_config import MAX_AGENT_CAMERAS
    from camfleet_contract.messages import AgentStatus

    names = [f"cam{i}" for i in range(MAX_AGENT_CAMERAS + 1)]
    cameras = [CameraConfig(name=n, source="0") for n in names]
    assert len(AgentConfig(version=1, cameras=cameras[:-1]).cameras) == MAX_AGENT_CAMERAS
    with pytest.raises(ValidationError, match=f"at most {MAX_AGENT_CAMERAS}"):
        AgentConfig(version=1, cameras=cameras)
    with pytest.raises(ValidationError, match=f"at most {MAX_AGENT_CAMERAS}"):
        AgentStatus(state="online", agent="a1", site="shop", cameras=names)
    with pytest.raises(ValidationError, match=f"at most {MAX_AGENT_CAMERAS}"):
        AgentSettings(site="shop", agent="a1", cameras=[{"name": n, "source": "0"} for n in names])


def test_a_camera_s_parts_are_bounded_on_their_own() -> None:
    """A refusal names the field (a 2 KB source, 32 classifiers, 16 upload rules) rather than only the signed
    message's size; the agent's own settings share the bounds."""
    from camfleet_agent.config import AgentSettings
    from camfleet_contract.agent_config import MAX_CAMERA_CLASSIFIERS, MAX_SOURCE_CHARS, MAX_UPLOAD_RULES

    url = "rtsp://cam.example/" + "a" * (MAX_SOURCE_CHARS - 19)
    assert CameraConfig(name="gate", source=url).source == url
    with pytest.raises(ValidationError, match=f"source\n.*at most {MAX_SOURCE_CHARS} characters"):
        CameraConfig(name="gate", source=url + "a")
    with pytest.raises(ValidationError, match=f"source\n.*at most {MAX_SOURCE_CHARS} characters"):
        AgentSettings(site="shop", agent="a1", cameras=[{"name": "gate", "source": url + "a"}])
    bindings = [{"classifier": f"c{i}"} for i in range(MAX_CAMERA_CLASSIFIERS + 1)]
    assert len(CameraConfig(name="gate", source="0", classifiers=bindings[:-1]).classifiers) == MAX_CAMERA_CLASSIFIERS
    with pytest.raises(ValidationError, match=f"classifiers\n.*at most {MAX_CAMERA_CLASSIFIERS} items"):
        CameraConfig(name="gate", source="0", classifiers=bindings)
    rules = [{"rule": "class_change"}] * (MAX_UPLOAD_RULES + 1)
    assert len(CameraConfig(name="gate", source="0", uploads=rules[:-1]).uploads) == MAX_UPLOAD_RULES
    with pytest.raises(ValidationError, match=f"uploads\n.*at most {MAX_UPLOAD_RULES} items"):
        CameraConfig(name="gate", source="0", uploads=rules)
