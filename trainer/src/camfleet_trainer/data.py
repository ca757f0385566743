"""Labelled training images, from a folder per class or from a hub job, and the checks they must pass."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from camfleet_trainer.errors import DatasetError

__all__ = ["DatasetError", "LabeledSet", "Sample", "check_dataset", "file_sample", "load_folder"]

log = logging.getLogger(__name__)

MIN_CLASSES = 2
MIN_IMAGES_PER_CLASS = 2
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


@dataclass(frozen=True)
class Sample:
    """One labelled image: `name` for messages, `sha256` keys the embedding cache, `read` returns the bytes."""

    name: str
    sha256: str
    class_index: int  # the position of its class in the set's `classes` (a class *name* is called `label`)
    read: Callable[[], bytes] = field(repr=False, compare=False)
    # Near-duplicate cluster from the hub (None: the image is its own); a cluster never straddles a split.
    cluster: int | None = field(default=None, compare=False)


@dataclass
class LabeledSet:
    """Ordered class names plus their samples; `none_classes` are those meaning "none of the above" (a site's
    rejected images): trained on like the others, left out of the anomaly calibration of normal images."""

    classes: list[str]
    samples: list[Sample]
    none_classes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Images per class, in class order."""
        c = Counter(s.class_index for s in self.samples)
        return {name: c.get(i, 0) for i, name in enumerate(self.classes)}

    def subset(self, keep: Sequence[bool]) -> LabeledSet:
        """The same classes with only the samples where `keep` is true."""
        return LabeledSet(self.classes, [s for s, k in zip(self.samples, keep, strict=True) if k], self.none_classes)

    def none_mask(self) -> np.ndarray:
        """(C,) bools: which classes are none-of-the-above."""
        return np.isin(np.asarray(self.classes, dtype=object), self.none_classes)


def file_sample(path: Path, class_index: int) -> Sample:
    """A sample read from a file (hashed now, read again when embedded if not cached)."""
    data = path.read_bytes()
    return Sample(str(path), hashlib.sha256(data).hexdigest(), class_index, path.read_bytes)


def load_folder(root: str | Path, none_classes: Sequence[str] = ()) -> LabeledSet:
    """A folder per class (sorted names are the classes); files with image suffixes, hidden ones skipped;
    `none_classes` name the folders of rejected images ("none of the above")."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data: {root} is not a folder (expected one sub-folder of images per class)")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    classes = [p.name for p in class_dirs]
    samples: list[Sample] = []
    for label, folder in enumerate(class_dirs):
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES:
                samples.append(file_sample(path, label))
    data = LabeledSet(classes, samples, list(none_classes))
    check_dataset(data, where=str(root))
    return data


def check_dataset(data: LabeledSet, where: str = "dataset") -> None:
    """At least 2 classes, each with at least 2 (usable) images; raises DatasetError naming what is short."""
    counts = data.counts()
    if len(counts) < MIN_CLASSES:
        found = ", ".join(f"{k!r}" for k in counts) or "none"
        raise DatasetError(
            f"{where}: a classifier needs at least {MIN_CLASSES} classes with images, found {len(counts)} ({found})"
        )
    unknown = sorted(set(data.none_classes) - set(data.classes))
    if unknown:
        raise DatasetError(f"{where}: none-of-the-above classes {unknown} are not among the classes {data.classes}")
    if set(data.classes) <= set(data.none_classes):
        raise DatasetError(f"{where}: every class is marked none-of-the-above; at least one must be a real group")
    short = {name: n for name, n in counts.items() if n < MIN_IMAGES_PER_CLASS}
    if short:
        listed = ", ".join(f"{name!r} has {n}" for name, n in short.items())
        raise DatasetError(f"{where}: every class needs at least {MIN_IMAGES_PER_CLASS} usable images; {listed}")
