"""Images for fine-tuning: decoded in DataLoader workers with the contract, augmented with OpenCV/numpy.

Training views are random resized crops (flipped, colour-jittered); evaluation views are exactly the contract's
`preprocess`, so validation accuracy is what agents will see.
"""

from __future__ import annotations

import functools
import logging
import math
import multiprocessing
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from camfleet_contract.images import ImageError, Preprocessing, decode_image, normalise, preprocess
from camfleet_trainer.data import LabeledSet, Sample

log = logging.getLogger(__name__)

AugmentName = Literal["light", "medium", "strong"]
GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class Augment:
    """How far training views may stray from the image: crop area range, aspect range, colour jitter."""

    name: AugmentName
    scale: tuple[float, float]
    jitter: float  # brightness, contrast and saturation each scaled by a factor in [1 - j, 1 + j]
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True


# Crops below ~30 % of the image lose the object in photos like the clothing set: measured on 48 images per class
# (128 px, 3 epochs), the smallest crop at 15 % of the area gave 0.81 validation accuracy, at 30 % 0.84.
AUGMENTS: dict[str, Augment] = {
    "light": Augment("light", (0.5, 1.0), 0.2),
    "medium": Augment("medium", (0.4, 1.0), 0.3),
    "strong": Augment("strong", (0.3, 1.0), 0.4),
}


def choose_augment(images_per_class: float) -> Augment:
    """More augmentation when there are fewer images per class (a small set is memorised fast)."""
    if images_per_class < 100:
        return AUGMENTS["strong"]
    if images_per_class < 500:
        return AUGMENTS["medium"]
    return AUGMENTS["light"]


def _crop_box(h: int, w: int, aug: Augment, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random crop with area in `scale` and aspect in `ratio` (torchvision's rule)."""
    log_ratio = (math.log(aug.ratio[0]), math.log(aug.ratio[1]))
    for _ in range(10):
        area = h * w * rng.uniform(*aug.scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    side = min(h, w)  # fall back to the centre square
    return (h - side) // 2, (w - side) // 2, side, side


def augment(rgb: np.ndarray, spec: Preprocessing, aug: Augment, rng: np.random.Generator) -> np.ndarray:
    """One random training view of an (H, W, 3) uint8 image, normalised like `preprocess`: (3, S, S) float32."""
    top, left, ch, cw = _crop_box(rgb.shape[0], rgb.shape[1], aug, rng)
    crop = rgb[top : top + ch, left : left + cw]
    interp = cv2.INTER_AREA if cw > spec.size else cv2.INTER_LINEAR  # the contract's rule
    img = cv2.resize(crop, (spec.size, spec.size), interpolation=interp)
    if aug.flip and rng.random() < 0.5:
        img = img[:, ::-1]
    x = img.astype(np.float32) * (1.0 / 255.0)
    if aug.jitter > 0:
        lo, hi = 1.0 - aug.jitter, 1.0 + aug.jitter
        x *= rng.uniform(lo, hi)  # brightness
        grey = x @ GREY
        x = (x - grey.mean()) * rng.uniform(lo, hi) + grey.mean()  # contrast
        grey = (x @ GREY)[..., None]
        x = (x - grey) * rng.uniform(lo, hi) + grey  # saturation
        np.clip(x, 0.0, 1.0, out=x)
    return normalise(x, spec, unit=True)


class ImageSet(Dataset[tuple[torch.Tensor | None, int, int]]):
    """Samples decoded on access; augmented views when `aug` is given, else the contract's preprocessing.

    An image that does not decode comes back as None (the collate function drops it and reports its index).
    """

    def __init__(
        self, samples: Sequence[Sample], labels: Sequence[int], spec: Preprocessing, aug: Augment | None
    ) -> None:
        self.samples = list(samples)
        self.labels = [int(v) for v in labels]
        self.spec = spec
        self.aug = aug
        self._rng: np.random.Generator | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def rng(self) -> np.random.Generator:
        """Per process: DataLoader workers get distinct seeds from torch, so their crops differ."""
        if self._rng is None:
            info = get_worker_info()
            self._rng = np.random.default_rng((info.seed if info else torch.initial_seed()) % 2**63)
        return self._rng

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int, int]:
        try:
            rgb = decode_image(self.samples[i].read())
        except (ImageError, OSError):
            return None, self.labels[i], i
        x = preprocess(rgb, self.spec) if self.aug is None else augment(rgb, self.spec, self.aug, self.rng())
        return torch.from_numpy(x), self.labels[i], i


Batch = tuple[torch.Tensor, torch.Tensor, list[int]]


def collate(items: list[tuple[torch.Tensor | None, int, int]]) -> Batch:
    """(images, labels, indices of undecodable samples); images may be empty when none decoded."""
    good = [(x, y) for x, y, _ in items if x is not None]
    bad = [i for x, _, i in items if x is None]
    if not good:
        return torch.zeros(0), torch.zeros(0, dtype=torch.long), bad
    return torch.stack([x for x, _ in good]), torch.tensor([y for _, y in good], dtype=torch.long), bad


def _worker_init(_worker_id: int) -> None:
    """One thread per worker: the cores belong to the training step."""
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def default_workers() -> int:
    """1 on a 2-core machine (the other core trains), up to 8 where there are more."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores - 1))


# Decoding workers come from a fork server (a clean process that imported this module once), not from a fork of
# the trainer: the trainer runs threads (heartbeats, HTTP, a hub's threads in tests), and a fork taken while one of
# them holds a lock can leave the child hung on it (seen: the first batch never arrived).
# The preload list is process-wide: set on the first loader with workers, not at import (importing the trainer
# must not change how anyone else's forkserver starts).
@functools.cache
def worker_context() -> multiprocessing.context.BaseContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def loader(
    data: ImageSet,
    batch_size: int,
    workers: int,
    sampler: Sampler[int] | None = None,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> DataLoader[tuple[torch.Tensor | None, int, int]]:
    """A DataLoader decoding in `workers` processes (0: in this process), kept alive across epochs."""
    return DataLoader(
        data,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        drop_last=drop_last,
        pin_memory=pin_memory,
        worker_init_fn=_worker_init if workers > 0 else None,
        multiprocessing_context=worker_context() if workers > 0 else None,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
    )


def scan(data: LabeledSet, workers: int) -> tuple[LabeledSet, list[tuple[str, str]]]:
    """Decode every image once (in the workers) so undecodable ones are dropped before the split."""

    class Probe(torch.utils.data.Dataset[str | None]):
        def __len__(self) -> int:
            return len(data.samples)

        def __getitem__(self, i: int) -> str | None:
            try:
                decode_image(data.samples[i].read())
            except (ImageError, OSError) as exc:
                return str(exc)
            return None

    dl = torch.utils.data.DataLoader(Probe(), batch_size=64, num_workers=workers, collate_fn=list)
    reasons = [r for batch in dl for r in batch]
    skipped = [(s.name, r) for s, r in zip(data.samples, reasons, strict=True) if r is not None]
    for name, reason in skipped:
        log.warning("skipping %s: %s", name, reason)
    return data.subset([r is None for r in reasons]), skipped
