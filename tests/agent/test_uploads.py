"""Upload rules: each rule on its own, their order, snapshot requests, and hourly and daily caps."""

from __future__ import annotations

import pytest

from camfleet_agent.uploads import HOUR_S, Result, UploadPolicy, camera_rules
from camfleet_contract.agent_config import UploadRule


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def r(label: str = "open", p: float = 0.9, anomaly: bool = False, classifier: str = "door") -> Result:
    return Result(classifier, label, p, anomaly)


def test_sample_one_in_n() -> None:
    policy = UploadPolicy([UploadRule(rule="sample", every_n=3)])
    assert [policy.decide([r()]) for _ in range(7)] == ["sample", None, None, "sample", None, None, "sample"]


def test_sample_every_t_seconds() -> None:
    clock = Clock()
    policy = UploadPolicy([UploadRule(rule="sample", every_s=10)], clock=clock)
    got = []
    for _ in range(5):
        got.append(policy.decide([r()]))
        clock.now += 4
    assert got == ["sample", None, None, "sample", None]


@pytest.mark.parametrize(
    ("rule", "results", "expected"),
    [
        (UploadRule(rule="low_confidence", below=0.6), [r(p=0.59)], "low_confidence"),
        (UploadRule(rule="low_confidence", below=0.6), [r(p=0.6)], None),
        (UploadRule(rule="low_confidence", below=0.6, classifier="lights"), [r(p=0.1)], None),
        (UploadRule(rule="anomalous"), [r(anomaly=True)], "anomalous"),
        (UploadRule(rule="anomalous"), [r()], None),
    ],
)
def test_single_frame_rules(rule: UploadRule, results: list[Result], expected: str | None) -> None:
    assert UploadPolicy([rule]).decide(results) == expected


def test_class_change_fires_when_the_top_label_changes() -> None:
    policy = UploadPolicy([UploadRule(rule="class_change")])
    labels = ["open", "open", "closed", "closed", "open"]
    assert [policy.decide([r(label)]) for label in labels] == [None, None, "class_change", None, "class_change"]


def test_most_informative_rule_wins_and_a_snapshot_beats_all() -> None:
    policy = UploadPolicy(
        [
            UploadRule(rule="sample", every_n=1),
            UploadRule(rule="low_confidence", below=0.5),
            UploadRule(rule="anomalous"),
        ]
    )
    assert policy.decide([r(p=0.2, anomaly=True)]) == "anomalous"
    assert policy.decide([r(p=0.2)]) == "low_confidence"
    assert policy.decide([r()]) == "sample"
    policy.request_snapshot()
    assert policy.decide([r(anomaly=True)]) == "request"
    assert policy.sent == {"anomalous": 1, "low_confidence": 1, "sample": 1, "request": 1}


def test_hourly_and_daily_caps() -> None:
    clock = Clock()
    policy = UploadPolicy([UploadRule(rule="anomalous", hourly_cap=2, daily_cap=3)], clock=clock)
    assert [policy.decide([r(anomaly=True)]) for _ in range(3)] == ["anomalous", "anomalous", None]
    clock.now += HOUR_S  # a new hour: one more fits under the daily cap
    assert [policy.decide([r(anomaly=True)]) for _ in range(2)] == ["anomalous", None]
    clock.now += HOUR_S
    assert policy.decide([r(anomaly=True)]) is None  # the day's 3 are used
    clock.now += 24 * HOUR_S
    assert policy.decide([r(anomaly=True)]) == "anomalous"
    assert policy.capped == {"anomalous": 3}


def test_a_capped_rule_lets_the_next_matching_one_send() -> None:
    policy = UploadPolicy([UploadRule(rule="anomalous", hourly_cap=0), UploadRule(rule="sample", every_n=1)])
    assert policy.decide([r(anomaly=True)]) == "sample"


def test_a_snapshot_is_never_capped() -> None:
    policy = UploadPolicy([UploadRule(rule="sample", every_n=1, hourly_cap=0)])
    policy.request_snapshot()
    assert policy.decide([r()]) == "request"
    assert policy.decide([r()]) is None


def test_the_older_upload_interval_becomes_a_sample_rule() -> None:
    assert camera_rules([], 5.0) == [UploadRule(rule="sample", every_s=5.0)]
    assert camera_rules([], 0) == []
    own = [UploadRule(rule="sample", every_n=2)]
    assert camera_rules(own, 5.0) == own


def test_a_frame_claimed_by_the_none_of_the_above_group_is_no_anomaly_upload() -> None:
    """Its event says anomaly (fits no known group), but the site already taught the model that kind: the anomalous
    rule keeps its caps for frames the model cannot place."""
    import numpy as np

    from camfleet_contract.runtime import Classification

    def c(anomaly: bool, none: bool) -> Classification:
        return Classification("rejected" if none else "open", 0.97, [], anomaly, 1.0, None, np.zeros(3), 1.0, none)

    policy = UploadPolicy([UploadRule(rule="anomalous")])
    assert policy.decide([Result.of("door", c(anomaly=True, none=True))]) is None
    assert policy.decide([Result.of("door", c(anomaly=True, none=False))]) == "anomalous"
