"""What a full-mode run reports while it runs: the time estimate, each epoch's figures, and the hooks for both."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from camfleet_contract.rest import EpochMetrics


@dataclass
class Estimate:
    """The time a run will take, from real steps timed on this machine before training starts."""

    device: str
    batch_size: int
    steps_per_epoch: int
    step_s: float  # one training step including its data loading
    eval_image_s: float  # one image through the model in eval mode
    epoch_s: float  # training steps plus the validation pass
    epochs: int
    train_s: float
    after_s: float  # final embeddings + export (a rough figure for export)
    total_s: float
    start_val_acc: float | None = None  # the model before fine-tuning (linear-probe head), on the validation split
    start_val_loss: float | None = None

    def text(self) -> str:
        start = (
            "" if self.start_val_acc is None else f"; validation accuracy before fine-tuning {self.start_val_acc:.3f}"
        )
        return (
            f"estimated {_duration(self.total_s)}: {self.epochs} epochs x {_duration(self.epoch_s)} "
            f"({self.steps_per_epoch} steps of {self.batch_size} images at {self.step_s:.2f} s on {self.device}) "
            f"+ ~{_duration(self.after_s)} embeddings and export; early stopping may end it sooner{start}"
        )


@dataclass
class EpochStats:
    """One finished epoch, as the progress bar, the hub's chart and the report show it."""

    epoch: int
    epochs: int
    loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    seconds: float
    train_images_per_s: float  # training steps only, data loading included
    eta_s: float
    batch_size: int
    lr: float
    best: bool

    def hub_metrics(self) -> EpochMetrics:
        """The heartbeat's per-epoch figures (the REST contract's EpochMetrics)."""
        return EpochMetrics(
            epoch=self.epoch,
            loss=round(self.loss, 5),
            train_acc=round(self.train_acc, 4),
            val_acc=round(self.val_acc, 4),
            val_loss=round(self.val_loss, 5),
            epoch_s=round(self.seconds, 2),
            eta_s=round(self.eta_s, 1),
        )


@dataclass
class FullHooks:
    """Progress callbacks; any may raise to abort the run (the worker's cancellation)."""

    estimate: Callable[[Estimate], None] | None = None
    batch: Callable[[int, int, int, float], None] | None = None  # epoch, batches done, batches, running loss
    epoch: Callable[[EpochStats], None] | None = None
    stage: Callable[[str, float, str], None] | None = None  # stage, fraction of this run, message


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
