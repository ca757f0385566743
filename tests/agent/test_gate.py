"""The motion gate on synthetic frames (a square moving on a still background) and on the real plaza clip."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from camfleet_agent.gate import MotionGate, polygon_mask
from camfleet_contract.agent_config import GateSettings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def scene(square_at: tuple[int, int] | None = None, size: int = 40, level: int = 230) -> np.ndarray:
    """A 320x240 textured grey background, optionally with a dark square whose top-left is `square_at`."""
    rng = np.random.default_rng(7)
    img = np.clip(120 + rng.normal(0, 3, (240, 320, 1)), 0, 255).astype(np.uint8).repeat(3, axis=2)
    if square_at is not None:
        x, y = square_at
        img[y : y + size, x : x + size] = 255 - level
    return img


def gate(clock: Clock | None = None, **kw: object) -> MotionGate:
    settings = GateSettings.model_validate({"width": 160, "keepalive_s": 0, **kw})
    return MotionGate(settings, clock or Clock())


@pytest.mark.parametrize("method", ["mog2", "diff"])
def test_still_scene_is_gated_and_a_moving_square_is_found(method: str) -> None:
    g = gate(method=method)
    first = g.check(scene())
    assert first.classify and first.reason == "first"
    for _ in range(5):
        d = g.check(scene())
        assert not d.classify and d.reason == "still" and d.motion == 0.0 and d.regions == []
    d = g.check(scene(square_at=(200, 120)))
    assert d.classify and d.reason == "motion"
    assert d.motion is not None and 0.0 < d.motion < 0.2
    x0, y0, x1, y1 = d.regions[0]  # the square: x 200..240 of 320, y 120..160 of 240, give or take the blur
    assert abs(x0 - 200 / 320) < 0.04 and abs(x1 - 240 / 320) < 0.04
    assert abs(y0 - 120 / 240) < 0.05 and abs(y1 - 160 / 240) < 0.05


def test_keepalive_classifies_a_still_scene_every_n_seconds() -> None:
    clock = Clock()
    g = gate(clock, keepalive_s=30)
    assert g.check(scene()).reason == "first"
    clock.now += 29
    assert not g.check(scene()).classify
    clock.now += 1
    d = g.check(scene())
    assert d.classify and d.reason == "keepalive" and d.regions == []
    clock.now += 10
    assert not g.check(scene()).classify
    clock.now += 10  # motion resets the keep-alive clock
    assert g.check(scene(square_at=(10, 10))).reason == "motion"
    clock.now += 25
    assert g.check(scene(square_at=(10, 10))).reason in ("still", "motion")  # diff of identical frames is still
    assert not gate(clock, method="diff", keepalive_s=30).check(scene()).regions


def test_mask_hides_changes_inside_it() -> None:
    right_half = [[(0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)]]
    g = gate(method="diff", mask=right_half)
    g.check(scene())
    assert not g.check(scene(square_at=(220, 100))).classify  # moved inside the ignored half
    d = g.check(scene(square_at=(40, 100)))
    assert d.classify and d.regions and d.regions[0][2] < 0.5


def test_min_area_ignores_small_changes() -> None:
    small = gate(method="diff", min_area=0.05)  # 5 % of the frame; the square is 40x40 of 320x240 = 2 %
    small.check(scene())
    assert not small.check(scene(square_at=(100, 100))).classify
    big = gate(method="diff", min_area=0.05)
    big.check(scene())
    assert big.check(scene(square_at=(100, 100), size=90)).classify


def test_sensitivity_decides_whether_a_faint_change_counts() -> None:
    faint = scene(square_at=(100, 100), size=60, level=255 - 140)  # 140 on a ~120 background
    for sensitivity, expected in ((0.0, False), (1.0, True)):
        g = gate(method="diff", sensitivity=sensitivity)
        g.check(scene())
        assert g.check(faint).classify is expected, sensitivity


def test_gate_off_classifies_everything_without_a_score() -> None:
    g = gate(enabled=False)
    for _ in range(3):
        d = g.check(scene())
        assert d.classify and d.reason == "off" and d.motion is None


def test_resolution_change_starts_over() -> None:
    g = gate(method="diff")
    g.check(scene())
    assert g.check(cv2.resize(scene(), (640, 480))).reason == "first"


def test_polygon_mask_is_zero_inside() -> None:
    mask = polygon_mask((10, 20), [[(0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)]])
    assert mask[5, 2] == 0 and mask[5, 15] == 255


def test_real_clip_people_walking_pass_and_a_held_frame_does_not(test_data: Path) -> None:
    """Every 6th frame of the plaza clip: people walk in each; the same frame held becomes still."""
    cap = cv2.VideoCapture(str(test_data / "video" / "plaza.avi"))
    g = gate(method="mog2")
    decisions, last, n = [], None, 0
    while len(decisions) < 8:
        ok, bgr = cap.read()
        assert ok
        n += 1
        if n % 6 == 1:
            last = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            decisions.append(g.check(last))
    cap.release()
    assert decisions[0].reason == "first"
    assert all(d.reason == "motion" and len(d.regions) >= 3 for d in decisions[1:])
    assert last is not None
    held = [g.check(last) for _ in range(40)]  # the background model learns the held frame
    assert held[-1].reason == "still" and not held[-1].classify
