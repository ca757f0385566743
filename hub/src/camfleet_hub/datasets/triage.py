"""Triage of camera frames: which upload rule sent each NEW image, from which camera, and the model's suggestion.

Nothing extra is stored on the image: the frame rows already hold the camera, the reason (the upload rule) and
the top-1 prediction of each classifier the agent ran; the suggestion is the prediction whose label names a group
of this classifier. Derived at read time, it follows group renames and newer models: a picture the camera sends
again (same bytes, so the same image) shows its latest frame, classified by the model the agent runs now.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, joinedload

from camfleet_contract.envelope import UploadRuleName
from camfleet_hub.core.errors import InvalidError
from camfleet_hub.datasets import crud, history, image_changes
from camfleet_hub.datasets import public as views
from camfleet_hub.datasets.models import Camera, Classifier, Frame, Group, HistoryEntry, Image, ImageStatus
from camfleet_hub.datasets.schemas import Suggestion as SuggestionPublic
from camfleet_hub.datasets.schemas import TriageImage

RULE_OF_REASON: dict[str, UploadRuleName] = {
    "sample": "sample",
    "low_confidence": "low_confidence",
    "anomaly": "anomalous",
    "class_change": "class_change",
    "request": "request",
}
"""The frame's stored ``reason`` → the agent's upload rule (the agent fills both, one for one; see uploads.py)."""
REASON_OF_RULE = {rule: reason for reason, rule in RULE_OF_REASON.items()}
RULE_WORDS: dict[str, str] = {
    "sample": "sampled",
    "low_confidence": "low confidence",
    "anomalous": "anomalous",
    "class_change": "class change",
    "request": "snapshot",
}


@dataclass(frozen=True)
class Suggestion:
    """The model's answer for one image: its label and probability, and the group of that name (None: no such)."""

    label: str
    probability: float
    group: str | None


@dataclass(frozen=True)
class FrameInfo:
    camera: str
    agent: str
    captured_at: datetime
    rule: UploadRuleName | None
    predictions: list[dict[str, Any]]


def group_names(session: Session, classifier: Classifier) -> dict[str, str]:
    """Label → group name: exact names, and case-folded ones for labels that differ only in case."""
    names = [g.name for g in crud.list_groups(session, classifier)]
    out = {n.casefold(): n for n in names}
    out.update({n: n for n in names})
    return out


def suggest(predictions: Sequence[dict[str, Any]] | None, groups: dict[str, str]) -> Suggestion | None:
    """The most probable prediction that names a group of this classifier.

    A frame carries the top-1 of every classifier its camera runs, without the classifier's name; the labels of
    this classifier are its group names, so the match picks this classifier's answer. With no match, a frame
    with a single prediction still shows it (group None: the model's class has no group yet); with several, none
    can be told to be this classifier's.
    """
    preds = [p for p in predictions or [] if isinstance(p, dict) and "label" in p and "probability" in p]
    matched = [p for p in preds if str(p["label"]) in groups or str(p["label"]).casefold() in groups]
    if matched:
        best = max(matched, key=lambda p: float(p["probability"]))
        label = str(best["label"])
        return Suggestion(label, float(best["probability"]), groups.get(label) or groups[label.casefold()])
    if len(preds) == 1:
        return Suggestion(str(preds[0]["label"]), float(preds[0]["probability"]), None)
    return None


def _latest_frame_id(classifier: Classifier) -> Any:
    """The newest frame of the site with the image's bytes (a correlated scalar subquery on ``Image``)."""
    return (
        select(func.max(Frame.id))
        .where(Frame.sha256 == Image.sha256, Frame.site_id == classifier.site_id)
        .correlate(Image)
        .scalar_subquery()
    )


def _frames(session: Session, classifier: Classifier, images: Sequence[Image]) -> dict[str, FrameInfo]:
    """sha256 → the newest frame of the site with those bytes, for the camera images among ``images``."""
    shas = {img.sha256 for img in images if img.frame_id}
    if not shas:
        return {}
    latest = (
        select(func.max(Frame.id))
        .where(Frame.sha256.in_(shas), Frame.site_id == classifier.site_id)
        .group_by(Frame.sha256)
    )
    query = (
        select(Frame.sha256, Camera.name, Frame.agent, Frame.captured_at, Frame.reason, Frame.predictions)
        .join(Camera, Camera.id == Frame.camera_id)
        .where(Frame.id.in_(latest))
    )
    return {
        sha: FrameInfo(cam, agent, at, RULE_OF_REASON.get(reason or ""), list(preds or []))
        for sha, cam, agent, at, reason, preds in session.execute(query)
    }


