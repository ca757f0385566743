"""Plain names for the figures a model's page shows (metrics, anomaly thresholds, the INT8 check); the key the
trainer wrote stays in the cell's tooltip and in the REST report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# In the order the page lists them; keys not named here follow, alphabetically, with their underscores as spaces.
NAMES: dict[str, str] = {
    # what was trained
    "mode": "training mode",
    "accuracy": "accuracy",
    "oof_accuracy": "accuracy on images held out of each fold",
    "oof_balanced_accuracy": "the same, each class weighted alike",
    "val_accuracy": "accuracy on the validation images",
    "val_balanced_accuracy": "the same, each class weighted alike",
    "start_val_accuracy": "validation accuracy before fine-tuning",
    "likely_mislabelled": "labels that look wrong (the label check's estimate)",
    "images": "images",
    "train_images": "training images",
    "val_images": "validation images",
    "skipped_images": "images skipped (unreadable)",
    "folds": "folds of the out-of-fold check",
    "oof_nll": "log loss on held-out images",
    "val_nll": "log loss on the validation images",
    "temperature": "confidence temperature",
    "anomaly_threshold": "anomaly threshold",
    "label_neighbours": "neighbours voting in the label check",
    "embeddings_reused": "image vectors reused from the hub",
    "l2": "head regularisation (L2)",
    "standardize": "features standardised",
    "flips": "mirror images trained on",
    "balanced": "classes weighted alike",
    "epochs_run": "epochs run",
    "epochs_max": "epochs allowed",
    "best_epoch": "best epoch (0: the starting model)",
    "stopped_early": "stopped early",
    "batch_size": "batch size",
    "image_size": "image size (px)",
    "augment": "augmentation",
    "balanced_sampling": "classes sampled alike",
    "device": "device",
    "estimate_s": "estimated time (s)",
    "train_images_per_s": "training images per second",
    # anomaly calibration
    "method": "anomaly method",
    "statistics": "anomaly statistics",
    "combine": "statistics combined by",
    "threshold": "threshold",
    "target_flag_rate": "share of normal images flagged",
    "calibration_images": "images it was calibrated on",
    "k": "neighbours averaged for the distance",
    "scale_percentile": "activation-shaping percentile",
    # the INT8 check
    "fp32_accuracy": "accuracy, full precision",
    "int8_accuracy": "accuracy, INT8",
    "loss_points": "accuracy lost (points)",
    "agreement": "same answer as full precision",
    "fp32_ms_batch1": "ms per image, full precision",
    "int8_ms_batch1": "ms per image, INT8",
    "speedup": "speed-up",
    "fp32_bytes": "size, full precision (bytes)",
    "int8_bytes": "size, INT8 (bytes)",
    "included": "INT8 model shipped",
    "int8_ok": "INT8 model shipped",
    "max_loss_points": "most accuracy it may lose (points)",
    "eval_set": "measured on",
    "seconds": "seconds taken",
    "error": "error",
}


@dataclass(frozen=True, slots=True)
class NamedFigure:
    key: str
    name: str
    value: str | int | float | bool


def named(figures: Mapping[str, object]) -> list[NamedFigure]:
    """The plain figures (numbers, words, yes/no; a list of words joined) of a mapping, named and in NAMES' order."""
    order = {key: n for n, key in enumerate(NAMES)}
    plain: dict[str, str | int | float | bool] = {}
    for k, v in figures.items():
        if isinstance(v, str | int | float | bool):
            plain[k] = v
        elif isinstance(v, list) and v and all(isinstance(item, str) for item in v):
            plain[k] = ", ".join(v)  # the anomaly statistics combined
    keys = sorted(plain, key=lambda k: (order.get(k, len(order)), k))
    return [NamedFigure(k, NAMES.get(k, k.replace("_", " ")), plain[k]) for k in keys]
