from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict

from camfleet_contract.anomaly import AnomalyCalibration, calibrate, score
from camfleet_contract.config import ConfigError, load_config


def test_calibration_flags_target_fraction() -> None:
    rng = np.random.default_rng(1)
    probs, dists = rng.beta(8, 1, 2000), rng.gamma(2, 0.1, 2000)
    cal = calibrate(probs, dists, target_flag_rate=0.05)
    flagged = np.mean([score(p, d, cal) > cal.threshold for p, d in zip(probs, dists, strict=True)])
    assert 0.03 <= flagged <= 0.06
    # fresh draws of the same distribution flag about as often
    p2, d2 = rng.beta(8, 1, 2000), rng.gamma(2, 0.1, 2000)
    assert 0.02 <= np.mean([score(p, d, cal) > cal.threshold for p, d in zip(p2, d2, strict=True)]) <= 0.08
    # far away embeddings are flagged even when the classifier is confident
    assert score(0.99, 5.0, cal) > cal.threshold


def test_confidence_only_and_validation() -> None:
    cal = AnomalyCalibration(method="confidence", threshold=0.8)
    assert score(0.1, None, cal) == pytest.approx(0.9)
    with pytest.raises(ValueError):
        AnomalyCalibration(method="percentile")
    with pytest.raises(ValueError):
        calibrate([], None)


class _Sub(BaseModel):
    model_config = ConfigDict(extra="forbid")
    port: int = 1
    host: str = "h"


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "x"
    mqtt: _Sub = _Sub()


def test_config_file_and_env(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('name = "hub"\n[mqtt]\nport = 1883\n')
    s = load_config(_Settings, f, "CF", environ={"CF__MQTT__HOST": "broker", "OTHER": "1"})
    assert (s.name, s.mqtt.port, s.mqtt.host) == ("hub", 1883, "broker")
    s = load_config(_Settings, f, "CF", environ={"CF__MQTT__PORT": "2000"})
    assert s.mqtt.port == 2000


@pytest.mark.parametrize(
    ("text", "env", "match"),
    [
        ("[mqtt]\nport = 'many'\n", {}, "mqtt.port"),
        ("bogus = 1\n", {}, "bogus"),
        ("name = \n", {}, "cannot be read"),
        ("", {"CF__MQTT__NOPE": "1"}, "mqtt.nope"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, text: str, env: dict, match: str) -> None:
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(_Settings, f, "CF", environ=env)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(_Settings, tmp_path / "nope.toml", "CF", environ={})