def list_triage(
    session: Session,
    classifier: Classifier,
    status: ImageStatus = ImageStatus.NEW,
    rule: UploadRuleName | None = None,
    camera: str | None = None,
    limit: int = 60,
    after_id: int | None = None,
) -> list[TriageImage]:
    """NEW (or DELETED) images in id order, each with its camera, rule and suggestion; ``rule`` / ``camera`` keep
    only camera images whose latest frame was sent by that rule / from that camera."""
    if status not in (ImageStatus.NEW, ImageStatus.DELETED):
        raise InvalidError(f"status={status.value!r}: triage lists NEW or DELETED images")
    query = select(Image).where(Image.classifier_id == classifier.id, Image.status == status.value)
    if rule is not None or camera is not None:
        query = query.join(Frame, Frame.id == _latest_frame_id(classifier)).where(Image.frame_id.is_not(None))
        if rule is not None:
            query = query.where(Frame.reason == REASON_OF_RULE[rule])
        if camera is not None:
            cam_id = session.scalar(
                select(Camera.id).where(Camera.site_id == classifier.site_id, Camera.name == camera)
            )
            if cam_id is None:
                raise InvalidError(f"camera={camera!r}: no such camera in site {classifier.site.name!r}")
            query = query.where(Frame.camera_id == cam_id)
    if after_id is not None:
        query = query.where(Image.id > after_id)
    query = query.options(joinedload(Image.blob), joinedload(Image.group))
    rows = list(session.scalars(query.order_by(Image.id).limit(max(1, min(limit, crud.MAX_PAGE)))))
    frames = _frames(session, classifier, rows)
    groups = group_names(session, classifier)
    out = []
    for img in rows:
        frame = frames.get(img.sha256) if img.frame_id else None
        hint = suggest(frame.predictions, groups) if frame else None
        out.append(
            TriageImage(
                **views.image(img, classifier.name).model_dump(),
                camera=frame.camera if frame else None,
                agent=frame.agent if frame else None,
                captured_at=frame.captured_at if frame else None,
                rule=frame.rule if frame else None,
                rule_text=RULE_WORDS.get(frame.rule or "") if frame else None,
                suggestion=None if hint is None else SuggestionPublic.model_validate(hint),
            )
        )
    return out


def accept_suggestions(
    session: Session, classifier: Classifier, ids: Sequence[int], user: str, expected: image_changes.Expected | None
) -> HistoryEntry:
    """Move each image into the group its suggestion names, all in one history entry (one undo puts all back).

    Refused as a whole (422, naming the ids) when an image has no suggestion naming a group of this classifier.
    """
    images = image_changes.load_images(session, classifier, ids)
    image_changes.check_expected(session, images, expected)
    frames = _frames(session, classifier, images)
    groups = group_names(session, classifier)
    chosen: dict[int, str] = {}
    for img in images:
        frame = frames.get(img.sha256) if img.frame_id else None
        hint = suggest(frame.predictions, groups) if frame else None
        if hint is not None and hint.group is not None:
            chosen[img.id] = hint.group
    lacking = [img.id for img in images if img.id not in chosen]
    if lacking:
        raise InvalidError(
            f"ids: image ids {history.ids_text(lacking)} have no suggestion naming a group of classifier "
            f"{classifier.name!r}; move them with a group instead"
        )
    by_name = {g.name: g for g in session.scalars(select(Group).where(Group.classifier_id == classifier.id))}
    target: dict[int, tuple[str, int | None]] = {
        i: (ImageStatus.GROUP.value, by_name[name].id) for i, name in chosen.items()
    }
    counts: dict[str, int] = {}
    for name in chosen.values():
        counts[name] = counts.get(name, 0) + 1
    detail = ", ".join(f"{n} to {name!r}" for name, n in sorted(counts.items()))
    summary = f"accepted the model's suggestion for {len(images)} image(s): {detail}"
    return image_changes.apply_images(session, classifier, images, target, history.Action.MOVE, summary, user)
