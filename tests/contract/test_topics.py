import pytest

from camfleet_contract.topics import Topic, TopicError, Topics, validate_name


def test_build_and_parse_round_trip() -> None:
    t = Topics()
    assert t.frame("shop-1", "door") == "camfleet/v1/shop-1/door/frame"
    assert t.parse(t.frame("shop-1", "door")) == Topic("frame", "shop-1", camera="door")
    assert t.parse(t.event("s", "c")) == Topic("event", "s", camera="c")
    assert t.parse(t.status("s", "a1")) == Topic("status", "s", agent="a1")
    assert t.parse(t.cmd("s", "a1")) == Topic("cmd", "s", agent="a1")
    assert t.parse(t.model("s", "door")) == Topic("model", "s", classifier="door")


def test_custom_root_and_subscriptions() -> None:
    t = Topics("acme/cams")
    assert t.frames_subscription() == "acme/cams/v1/+/+/frame"
    assert t.frames_subscription("hubs") == "$share/hubs/acme/cams/v1/+/+/frame"
    assert t.models_subscription("s") == "acme/cams/v1/s/models/+"
    assert t.statuses_subscription() == "acme/cams/v1/+/agents/+/status"


@pytest.mark.parametrize(
    "bad",
    ["", "a/b", "a+b", "#", "-lead", "x" * 65, "sp ace", "nul\x00", "ünï", "a\nb"],
)
def test_illegal_names_rejected(bad: str) -> None:
    with pytest.raises(TopicError, match="not a valid name"):
        validate_name(bad, "site")
    with pytest.raises(TopicError):
        Topics().frame(bad, "cam")


@pytest.mark.parametrize(
    "topic",
    [
        "other/v1/s/c/frame",
        "camfleet/v2/s/c/frame",
        "camfleet/v1/s/c/d/frame",
        "camfleet/v1/s/c/unknown",
        "camfleet/v1/s+x/c/frame",
        "camfleet/v1/s/agents/a/reboot",
        "camfleet/v1//c/frame",
    ],
)
def test_parse_rejects_foreign_topics(topic: str) -> None:
    with pytest.raises(TopicError):
        Topics().parse(topic)
