"""The binary frame envelope: magic, header length, JSON header, JPEG bytes."""

from __future__ import annotations

import hashlib
import json
import struct
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .messages import Prediction, Timestamp, utcnow
from .topics import Name

MAGIC = b"CFV1"
_LEN = struct.Struct(">I")
PREFIX_SIZE = len(MAGIC) + _LEN.size
MAX_HEADER_BYTES = 64 * 1024
MAX_FRAME_BYTES = 8 * 1024 * 1024

FrameReason = Literal["sample", "anomaly", "low_confidence", "request", "manual", "class_change"]
UploadRuleName = Literal["sample", "low_confidence", "anomalous", "class_change", "request"]
"""Which upload rule sent a frame (`agent_config.UploadRuleKind`, plus `request` for a snapshot command)."""


class EnvelopeError(ValueError):
    """A frame payload is malformed; `reason` is a short code for counters and dead letters."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class FrameHeader(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    frame_id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    agent: Name
    site: Name
    camera: Name
    captured_at: Timestamp
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    width: int = Field(gt=0, le=65535)
    height: int = Field(gt=0, le=65535)
    reason: FrameReason = "sample"
    rule: UploadRuleName | None = Field(default=None, description="the agent's upload rule that sent this frame")
    predictions: list[Prediction] = Field(default_factory=list, max_length=100)


def new_header(
    agent: str,
    site: str,
    camera: str,
    jpeg: bytes,
    width: int,
    height: int,
    reason: FrameReason = "sample",
    predictions: Iterable[Prediction] = (),
    captured_at: datetime | None = None,
    rule: UploadRuleName | None = None,
) -> FrameHeader:
    """A header for a freshly captured frame: new id, hash of the JPEG."""
    return FrameHeader(
        frame_id=uuid.uuid4().hex,
        agent=agent,
        site=site,
        camera=camera,
        captured_at=captured_at or utcnow(),
        sha256=hashlib.sha256(jpeg).hexdigest(),
        width=width,
        height=height,
        reason=reason,
        rule=rule,
        predictions=list(predictions),
    )


def encode_frame(header: FrameHeader, jpeg: bytes) -> bytes:
    head = header.model_dump_json().encode()
    return b"".join((MAGIC, _LEN.pack(len(head)), head, jpeg))


def decode_frame(payload: bytes, max_bytes: int = MAX_FRAME_BYTES) -> tuple[FrameHeader, bytes]:
    """Split and check an envelope: size, magic, header schema, JPEG markers, sha256."""
    if len(payload) > max_bytes:
        raise EnvelopeError("oversize", f"payload of {len(payload)} bytes exceeds the limit of {max_bytes}")
    if len(payload) < PREFIX_SIZE:
        raise EnvelopeError("truncated", f"payload of {len(payload)} bytes is shorter than the envelope prefix")
    if payload[: len(MAGIC)] != MAGIC:
        raise EnvelopeError("bad_magic", f"magic {payload[:4]!r} is not {MAGIC!r}")
    (head_len,) = _LEN.unpack_from(payload, len(MAGIC))
    if head_len > MAX_HEADER_BYTES:
        raise EnvelopeError("bad_header", f"header length {head_len} exceeds {MAX_HEADER_BYTES}")
    if PREFIX_SIZE + head_len > len(payload):
        raise EnvelopeError("truncated", f"header length {head_len} runs past the payload end")
    head = payload[PREFIX_SIZE : PREFIX_SIZE + head_len]
    try:
        header = FrameHeader.model_validate(json.loads(head))
    except (ValueError, ValidationError, RecursionError) as exc:  # RecursionError: JSON nested too deep
        detail = str(exc).splitlines()
        raise EnvelopeError("bad_header", " ".join(detail[:3])) from None
    jpeg = payload[PREFIX_SIZE + head_len :]
    if not jpeg.startswith(b"\xff\xd8"):
        raise EnvelopeError("not_jpeg", "image bytes do not start with the JPEG SOI marker")
    digest = hashlib.sha256(jpeg).hexdigest()
    if digest != header.sha256:
        raise EnvelopeError("hash_mismatch", f"header sha256 {header.sha256} != image sha256 {digest}")
    return header, jpeg
