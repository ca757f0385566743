"""The hub's scoring of raw model outputs: the none-of-the-above argmax is taken once per batch, and the flags and
scores are the runtime's own."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from camfleet_contract.bundle import sign_bundle
from camfleet_contract.runtime import ClassifierRuntime
from camfleet_contract.signing import generate_signing_key
from camfleet_hub.serving.service import score_outputs
from tests.support.tinybundle import count_none_on_top, make_bundle


def test_score_outputs_takes_none_on_top_once(tmp_path: Path) -> None:
    key = generate_signing_key()
    manifest = make_bundle(tmp_path, key)
    sign_bundle(tmp_path, manifest.model_copy(update={"none_classes": ["blue"]}), key)
    rt = ClassifierRuntime(tmp_path)
    images = [np.zeros((40, 40, 3), np.uint8) for _ in range(3)]
    for img, channel in zip(images, [0, 1, 2], strict=True):
        img[..., channel] = 220
    logits, embedding = rt.run(rt.prepare(images))
    calls = count_none_on_top(rt)
    got = score_outputs(rt, logits, embedding)
    assert calls == [3]
    assert [s.label for s in got] == ["red", "green", "blue"]
    expected = rt.classify(images)  # the agent's path: the same flags and scores
    assert [(s.anomaly, s.anomaly_score) for s in got] == [(c.anomaly, c.anomaly_score) for c in expected]
    assert got[2].anomaly_score == 1.0  # blue, the none class, on top
