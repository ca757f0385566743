"""Classification figures of a set of predictions: accuracy, balanced accuracy, per-class scores, confusion."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, TypedDict

import numpy as np


@dataclass(frozen=True)
class ClassScore:
    """One class's precision and recall (rounded to 4 places) and how many images carry its label."""

    precision: float
    recall: float
    support: int


@dataclass(frozen=True)
class ClassificationMetrics:
    accuracy: float
    balanced_accuracy: float
    per_class: dict[str, ClassScore]
    confusion: list[list[int]]  # rows: true class, columns: predicted class

    def per_class_json(self) -> PerClass:
        """`per_class` as the manifest and the report store it."""
        return {name: asdict(score) for name, score in self.per_class.items()}


PerClass = dict[str, dict[str, float | int]]  # class name → precision, recall, support (ClassScore as JSON)


class QuickMetrics(TypedDict):
    """A quick run's figures as the manifest and the report store them (out-of-fold, on the training images)."""

    mode: Literal["quick"]
    images: int
    folds: int
    oof_accuracy: float
    oof_balanced_accuracy: float
    oof_nll: float
    per_class: PerClass
    confusion: list[list[int]]
    temperature: float
    anomaly_threshold: float
    l2: float
    standardize: bool
    flips: bool
    balanced: bool
    label_neighbours: int
    likely_mislabelled: int  # confident learning's count of images whose label the out-of-fold evidence doubts


class FullMetrics(TypedDict):
    """A full run's figures as the manifest and the report store them (on the validation split)."""

    mode: Literal["full"]
    images: int
    train_images: int
    val_images: int
    val_accuracy: float
    val_balanced_accuracy: float
    val_nll: float
    per_class: PerClass
    confusion: list[list[int]]
    temperature: float
    anomaly_threshold: float
    epochs_run: int
    epochs_max: int
    best_epoch: int  # 0: no epoch beat the starting model, which is what was kept
    start_val_accuracy: float
    stopped_early: bool
    batch_size: int
    image_size: int
    augment: str
    balanced_sampling: bool
    device: str
    history: list[dict[str, float | int | None]]
    estimate_s: float
    train_images_per_s: float


def classification_metrics(labels: np.ndarray, predicted: np.ndarray, classes: list[str]) -> ClassificationMetrics:
    """Accuracy, balanced accuracy, per-class precision/recall/support and the confusion matrix."""
    c = len(classes)
    confusion = np.zeros((c, c), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class: dict[str, ClassScore] = {}
    recalls = []
    for i, name in enumerate(classes):
        tp = int(confusion[i, i])
        support = int(confusion[i].sum())
        predicted_n = int(confusion[:, i].sum())
        recall = tp / support if support else 0.0
        precision = tp / predicted_n if predicted_n else 0.0
        if support:
            recalls.append(recall)
        per_class[name] = ClassScore(round(precision, 4), round(recall, 4), support)
    return ClassificationMetrics(
        accuracy=round(float((labels == predicted).mean()) if len(labels) else 0.0, 4),
        balanced_accuracy=round(float(np.mean(recalls)) if recalls else 0.0, 4),
        per_class=per_class,
        confusion=confusion.tolist(),
    )
