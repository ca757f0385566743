"""Checks an incoming MQTT message before anything is stored: topic, envelope, header vs topic, a real JPEG decode.

Every failure is a ``Rejection`` with a short machine ``reason`` (counted and written as a dead letter) and a
``detail`` for people. The site/camera existence checks need the database and live in ``persist``.
"""

from __future__ import annotations

from dataclasses import dataclass

from camfleet_contract.envelope import EnvelopeError, FrameHeader, decode_frame
from camfleet_contract.images import ImageError, check_decodes, probe_image
from camfleet_contract.messages import AgentStatus, MessageError, from_json
from camfleet_contract.topics import Topic, TopicError, Topics

# Reduced-scale JPEG decode (libjpeg DCT scaling): still a full pass over the entropy-coded data, so broken
# tables and truncation are caught, at a fraction of the cost of a full-size decode.
DRAFT_SCALE = 8
OFFLINE_PAYLOADS = {b"offline", b'"offline"'}


class Rejection(Exception):
    """A message that cannot be ingested; ``reason`` is the counter / dead-letter key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ValidFrame:
    """A frame that passed every check that needs no database."""

    topic: Topic
    header: FrameHeader
    jpeg: bytes
    width: int
    height: int


@dataclass(frozen=True)
class StatusUpdate:
    """An agent status (or its last-will ``offline``) for a site's agent."""

    site: str
    agent: str
    status: AgentStatus | None  # None: bare last-will "offline" payload

    @property
    def offline(self) -> bool:
        return self.status is None or self.status.state == "offline"


def parse_topic(topics: Topics, topic: str) -> Topic:
    """Parse a concrete topic or reject it as ``bad_topic``."""
    try:
        return topics.parse(topic)
    except TopicError as exc:
        raise Rejection("bad_topic", str(exc)) from None


def check_jpeg(jpeg: bytes, max_pixels: int) -> tuple[int, int]:
    """Probe the size (bomb-safe), then really decode (reduced scale); returns (width, height)."""
    try:
        fmt, width, height = probe_image(jpeg)
    except ImageError as exc:
        if "too large" in str(exc):
            raise Rejection("too_many_pixels", str(exc)) from None
        raise Rejection("bad_image", str(exc)) from None
    if fmt != "JPEG":
        raise Rejection("not_jpeg", f"image format is {fmt}, frames must be JPEG")
    if width * height > max_pixels:
        raise Rejection("too_many_pixels", f"image of {width}x{height} pixels exceeds ingest.max_pixels={max_pixels}")
    draft = (max(1, width // DRAFT_SCALE), max(1, height // DRAFT_SCALE))
    try:
        check_decodes(jpeg, draft=draft)
    except ImageError as exc:
        raise Rejection("corrupt_image", str(exc)) from None
    return width, height


def validate_frame(topics: Topics, topic: str, payload: bytes, max_bytes: int, max_pixels: int) -> ValidFrame:
    """Every database-free check of a frame message; raises Rejection."""
    parsed = parse_topic(topics, topic)
    if parsed.kind != "frame":
        raise Rejection("bad_topic", f"topic {topic!r} is a {parsed.kind} topic, not a frame topic")
    try:
        header, jpeg = decode_frame(payload, max_bytes=max_bytes)
    except EnvelopeError as exc:
        raise Rejection(exc.reason, exc.detail) from None
    if header.site != parsed.site or header.camera != parsed.camera:
        raise Rejection(
            "topic_mismatch",
            f"header site/camera {header.site!r}/{header.camera!r} differ from topic {parsed.site!r}/{parsed.camera!r}",
        )
    width, height = check_jpeg(jpeg, max_pixels)
    return ValidFrame(topic=parsed, header=header, jpeg=jpeg, width=width, height=height)


def validate_status(topics: Topics, topic: str, payload: bytes) -> StatusUpdate | None:
    """Parse an agent status message; None for an empty (cleared) retained status."""
    parsed = parse_topic(topics, topic)
    if parsed.kind != "status" or parsed.agent is None:
        raise Rejection("bad_topic", f"topic {topic!r} is a {parsed.kind} topic, not an agent status topic")
    body = payload.strip()
    if not body:
        return None
    if body in OFFLINE_PAYLOADS:
        return StatusUpdate(site=parsed.site, agent=parsed.agent, status=None)
    try:
        status = from_json(AgentStatus, body)
    except MessageError as exc:
        raise Rejection("bad_status", str(exc)) from None
    if status.site != parsed.site or status.agent != parsed.agent:
        raise Rejection(
            "topic_mismatch",
            f"status site/agent {status.site!r}/{status.agent!r} differ from topic {parsed.site!r}/{parsed.agent!r}",
        )
    return StatusUpdate(site=parsed.site, agent=parsed.agent, status=status)
