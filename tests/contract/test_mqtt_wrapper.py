"""The one MQTT wrapper: its settings keep the password secret, check the topic root and the TLS files, and no
module outside it imports paho."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import ValidationError

from camfleet_contract.mqtt import MqttClient, MqttSettings

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("contract/src", "hub/src", "edge-agent/src", "trainer/src")
WRAPPER = REPO / "contract/src/camfleet_contract/mqtt.py"


def test_the_password_stays_secret() -> None:
    settings = MqttSettings(username="agent", password="s3cret-pw")  # type: ignore[arg-type]
    assert "s3cret-pw" not in repr(settings) and "s3cret-pw" not in settings.model_dump_json()
    assert settings.password is not None and settings.password.get_secret_value() == "s3cret-pw"


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"root": "camfleet/+"}, "mqtt.root"),
        ({"root": "a//b"}, "mqtt.root"),
        ({"tls": True, "cert_file": "client.pem"}, "mqtt.cert_file and mqtt.key_file"),
        ({"ca_file": "ca.pem"}, "mqtt.tls is false"),
        ({"port": 0}, "port"),
        ({"hots": "typo"}, "hots"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(given: dict[str, object], named: str) -> None:
    with pytest.raises(ValidationError, match=named.replace("+", r"\+")):
        MqttSettings.model_validate(given)


def test_tls_settings_reach_the_client(tmp_path: Path) -> None:
    """TLS is switched on with the CA given; a missing CA file is an error at construction, not a silent plaintext."""
    settings = MqttSettings(tls=True, ca_file=tmp_path / "missing-ca.pem")
    with pytest.raises((FileNotFoundError, OSError)):
        MqttClient.from_settings(settings, "t1")
    plain = MqttClient.from_settings(MqttSettings(), "t2")
    assert not plain.connected


def test_nothing_outside_the_wrapper_imports_paho() -> None:
    offenders = []
    for folder in SOURCES:
        for path in sorted((REPO / folder).rglob("*.py")):
            if path == WRAPPER:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                if any(n == "paho" or n.startswith("paho.") for n in names):
                    offenders.append(str(path.relative_to(REPO)))
    assert offenders == []
