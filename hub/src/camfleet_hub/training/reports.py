"""A model version's report: read from the bundle's report.json, kept with the version, shown normalised.

Bundles differ by age and mode; every part of a report is optional and a missing or oddly shaped part shows as
empty, never as an error. The per-image out-of-fold ranking (``label_errors``) goes into its own table
(``image_label_scores``) instead of the stored report, so the Errors view can be queried and joined to images.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from camfleet_contract.bundle import REPORT
from camfleet_hub.core import urls
from camfleet_hub.datasets.models import Image
from camfleet_hub.training.models import ImageLabelScore, ModelVersion
from camfleet_hub.training.schemas import MisclassifiedImage, ModelReport

log = logging.getLogger(__name__)

RANKING_KEYS = ("label_errors", "oof_ranking")
MAX_MISCLASSIFIED = 60
MAX_REPORT_BYTES = 64 * 1024 * 1024
NAME_LEN = 64


@dataclass(frozen=True, slots=True)
class BundleReport:
    """A bundle's report.json split in two: what the model version keeps, and the per-image ranking rows.

    Both stay JSON as the trainer wrote it (bundles differ by age and mode): ``kept`` is stored with the version
    and shown as-is; ``ranking`` rows are checked one by one when they are stored (``store_label_scores``).
    """

    kept: dict[str, Any]
    ranking: list[dict[str, Any]]


def read_report(bundle_dir: Path) -> BundleReport | None:
    """The bundle's report.json, split; None when absent, too large or not a JSON object (logged)."""
    path = bundle_dir / REPORT
    if not path.is_file():
        return None
    if path.stat().st_size > MAX_REPORT_BYTES:
        log.warning("%s is over %s bytes; not kept", REPORT, MAX_REPORT_BYTES)
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        log.warning("%s is not readable JSON (%s); not kept", REPORT, exc)
        return None
    return split_report(data) if isinstance(data, dict) else None


def split_report(report: dict[str, Any]) -> BundleReport:
    """The report without the per-image ranking (counted in ``label_errors_count``), and the ranking rows."""
    ranking: list[dict[str, Any]] = []
    kept = dict(report)
    for key in RANKING_KEYS:
        rows = kept.pop(key, None)
        if isinstance(rows, list):
            ranking.extend(r for r in rows if isinstance(r, dict))
    kept["label_errors_count"] = len(ranking)
    return BundleReport(kept, ranking)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _image_id_of(row: dict[str, Any]) -> int | None:
    """The hub image id a ranking row names: ``image_id``, or the worker's sample name ``image {id}``."""
    value = row.get("image_id")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    name = row.get("name")
    if isinstance(name, str) and name.startswith("image ") and name[6:].isdigit():
        return int(name[6:])
    return None


