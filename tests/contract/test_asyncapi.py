"""docs/asyncapi.yaml against the contract: every payload schema has the model's fields, and real messages validate.

A field added to a model and not to the AsyncAPI file (or the reverse) fails here, naming both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel

from camfleet_contract.agent_config import AgentConfig, CameraConfig, UploadRule
from camfleet_contract.envelope import FrameHeader, new_header
from camfleet_contract.messages import (
    AgentConfigDocument,
    AgentStatus,
    Command,
    CommandReply,
    Event,
    ModelAnnouncement,
    Prediction,
    SignedConfig,
    utcnow,
)
from camfleet_contract.rollback import RollbackStatement
from camfleet_contract.topics import Topics

SPEC = yaml.safe_load((Path(__file__).parents[2] / "docs" / "asyncapi.yaml").read_text())
SCHEMAS: dict[str, Any] = SPEC["components"]["schemas"]
P = Prediction(label="open", probability=0.75)
EXAMPLES: dict[str, tuple[type[BaseModel], list[BaseModel]]] = {
    "Prediction": (Prediction, [P]),
    "FrameHeader": (
        FrameHeader,
        [
            new_header("a", "s", "c", b"\xff\xd8", 4, 3),
            new_header("a", "s", "c", b"x", 4, 3, rule="low_confidence", predictions=[P]),
        ],
    ),
    "Event": (
        Event,
        [
            Event(
                frame_id="f",
                site="s",
                camera="c",
                agent="a",
                classifier="k",
                model_version="1",
                label="open",
                probability=0.75,
                predictions=[P],
                anomaly=False,
                anomaly_score=0.1,
                latency_ms=3.0,
            )
        ],
    ),
    "AgentStatus": (
        AgentStatus,
        [
            AgentStatus(state="offline", agent="a", site="s"),
            AgentStatus(
                state="online",
                agent="a",
                site="s",
                models={"k": "1"},
                cameras=["c"],
                fps={"c": 2.0},
                outbox_depth=3,
                outbox_bytes=900,
                dropped={"outbox_full_sampled": 1},
                reconnects=2,
                config_version=4,
                problems=["clock skew: +300 s"],
            ),
        ],
    ),
    "ModelAnnouncement": (
        ModelAnnouncement,
        [
            ModelAnnouncement(
                classifier="k", version="1", sha256="0" * 64, size=10, url="/m", signature="0" * 128, classes=["a"]
            )
        ],
    ),
    "RollbackStatement": (
        RollbackStatement,
        [
            RollbackStatement(
                site="s", classifier="k", version="1", replaces="2", issued_at=utcnow(), signature="0" * 128
            )
        ],
    ),
    "Command": (Command, [Command(command="snapshot"), Command(command="restart", camera="c")]),
    "CommandReply": (
        CommandReply,
        [
            CommandReply(command_id="x", command="restart", agent="a", result="ok"),
            CommandReply(agent="a", result="error", message="bad"),
        ],
    ),
    "SignedConfig": (
        SignedConfig,
        [
            SignedConfig(
                config=AgentConfigDocument(
                    site="s",
                    agent="a",
                    config=AgentConfig(
                        version=1, cameras=[CameraConfig(name="c", source="0", uploads=[UploadRule(rule="anomalous")])]
                    ),
                ).model_dump_json(),
                signature="0" * 128,
            )
        ],
    ),
}


def _resolving(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with the file's components beside it, so its `#/components/...` references resolve."""
    return {**schema, "components": SPEC["components"]}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_schema_fields_match_the_model(name: str) -> None:
    model, _ = EXAMPLES[name]
    schema = SCHEMAS[name]
    documented, declared = set(schema["properties"]), set(model.model_fields)
    assert documented == declared, (
        f"{name}: only in asyncapi.yaml {documented - declared}, only in the model {declared - documented}"
    )
    required = {f for f, info in model.model_fields.items() if info.is_required()}
    assert set(schema.get("required", [])) == required, f"{name}: required fields differ"
    if model.model_config.get("extra") == "forbid":
        assert schema.get("additionalProperties") is False, f"{name}: the model forbids extra fields"


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_real_messages_validate_against_the_documented_schema(name: str) -> None:
    _, examples = EXAMPLES[name]
    for example in examples:
        jsonschema.validate(example.model_dump(mode="json"), _resolving(SCHEMAS[name]))


def test_every_channel_has_a_documented_payload_and_the_contract_topic() -> None:
    topics = Topics()
    built = {
        "frame": topics.frame("SITE", "CAMERA"),
        "event": topics.event("SITE", "CAMERA"),
        "status": topics.status("SITE", "AGENT"),
        "model": topics.model("SITE", "CLASSIFIER"),
        "cmd": topics.cmd("SITE", "AGENT"),
        "reply": topics.reply("SITE", "AGENT"),
        "config": topics.config("SITE", "AGENT"),
    }
    assert set(SPEC["channels"]) == set(built)
    for name, channel in SPEC["channels"].items():
        address = channel["address"]
        for part in ("site", "camera", "agent", "classifier"):
            address = address.replace("{" + part + "}", part.upper())
        assert address == built[name], name
        for message in channel["messages"].values():
            ref = message["payload"]["$ref"]
            assert ref.removeprefix("#/components/schemas/") in EXAMPLES, f"{name}: {ref} has no contract model"
