"""The report's image lists: likely label errors (out-of-fold evidence against the label) and, in full mode,
the validation images the model gets wrong."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from camfleet_trainer.data import LabeledSet
from camfleet_trainer.full import FullResult
from camfleet_trainer.quick import QuickResult, train_quick
from camfleet_trainer.schedule import sample_groups


@dataclass(frozen=True)
class LabelError:
    """One image in the label-error ranking (a row of the report's `label_errors`)."""

    name: str
    sha256: str
    label: str
    predicted: str
    p_label: float  # combined belief of the OOF model and the neighbours in the image's label
    p_predicted: float
    p_model: float  # the OOF model's calibrated probability of the label on its own
    distance: float


@dataclass(frozen=True)
class Misclassified:
    """A validation image the calibrated full model gets wrong (a row of the report's `misclassified`)."""

    name: str
    sha256: str
    label: str
    predicted: str
    probability: float


def label_error_ranking(data: LabeledSet, result: QuickResult) -> list[LabelError]:
    """Images ordered by how little the out-of-fold evidence believes their label (likely mislabels first).

    `p_label` is the combined belief of the OOF model and the image's neighbours (oof.label_probabilities);
    `p_model` is the OOF model's calibrated probability of the label on its own.
    """
    labels = np.array([s.class_index for s in data.samples])
    rows_idx = np.arange(len(labels))
    p_label = result.label_probs[rows_idx, labels]
    p_model = result.oof_probs[rows_idx, labels]
    predicted = result.label_probs.argmax(axis=1)
    rows = []
    for i in np.argsort(p_label, kind="stable"):
        s = data.samples[int(i)]
        rows.append(
            LabelError(
                name=s.name,
                sha256=s.sha256,
                label=data.classes[s.class_index],
                predicted=data.classes[int(predicted[i])],
                p_label=round(float(p_label[i]), 6),
                p_predicted=round(float(result.label_probs[i, predicted[i]]), 4),
                p_model=round(float(p_model[i]), 4),
                distance=round(float(result.oof_distances[i]), 4),
            )
        )
    return rows


def misclassified(result: FullResult) -> list[Misclassified]:
    """The validation images the calibrated model gets wrong, most confident mistake first."""
    rows = []
    predicted = result.val_probs.argmax(axis=1)
    for j in np.argsort(-result.val_probs.max(axis=1), kind="stable"):
        s = result.usable.samples[int(result.val_indices[j])]
        if predicted[j] != s.class_index:
            rows.append(
                Misclassified(
                    name=s.name,
                    sha256=s.sha256,
                    label=result.classes[s.class_index],
                    predicted=result.classes[int(predicted[j])],
                    probability=round(float(result.val_probs[j, predicted[j]]), 4),
                )
            )
    return rows


def full_label_errors(result: FullResult) -> list[LabelError]:
    """The label-error ranking of a full run: quick mode's out-of-fold heads and neighbours, on the fine-tuned
    model's embeddings of every image (seconds, where refitting the whole model per fold would take hours)."""
    usable = result.usable
    labels = np.array([s.class_index for s in usable.samples], dtype=np.int64)
    groups = sample_groups([s.cluster for s in usable.samples])
    return label_error_ranking(usable, train_quick(result.embeddings, labels, usable.classes, groups=groups))
