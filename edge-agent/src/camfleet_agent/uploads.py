"""Upload rules: which classified frames are sent to the hub to feed the dataset, within hourly and daily caps.

One `UploadPolicy` per camera, called once per classified frame by the camera's inference thread. The rules
are checked from the most to the least informative (a requested snapshot, an anomaly, a low confidence, a
class change, a sample); the first one that matches and is under its caps sends the frame and is named in the
frame header (`rule`). A snapshot request has no cap: a person asked for it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from camfleet_contract.agent_config import UploadRule, UploadRuleKind
from camfleet_contract.envelope import FrameReason, UploadRuleName
from camfleet_contract.runtime import Classification

HOUR_S = 3600.0
DAY_S = 86400.0
ORDER: tuple[UploadRuleKind, ...] = ("anomalous", "low_confidence", "class_change", "sample")
REASON_OF: dict[UploadRuleName, FrameReason] = {
    "sample": "sample",
    "low_confidence": "low_confidence",
    "anomalous": "anomaly",
    "class_change": "class_change",
    "request": "request",
}
"""The older `reason` header field, kept filled for consumers that read only it."""


@dataclass(frozen=True)
class Result:
    """One classifier's answer on the frame, as the rules see it."""

    classifier: str
    label: str
    probability: float
    anomaly: bool

    @classmethod
    def of(cls, classifier: str, c: Classification) -> Result:
        # A frame the site's own none-of-the-above group claims is flagged in its event but is no news for the
        # dataset: counted as anomalous here it would spend the rule's caps on known junk and crowd out new kinds.
        return cls(classifier, c.label, c.probability, c.anomaly and not c.none_of_the_above)


class _Caps:
    """Sliding-window hourly and daily caps of one rule (keeps at most `daily_cap` timestamps)."""

    def __init__(self, hourly: int | None, daily: int | None) -> None:
        self.hourly = hourly
        self.daily = daily
        self._sent: deque[float] = deque()

    def allows(self, now: float) -> bool:
        while self._sent and now - self._sent[0] >= DAY_S:
            self._sent.popleft()
        if self.daily is not None and len(self._sent) >= self.daily:
            return False
        if self.hourly is not None:
            in_hour = sum(1 for t in reversed(self._sent) if now - t < HOUR_S)
            if in_hour >= self.hourly:
                return False
        return True

    def record(self, now: float) -> None:
        if self.hourly is not None or self.daily is not None:
            self._sent.append(now)


class UploadPolicy:
    """Decides, frame by frame, whether to upload it and under which rule.

    >>> policy = UploadPolicy([UploadRule(rule="low_confidence", below=0.6, hourly_cap=20)])
    >>> policy.decide([Result("door", "open", 0.41, False)])
    'low_confidence'
    """

    def __init__(self, rules: Sequence[UploadRule], clock: Callable[[], float] = time.monotonic) -> None:
        self.rules = sorted(rules, key=lambda r: ORDER.index(r.rule))
        self._clock = clock
        self._caps = [_Caps(r.hourly_cap, r.daily_cap) for r in self.rules]
        self._seen = [0] * len(self.rules)  # frames seen by each sample rule (1 in N)
        self._last_sample: list[float | None] = [None] * len(self.rules)
        self._previous: dict[str, str] = {}  # classifier → last top-1 label (class change)
        self._snapshot = threading.Event()
        self.capped: dict[str, int] = {}  # rule → frames that matched but were over a cap
        self.sent: dict[str, int] = {}  # rule → frames sent

    def request_snapshot(self) -> None:
        """Upload the next frame (a `snapshot` command); any thread may call this."""
        self._snapshot.set()

    def decide(self, results: Sequence[Result]) -> UploadRuleName | None:
        """The rule that sends this frame, or None. Call once per classified frame, in order."""
        now = self._clock()
        chosen: UploadRuleName | None = None
        if self._snapshot.is_set():
            self._snapshot.clear()
            chosen = "request"
        for i, rule in enumerate(self.rules):
            if not self._matches(i, rule, results, now):
                continue
            if chosen is not None:
                continue  # already sent: the sample counters above still advanced
            if not self._caps[i].allows(now):
                self.capped[rule.rule] = self.capped.get(rule.rule, 0) + 1
                continue
            self._caps[i].record(now)
            if rule.rule == "sample":
                self._last_sample[i] = now
            chosen = rule.rule
        for r in results:
            self._previous[r.classifier] = r.label
        if chosen is not None:
            self.sent[chosen] = self.sent.get(chosen, 0) + 1
        return chosen

    def _matches(self, i: int, rule: UploadRule, results: Sequence[Result], now: float) -> bool:
        mine = [r for r in results if rule.classifier is None or r.classifier == rule.classifier]
        if rule.rule == "anomalous":
            return any(r.anomaly for r in mine)
        if rule.rule == "low_confidence":
            return rule.below is not None and any(r.probability < rule.below for r in mine)
        if rule.rule == "class_change":
            return any(r.classifier in self._previous and self._previous[r.classifier] != r.label for r in mine)
        # sample: 1 in N frames, or one every T seconds
        if rule.every_n is not None:
            self._seen[i] += 1
            return self._seen[i] % rule.every_n == 1 % rule.every_n
        last = self._last_sample[i]
        return rule.every_s is not None and (last is None or now - last >= rule.every_s)


def camera_rules(uploads: Sequence[UploadRule], upload_interval_s: float) -> list[UploadRule]:
    """A camera's rules: its `uploads`, plus the older `upload_interval_s` as a sample rule when it has none."""
    rules = list(uploads)
    if upload_interval_s > 0 and not any(r.rule == "sample" for r in rules):
        rules.append(UploadRule(rule="sample", every_s=upload_interval_s))
    return rules
