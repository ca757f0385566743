"""What `camfleet-trainer train --mode full` shows while it runs: the estimate, a bar per epoch, a line per epoch."""

from __future__ import annotations

import math
import sys
from typing import Any

from pydantic import ValidationError
from tqdm import tqdm

from camfleet_trainer.errors import DatasetError
from camfleet_trainer.full import FullOptions
from camfleet_trainer.progress import EpochStats, Estimate, FullHooks


def full_options(cli: dict[str, Any], **extra: Any) -> FullOptions:
    """FullOptions from command-line values; a bad value raises DatasetError naming the option."""
    try:
        return FullOptions(**cli, **extra)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = "--" + str(first["loc"][0]).replace("_", "-")
        raise DatasetError(f"{field}={first.get('input')!r}: {first['msg']}") from None


def console_hooks(bars: bool) -> FullHooks:
    """Print the estimate before training, draw a tqdm bar per epoch (when `bars`), print each epoch's figures."""
    state: dict[str, Any] = {"bar": None}

    def estimate(e: Estimate) -> None:
        print(e.text(), flush=True)

    def batch(epoch: int, done: int, total: int, loss: float) -> None:
        if not bars:
            return
        bar = state["bar"]
        if bar is None:
            bar = state["bar"] = tqdm(total=total, desc=f"epoch {epoch}", unit="batch", leave=False, file=sys.stderr)
        bar.update(done - bar.n)
        if not math.isnan(loss):
            bar.set_postfix(loss=f"{loss:.3f}")

    def epoch(s: EpochStats) -> None:
        if state["bar"] is not None:
            state["bar"].close()
            state["bar"] = None
        mark = " *" if s.best else ""
        print(
            f"epoch {s.epoch:>3}/{s.epochs}  loss {s.loss:.3f}  train acc {s.train_acc:.3f}  "
            f"val loss {s.val_loss:.3f}  val acc {s.val_acc:.3f}  {s.seconds:.0f} s "
            f"({s.train_images_per_s:.1f} img/s)  ETA {s.eta_s:.0f} s{mark}",
            flush=True,
        )

    return FullHooks(estimate=estimate, batch=batch, epoch=epoch)