def _label(row: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = row.get(key)
        if isinstance(value, str) and value:
            return value[:NAME_LEN]
    return None


def store_label_scores(session: Session, model: ModelVersion, rows: list[dict[str, Any]]) -> int:
    """Keep the ranking rows that name an image of the model's classifier (by sha256 or id); returns how many."""
    if model.classifier_id is None or not rows:
        return 0
    query = select(Image.sha256, Image.id).where(Image.classifier_id == model.classifier_id)
    by_sha = {sha: image_id for sha, image_id in session.execute(query)}
    ids = set(by_sha.values())
    values: dict[int, dict[str, Any]] = {}
    for row in rows:
        image_id = by_sha.get(str(row.get("sha256"))) or _image_id_of(row)
        given = _label(row, "label", "given_label", "given")
        predicted = _label(row, "predicted", "predicted_label")
        confidence = _number(row.get("p_label", row.get("self_confidence")))
        if image_id not in ids or given is None or predicted is None or confidence is None:
            continue
        values.setdefault(
            image_id,
            {
                "model_version_id": model.id,
                "image_id": image_id,
                "given_label": given,
                "predicted_label": predicted,
                "self_confidence": confidence,
                "predicted_confidence": _number(row.get("p_predicted", row.get("predicted_confidence"))),
            },
        )
    if values:
        session.execute(insert(ImageLabelScore), list(values.values()))
    if len(values) < len(rows):
        missing = len(rows) - len(values)
        log.info("model %s: %d of %d ranked images are not in the dataset", model.id, missing, len(rows))
    return len(values)


# --------------------------------------------------------------------------- normalised view


# The report's sections below stay JSON objects: bundles differ by age and mode, and ModelReport (the REST
# contract) declares per_class, thresholds and int8 as free-form objects.
def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _section(report: dict[str, Any], key: str) -> Any:
    """A part of the report at its top level or under ``metrics`` (where the quick trainer puts it)."""
    if key in report:
        return report[key]
    return _dict(report.get("metrics")).get(key)


def classes_of(model: ModelVersion) -> list[str]:
    report = model.report or {}
    classes = report.get("classes")
    if isinstance(classes, list) and all(isinstance(c, str) for c in classes):
        return list(classes)
    return [str(c) for c in model.manifest.get("classes", [])]


def confusion_of(model: ModelVersion) -> list[list[int]] | None:
    """The square confusion matrix (rows true, columns predicted) when the report has a well-formed one."""
    matrix = _section(model.report or {}, "confusion")
    if isinstance(matrix, dict):  # {"matrix": [...], ...}
        matrix = matrix.get("matrix")
    n = len(classes_of(model))
    if not isinstance(matrix, list) or len(matrix) != n or n == 0:
        return None
    rows: list[list[int]] = []
    for row in matrix:
        if not isinstance(row, list) or len(row) != n or not all(_number(v) is not None for v in row):
            return None
        rows.append([int(v) for v in row])
    return rows


def _per_class(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    value = _section(report, "per_class")
    return {str(k): v for k, v in value.items() if isinstance(v, dict)} if isinstance(value, dict) else {}


def _thresholds(model: ModelVersion) -> dict[str, Any]:
    """The manifest's anomaly calibration (without the reference curves) plus what the report adds."""
    anomaly = _dict(model.manifest.get("anomaly"))
    shown = {k: v for k, v in anomaly.items() if k not in ("conf_ref", "dist_ref", "refs", "head_bias")}
    report = model.report or {}
    for key in ("thresholds", "calibration", "anomaly"):
        shown.update({k: v for k, v in _dict(report.get(key)).items() if not isinstance(v, list | dict)})
    return shown


def _int8(model: ModelVersion) -> dict[str, Any] | None:
    report = model.report or {}
    for source in (report.get("int8"), _dict(report.get("metrics")).get("int8"), model.metrics.get("int8")):
        if isinstance(source, dict):
            return source
    return None


def _misclassified(session: Session, model: ModelVersion) -> list[MisclassifiedImage]:
    """The report's misclassified validation images; else the out-of-fold mistakes, most doubtful first."""
    rows = (model.report or {}).get("misclassified")
    if isinstance(rows, list):
        return _reported_mistakes(session, model, rows)
    scores = session.scalars(
        select(ImageLabelScore)
        .where(
            ImageLabelScore.model_version_id == model.id,
            ImageLabelScore.given_label != ImageLabelScore.predicted_label,
        )
        .order_by(ImageLabelScore.self_confidence, ImageLabelScore.id)
        .limit(MAX_MISCLASSIFIED)
    )
    items = []
    for s in scores:
        image = session.get(Image, s.image_id)
        sha = None if image is None else image.sha256
        items.append(_mistake(s.image_id, sha, s.given_label, s.predicted_label, s.predicted_confidence))
    return items


def _reported_mistakes(session: Session, model: ModelVersion, rows: list[Any]) -> list[MisclassifiedImage]:
    """The report's own ``misclassified`` rows that name both labels, matched to dataset images by sha256."""
    shas = {str(r.get("sha256")) for r in rows if isinstance(r, dict) and r.get("sha256")}
    by_sha: dict[str, int] = {}
    if shas and model.classifier_id is not None:
        query = select(Image.sha256, Image.id).where(Image.classifier_id == model.classifier_id, Image.sha256.in_(shas))
        by_sha = {sha: image_id for sha, image_id in session.execute(query)}
    items = []
    for r in rows[:MAX_MISCLASSIFIED]:
        if not isinstance(r, dict):
            continue
        label = _label(r, "label", "true", "given_label")
        predicted = _label(r, "predicted", "predicted_label")
        if label is None or predicted is None:
            continue
        image_id = by_sha.get(str(r.get("sha256"))) or _image_id_of(r)
        sha = r.get("sha256") if isinstance(r.get("sha256"), str) else None
        items.append(_mistake(image_id, sha, label, predicted, _number(r.get("probability", r.get("p_predicted")))))
    return items


def _mistake(
    image_id: int | None, sha256: str | None, label: str, predicted: str, probability: float | None
) -> MisclassifiedImage:
    thumbnail = None if image_id is None else urls.image_thumbnail(image_id)
    return MisclassifiedImage(
        image_id=image_id,
        sha256=sha256,
        label=label,
        predicted=predicted,
        probability=probability,
        thumbnail_url=thumbnail,
    )


def normalised(session: Session, model: ModelVersion) -> ModelReport:
    """What GET /models/{id}/report answers and the model page shows."""
    report = model.report or {}
    confusion = confusion_of(model)
    count = report.get("label_errors_count")
    return ModelReport(
        model_id=model.id,
        version=model.version,
        status=model.status,
        classes=classes_of(model),
        metrics=model.metrics or {},
        per_class=_per_class(report),
        confusion=confusion,
        confusion_url=None if confusion is None else urls.model_confusion(model.id),
        misclassified=_misclassified(session, model),
        thresholds=_thresholds(model),
        int8=_int8(model),
        label_errors=count if isinstance(count, int) else 0,
        report=report,
    )
