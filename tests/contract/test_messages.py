import pytest

from camfleet_contract.messages import (
    AgentStatus,
    Command,
    Event,
    MessageError,
    ModelAnnouncement,
    Prediction,
    from_json,
    to_json,
)


def test_round_trips() -> None:
    msgs = [
        Event(
            frame_id="f1",
            site="s",
            camera="c",
            agent="a",
            classifier="door",
            model_version="3",
            label="open",
            probability=0.9,
            predictions=[Prediction(label="open", probability=0.9)],
            anomaly=False,
            anomaly_score=0.2,
            latency_ms=4.2,
        ),
        AgentStatus(state="online", agent="a", site="s", models={"door": "3"}, cameras=["c1"], fps={"c1": 2.0}),
        ModelAnnouncement(
            classifier="door",
            version="3",
            sha256="a" * 64,
            size=10,
            url="/api/v1/models/3/bundle",
            signature="b" * 128,
            classes=["open", "closed"],
        ),
        Command(command="snapshot", camera="c1"),
    ]
    for msg in msgs:
        assert from_json(type(msg), to_json(msg)) == msg


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b"not json", "(root)"),
        (b'{"state": "sleeping", "agent": "a", "site": "s"}', "state"),
        (b'{"state": "online", "agent": "a/b", "site": "s"}', "agent"),
        (b'{"state": "online", "agent": "a", "site": "s", "extra": 1}', "extra"),
        (b'{"state": "online", "agent": "a", "site": "s", "outbox_depth": -1}', "outbox_depth"),
    ],
)
def test_bad_status_names_the_field(payload: bytes, field: str) -> None:
    with pytest.raises(MessageError, match=field.replace("(", r"\(").replace(")", r"\)")):
        from_json(AgentStatus, payload)


def test_oversize_message_rejected() -> None:
    with pytest.raises(MessageError, match="exceeds"):
        from_json(Command, b"{" + b" " * 300_000 + b"}")
