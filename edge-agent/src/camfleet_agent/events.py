"""What a camera publishes about a classified frame: one event per classifier, and the frame when a rule is due."""

from __future__ import annotations

from dataclasses import dataclass

from camfleet_contract.envelope import UploadRuleName, encode_frame, new_header
from camfleet_contract.images import encode_jpeg
from camfleet_contract.messages import Event, Prediction
from camfleet_contract.runtime import Classification
from camfleet_contract.topics import Topics

from .capture import CapturedFrame
from .gate import GateDecision
from .uploads import REASON_OF


@dataclass(frozen=True)
class Identity:
    """Who publishes: used in topics, events and frame headers."""

    site: str
    agent: str
    topics: Topics


@dataclass(frozen=True)
class ClassifierResult:
    """One classifier's verdict on one frame, with the model version that gave it."""

    classifier: str
    version: str
    classification: Classification


@dataclass(frozen=True)
class FrameMessage:
    """An encoded frame upload and the id its events refer to."""

    frame_id: str
    payload: bytes


def frame_message(
    ident: Identity,
    camera: str,
    frame: CapturedFrame,
    results: list[ClassifierResult],
    rule: UploadRuleName,
    jpeg_quality: int,
) -> FrameMessage:
    """The frame as JPEG in its envelope, its header naming the upload `rule` and every classifier's top-1."""
    jpeg = encode_jpeg(frame.bgr, quality=jpeg_quality, bgr=True)
    height, width = frame.bgr.shape[:2]
    top1: list[Prediction] = [r.classification.predictions[0] for r in results if r.classification.predictions]
    header = new_header(
        ident.agent,
        ident.site,
        camera,
        jpeg,
        width,
        height,
        reason=REASON_OF[rule],
        rule=rule,
        predictions=top1,
        captured_at=frame.captured_at,
    )
    return FrameMessage(header.frame_id, encode_frame(header, jpeg))


def event_of(
    ident: Identity, camera: str, frame: CapturedFrame, frame_id: str, result: ClassifierResult, gate: GateDecision
) -> Event:
    """One classifier's event for a frame; scores clamped to what the contract accepts."""
    c = result.classification
    return Event(
        frame_id=frame_id,
        ts=frame.captured_at,
        site=ident.site,
        camera=camera,
        agent=ident.agent,
        classifier=result.classifier,
        model_version=result.version,
        label=c.label,
        probability=min(1.0, max(0.0, c.probability)),
        predictions=c.predictions,
        anomaly=c.anomaly,
        anomaly_score=min(1.0, max(0.0, c.anomaly_score)),
        motion=gate.motion,
        motion_regions=gate.regions,
        latency_ms=max(0.0, c.latency_ms),
    )
