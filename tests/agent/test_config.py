"""Agent configuration: TOML + env overrides, defaults, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from camfleet_agent.config import DEFAULT_HUB_URL, DEFAULT_MQTT_PORT, AgentSettings, load_settings
from camfleet_contract.config import ConfigError, load_config

GOOD = """
agent = "gate-1"
site = "shop"
data_dir = "{data}"

[mqtt]
host = "broker.local"
username = "agent"
password = "s3cret"

[[cameras]]
name = "door"
source = "rtsp://10.0.0.5/stream1"

[[cameras]]
name = "usb"
source = "0"
fps = 5
upload_interval_s = 0
loop = false
jpeg_quality = 70
"""


def test_loads_toml_with_defaults(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(GOOD.format(data=tmp_path / "state"))
    s = load_settings(path)
    assert (s.agent, s.site, s.hub_url, s.data_dir) == ("gate-1", "shop", DEFAULT_HUB_URL, tmp_path / "state")
    assert s.fleet_public_key == ""
    assert (s.mqtt.host, s.mqtt.port, s.mqtt.root, s.mqtt.tls) == ("broker.local", DEFAULT_MQTT_PORT, "camfleet", False)
    assert s.mqtt.password is not None and s.mqtt.password.get_secret_value() == "s3cret"
    door, usb = s.cameras
    assert (door.fps, door.upload_interval_s, door.loop) == (2.0, 10.0, True)
    assert (usb.fps, usb.upload_interval_s, usb.loop, usb.jpeg_quality) == (5.0, 0.0, False, 70)


def test_env_overrides(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(GOOD.format(data=tmp_path))
    env = {
        "CAMFLEET_AGENT__MQTT__PORT": "1884",
        "CAMFLEET_AGENT__HUB_URL": "http://hub:9000/",
        "CAMFLEET_AGENT__API_TOKEN": "cf_from_env",
    }
    s = load_config(AgentSettings, path, "CAMFLEET_AGENT", environ=env)
    assert s.mqtt.port == 1884
    assert s.api_token is not None and s.api_token.get_secret_value() == "cf_from_env"
    assert "cf_from_env" not in repr(s)
    assert s.hub_url == "http://hub:9000"


@pytest.mark.parametrize(
    ("snippet", "field"),
    [
        ('agent = "bad name"\nsite = "s"', "agent"),
        ('agent = "a"\nsite = "s/x"', "site"),
        ('agent = "a"\nsite = "s"\nhub_url = "ftp://hub"', "hub_url"),
        ('agent = "a"\nsite = "s"\nfleet_public_key = "abc"', "fleet_public_key"),
        ('agent = "a"\nsite = "s"\ncolour = "red"', "colour"),
        ('agent = "a"\nsite = "s"\n[mqtt]\nport = 70000', "mqtt.port"),
        ('agent = "a"\nsite = "s"\n[mqtt]\nhots = "x"', "mqtt.hots"),
        ('agent = "a"\nsite = "s"\n[[cameras]]\nname = "c"\nsource = "0"\nfps = 0', "cameras.0.fps"),
        ('agent = "a"\nsite = "s"\n[[cameras]]\nname = "c c"\nsource = "0"', "cameras.0.name"),
        ('agent = "a"\nsite = "s"\n[[cameras]]\nname = "c"\nsource = "0"\nupload_interval_s = -1', "upload_interval_s"),
        ('agent = "a"\nsite = "s"\n[[cameras]]\nname = "c"\nsource = "0"\n[[cameras]]\nname = "c"\nsource = "1"', "c"),
        ('site = "s"', "agent"),
    ],
)
def test_bad_values_name_the_field(tmp_path: Path, snippet: str, field: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(snippet + "\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert field in str(err.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_inference_threads_share_out_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"agent": "a1", "site": "s1"}
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert AgentSettings.model_validate(base).inference_threads() == (1, 1)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert AgentSettings.model_validate(base).inference_threads() == (2, 1)  # two frames at once, a core each
    assert AgentSettings.model_validate({**base, "inference_workers": 1}).inference_threads() == (1, 2)
    assert AgentSettings.model_validate({**base, "model_threads": 3}).inference_threads() == (2, 3)
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert AgentSettings.model_validate(base).inference_threads() == (2, 2)  # up to 4 threads in all
    assert AgentSettings.model_validate({**base, "inference_workers": 4}).inference_threads() == (4, 1)
