"""Environment overrides are typed by the config model: strings stay strings, secrets are never echoed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

from camfleet_agent.config import AgentSettings
from camfleet_contract.config import ConfigError, load_config
from camfleet_hub.core.config import HubSettings
from camfleet_trainer.config import TrainerSettings

AGENT_REQUIRED = {"CAMFLEET_AGENT__AGENT": "a1", "CAMFLEET_AGENT__SITE": "shop"}


def _plain(value: Any) -> Any:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def _field(settings: BaseModel, dotted: str) -> Any:
    node: Any = settings
    for part in dotted.split("."):
        node = getattr(node, part)
    return _plain(node)


# (model, prefix, extra env, field, raw value, expected value)
STRING_CASES = [
    (model, prefix, extra, field, raw)
    for model, prefix, extra, fields in [
        (HubSettings, "CAMFLEET_HUB", {}, ["mqtt.password", "store.secret_key", "auth.admin_password"]),
        (AgentSettings, "CAMFLEET_AGENT", AGENT_REQUIRED, ["mqtt.password", "api_token"]),
        (TrainerSettings, "CAMFLEET_TRAINER", {}, ["api_token"]),
    ]
    for field in fields
    for raw in ["1e3", "null", "true", "0123456789", "123456", '{"a": 1}', "[1, 2]", " spaced "]
]


@pytest.mark.parametrize(("model", "prefix", "extra", "field", "raw"), STRING_CASES)
def test_string_fields_take_the_value_verbatim(
    model: type[BaseModel], prefix: str, extra: dict[str, str], field: str, raw: str
) -> None:
    env = dict(extra, **{f"{prefix}__{field.upper().replace('.', '__')}": raw})
    assert _field(load_config(model, None, prefix, env), field) == raw


@pytest.mark.parametrize(
    ("model", "prefix", "extra", "field", "raw", "expected"),
    [
        (HubSettings, "CAMFLEET_HUB", {}, "mqtt.port", "1884", 1884),
        (HubSettings, "CAMFLEET_HUB", {}, "mqtt.embedded", "false", False),
        (HubSettings, "CAMFLEET_HUB", {}, "mqtt.host", "10.0.0.1", "10.0.0.1"),
        (HubSettings, "CAMFLEET_HUB", {}, "imports.roots", '["/srv/a", "/srv/b"]', ["/srv/a", "/srv/b"]),
        (AgentSettings, "CAMFLEET_AGENT", AGENT_REQUIRED, "mqtt.port", "1883", 1883),
        (AgentSettings, "CAMFLEET_AGENT", AGENT_REQUIRED, "mqtt.tls", "true", True),
        (TrainerSettings, "CAMFLEET_TRAINER", {}, "poll_interval_s", "1e3", 1000.0),
        (TrainerSettings, "CAMFLEET_TRAINER", {}, "threads", "2", 2),
        (TrainerSettings, "CAMFLEET_TRAINER", {}, "device", "cpu", "cpu"),
        (TrainerSettings, "CAMFLEET_TRAINER", {}, "worker", "007", "007"),
    ],
)
def test_typed_fields_still_parse(
    model: type[BaseModel], prefix: str, extra: dict[str, str], field: str, raw: str, expected: Any
) -> None:
    env = dict(extra, **{f"{prefix}__{field.upper().replace('.', '__')}": raw})
    assert _field(load_config(model, None, prefix, env), field) == expected


@pytest.mark.parametrize(
    ("model", "prefix", "extra", "toml", "field"),
    [
        (HubSettings, "CAMFLEET_HUB", {}, '[mqtt]\npassword = ["s3cr3t-pw"]\n', "mqtt.password"),
        (HubSettings, "CAMFLEET_HUB", {}, '[store]\nsecret_key = {v = "s3cr3t-pw"}\n', "store.secret_key"),
        (AgentSettings, "CAMFLEET_AGENT", AGENT_REQUIRED, 'api_token = ["s3cr3t-pw"]\n', "api_token"),
        (TrainerSettings, "CAMFLEET_TRAINER", {}, 'api_token = ["s3cr3t-pw"]\n', "api_token"),
    ],
)
def test_a_refused_secret_is_never_printed(
    model: type[BaseModel], prefix: str, extra: dict[str, str], toml: str, field: str, tmp_path: Path
) -> None:
    """A secret of the wrong type is refused naming the field, never the value."""
    (tmp_path / "c.toml").write_text(toml)
    with pytest.raises(ConfigError) as refused:
        load_config(model, tmp_path / "c.toml", prefix, extra)
    assert field in str(refused.value)
    assert "s3cr3t-pw" not in str(refused.value)


def test_an_all_digit_agent_password_is_accepted_and_hidden() -> None:
    env = dict(AGENT_REQUIRED, CAMFLEET_AGENT__MQTT__PASSWORD="12345678")
    settings = load_config(AgentSettings, None, "CAMFLEET_AGENT", env)
    assert _field(settings, "mqtt.password") == "12345678"
    assert "12345678" not in repr(settings) and "12345678" not in str(settings.model_dump())


def test_an_invalid_plain_value_is_named_with_its_value() -> None:
    with pytest.raises(ConfigError, match=r"mqtt\.port: .*'abc'"):
        load_config(HubSettings, None, "CAMFLEET_HUB", {"CAMFLEET_HUB__MQTT__PORT": "abc"})


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("CAMFLEET_HUB__MQTT_PORT", "CAMFLEET_HUB__MQTT_PORT names no setting"),  # one underscore: a typo
        ("CAMFLEET_HUB__MQTT__PROT", r"mqtt\.prot: Extra inputs are not permitted"),
    ],
)
def test_a_misspelt_override_is_refused_not_ignored(name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(HubSettings, None, "CAMFLEET_HUB", {name: "1884"})


def test_a_table_override_that_is_not_json_is_refused() -> None:
    env = {**AGENT_REQUIRED, "CAMFLEET_AGENT__CAMERAS": "front,back"}
    with pytest.raises(ConfigError, match='"cameras"'):
        load_config(AgentSettings, None, "CAMFLEET_AGENT", env)


def test_null_is_no_keyword() -> None:
    """No string means "unset": a number field refuses "null" (unset the variable to get the default back)."""
    with pytest.raises(ConfigError, match=r"threads: .*'null'"):
        load_config(TrainerSettings, None, "CAMFLEET_TRAINER", {"CAMFLEET_TRAINER__THREADS": "null"})
