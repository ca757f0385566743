"""The full mode: fine-tune the whole timm model on a stratified train/validation split, then calibrate.

AdamW with linear warm-up and a cosine decay, label smoothing, augmented views decoded in DataLoader workers,
class-balanced sampling when groups are uneven, early stopping on the validation split (best epoch kept),
bf16 autocast and channels-last on a GPU, and an honest time estimate from real steps before it starts.
Temperature, anomaly thresholds and the metrics all come from the validation split, which training never saw.
The working parts (split, loaders, step, epoch, estimate) are `finetune.FineTune`; this module drives them.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from camfleet_contract.anomaly import AnomalyCalibration, calibrate
from camfleet_contract.neighbours import NeighbourIndex
from camfleet_contract.runtime import softmax
from camfleet_trainer.augment import default_workers, loader, scan
from camfleet_trainer.backbone import Backbone
from camfleet_trainer.data import LabeledSet, check_dataset
from camfleet_trainer.finetune import CPU_BATCH, GPU_BATCH, FineTune, make_optimizer
from camfleet_trainer.full_options import DEFAULT_EPOCHS, MIN_BATCH, FullOptions
from camfleet_trainer.metrics import FullMetrics, classification_metrics
from camfleet_trainer.oof import fit_temperature
from camfleet_trainer.progress import EpochStats, Estimate, FullHooks
from camfleet_trainer.schedule import EarlyStopping

__all__ = ["CPU_BATCH", "DEFAULT_EPOCHS", "GPU_BATCH", "FullOptions", "FullResult", "train_full"]

log = logging.getLogger(__name__)


@dataclass
class FullResult:
    """The fine-tuned model, its calibration, and the validation evidence behind both."""

    backbone: Backbone  # the fine-tuned copy (on the CPU, eval mode); the input backbone is untouched
    head: nn.Linear
    classes: list[str]
    temperature: float
    calibration: AnomalyCalibration
    index: NeighbourIndex  # training-split embeddings of the fine-tuned model
    embeddings: np.ndarray  # every usable sample's embedding under the fine-tuned model, in `usable` order
    usable: LabeledSet  # decodable samples; the split indexes into these
    train_indices: np.ndarray
    val_indices: np.ndarray
    val_logits: np.ndarray
    val_probs: np.ndarray  # temperature-scaled
    val_distances: np.ndarray
    history: list[EpochStats]
    estimate: Estimate
    metrics: FullMetrics
    skipped: list[tuple[str, str]] = field(default_factory=list)


class Snapshot(NamedTuple):
    """Model and optimizer state at the start of an epoch, on the CPU, to retry the epoch after an OOM."""

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]  # torch's own optimizer state_dict

    @classmethod
    def take(cls, module: nn.Module, optimizer: torch.optim.Optimizer) -> Snapshot:
        model = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
        return cls(model, copy.deepcopy(optimizer.state_dict()))


@dataclass
class _Fitted:
    """What the epochs left: their figures and the best epoch (0: the starting model was kept)."""

    history: list[EpochStats]
    best_epoch: int


def train_full(
    data: LabeledSet,
    backbone: Backbone,
    device: torch.device | None = None,
    options: FullOptions | None = None,
    hooks: FullHooks | None = None,
) -> FullResult:
    """Fine-tune `backbone` (a copy; the original is untouched) on `data` and calibrate on the validation split."""
    opts = options or FullOptions()
    hooks = hooks or FullHooks()
    device = device or torch.device("cpu")
    stage = hooks.stage or (lambda s, f, m: None)

    stage("scan", 0.0, f"checking {len(data.samples)} images")
    usable, skipped = scan(data, default_workers() if opts.workers is None else opts.workers)
    check_dataset(usable, where="usable images")
    run = FineTune(usable, backbone, device, opts)
    if opts.head_init == "probe":
        stage("probe", 0.01, "fitting a linear probe on the frozen features")
        run.init_head_from_probe()
    # Where fine-tuning starts from is a candidate too: the run never ends worse than it began.
    stopper = EarlyStopping(opts.patience)
    start_acc, start_loss = run.validate()
    stopper.update(start_acc, start_loss)
    stage("estimate", 0.02, f"timing {opts.estimate_steps} training steps")
    estimate = run.estimate(after_images=len(usable.samples))
    estimate.start_val_acc, estimate.start_val_loss = start_acc, start_loss
    log.info("%s", estimate.text())
    if hooks.estimate is not None:
        hooks.estimate(estimate)

    fitted = _fit_epochs(run, stopper, estimate, hooks)
    stage("embed", 0.9, "embedding the training images with the fine-tuned model")
    val_logits, val_labels, val_emb = run.predict(run.val_loader, fp32=True)
    _, train_labels, train_emb = run.predict(loader(run.train_eval_set, run.batch, run.workers), fp32=True)
    val = (val_logits, val_labels, val_emb)
    return _calibrated(run, usable, skipped, estimate, fitted, val, train_emb, train_labels)


def _fit_epochs(run: FineTune, stopper: EarlyStopping, estimate: Estimate, hooks: FullHooks) -> _Fitted:
    """Epochs until the last or an early stop (an epoch that runs out of GPU memory is retried at half the
    batch); the best epoch's weights are loaded into `run.module` at the end."""
    opts = run.opts
    best_state = {k: v.detach().to("cpu", copy=True) for k, v in run.module.state_dict().items()}
    best_epoch = 0
    optimizer = make_optimizer(run.module, opts, run.cuda)
    history: list[EpochStats] = []
    epoch = 0
    while epoch < opts.epochs:
        start = time.perf_counter()
        snapshot = Snapshot.take(run.module, optimizer) if run.cuda else None
        try:
            loss, acc, seen = run.train_epoch(optimizer, epoch, hooks)
        except torch.OutOfMemoryError:
            if snapshot is None or run.batch <= MIN_BATCH:
                raise
            run.module.load_state_dict(snapshot.model)
            optimizer.load_state_dict(snapshot.optimizer)
            torch.cuda.empty_cache()
            log.warning("GPU out of memory at batch %d; retrying epoch %d at %d", run.batch, epoch + 1, run.batch // 2)
            run.set_batch(run.batch // 2)
            continue
        train_s = time.perf_counter() - start
        val_acc, val_loss = run.validate()
        seconds = time.perf_counter() - start
        improved = stopper.update(val_acc, val_loss)
        epoch += 1
        if improved:
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in run.module.state_dict().items()}
            best_epoch = epoch
        mean_epoch = float(np.mean([h.seconds for h in history] + [seconds]))
        stats = EpochStats(
            epoch=epoch,
            epochs=opts.epochs,
            loss=loss,
            train_acc=acc,
            val_loss=val_loss,
            val_acc=val_acc,
            seconds=seconds,
            train_images_per_s=seen / train_s if train_s > 0 else 0.0,
            eta_s=mean_epoch * (opts.epochs - epoch) + estimate.after_s,
            batch_size=run.batch,
            lr=float(optimizer.param_groups[0]["lr"]),
            best=improved,
        )
        history.append(stats)
        if hooks.epoch is not None:
            hooks.epoch(stats)
        if stopper.should_stop:
            log.info("early stop after epoch %d: no validation gain for %d epochs", epoch, stopper.stale)
            break
    run.module.load_state_dict(best_state)
    return _Fitted(history, best_epoch)


def _calibrated(
    run: FineTune,
    usable: LabeledSet,
    skipped: list[tuple[str, str]],
    estimate: Estimate,
    fitted: _Fitted,
    val: tuple[np.ndarray, np.ndarray, np.ndarray],
    train_emb: np.ndarray,
    train_labels: np.ndarray,
) -> FullResult:
    """Temperature on the validation logits, anomaly references from validation images vs training neighbours."""
    opts = run.opts
    val_logits, val_labels, val_emb = val
    temperature = fit_temperature(val_logits, val_labels)
    probs = softmax(val_logits, temperature)
    index = NeighbourIndex.build(train_emb, train_labels)
    embeddings = np.zeros((len(usable.samples), train_emb.shape[1]), dtype=np.float32)
    embeddings[run.train_idx] = train_emb
    embeddings[run.val_idx] = val_emb
    distances = index.distances(val_emb, opts.neighbours)
    none = usable.none_mask()
    normal = ~none[val_labels]  # a none-of-the-above image is not a normal one
    calibration = calibrate(
        probs.max(axis=1)[normal],
        distances[normal],
        target_flag_rate=opts.target_flag_rate,
        temperature=temperature,
        k=opts.neighbours,
        flagged_anyway=none[probs[normal].argmax(axis=1)],
    )
    run.module.cpu().eval()
    return FullResult(
        backbone=run.backbone,
        head=run.module.head,  # type: ignore[arg-type]
        classes=usable.classes,
        temperature=temperature,
        calibration=calibration,
        index=index,
        embeddings=embeddings,
        usable=usable,
        train_indices=run.train_idx,
        val_indices=run.val_idx,
        val_logits=val_logits,
        val_probs=probs,
        val_distances=distances,
        history=fitted.history,
        estimate=estimate,
        skipped=skipped,
        metrics=_full_metrics(run, usable, estimate, fitted, val_labels, probs, calibration),
    )


def _full_metrics(
    run: FineTune,
    usable: LabeledSet,
    estimate: Estimate,
    fitted: _Fitted,
    val_labels: np.ndarray,
    probs: np.ndarray,
    calibration: AnomalyCalibration,
) -> FullMetrics:
    """The manifest's figures of a full run (JSON): validation scores, calibration, epochs and settings."""
    opts, history = run.opts, fitted.history
    cm = classification_metrics(val_labels, probs.argmax(axis=1), usable.classes)
    nll = float(-np.log(np.clip(probs[np.arange(len(val_labels)), val_labels], 1e-12, None)).mean())
    return {
        "mode": "full",
        "images": len(usable.samples),
        "train_images": len(run.train_idx),
        "val_images": len(run.val_idx),
        "val_accuracy": cm.accuracy,
        "val_balanced_accuracy": cm.balanced_accuracy,
        "val_nll": round(nll, 4),
        "per_class": cm.per_class_json(),
        "confusion": cm.confusion,
        "temperature": round(calibration.temperature, 4),
        "anomaly_threshold": round(calibration.threshold, 4),
        "epochs_run": len(history),
        "epochs_max": opts.epochs,
        "best_epoch": fitted.best_epoch,  # 0: no epoch beat the starting model, which is what was kept
        "start_val_accuracy": round(estimate.start_val_acc or 0.0, 4),
        "stopped_early": len(history) < opts.epochs,
        "batch_size": run.batch,
        "image_size": run.spec.size,
        "augment": run.aug.name,
        "balanced_sampling": run.balanced,
        "device": run.device.type,
        "history": [h.hub_metrics().model_dump() for h in history],
        "estimate_s": round(estimate.total_s, 1),
        "train_images_per_s": round(float(np.mean([h.train_images_per_s for h in history])), 2),
    }
