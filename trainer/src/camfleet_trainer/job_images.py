"""A job's images from the hub: the dataset listing as labelled samples, each image downloaded once into the
trainer's cache (now, or on first read), and the hub's own embeddings of them."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from camfleet_contract.rest import Dataset
from camfleet_trainer.client import HubClient, HubError
from camfleet_trainer.data import LabeledSet, Sample
from camfleet_trainer.heartbeat import JobReporter

log = logging.getLogger(__name__)


class JobImages:
    """The hub's images for training jobs, cached under `cache_dir/blobs` by sha256."""

    def __init__(self, client: HubClient, cache_dir: Path) -> None:
        self.client = client
        self.cache_dir = cache_dir

    def dataset(self, job_id: int, reporter: JobReporter, lazy: bool = False) -> tuple[LabeledSet, str]:
        """The job's image list, every image downloaded now (cached by sha256), or with `lazy` on first read;
        an image missing on the hub is skipped (now) or fails its read like an unreadable file (lazy)."""
        reporter.update("download", 0.0, "fetching the dataset")
        ds: Dataset = self.client.dataset(job_id)
        classes = list(ds.classes)
        index = {name: i for i, name in enumerate(classes)}
        images = ds.images
        samples: list[Sample] = []
        for n, item in enumerate(images, 1):
            group = item.group
            if group not in index:
                log.warning("job %s: image %s is in group %r, not in classes; skipped", job_id, item.id, group)
                continue
            sha256 = _checked_sha256(item.sha256)
            read: Callable[[], bytes]
            if lazy:
                read = functools.partial(self.read_blob, sha256)
            else:
                path = self.blob(sha256)
                if path is None:
                    log.warning("job %s: image %s (%s) is missing on the hub; skipped", job_id, item.id, group)
                    continue
                read = path.read_bytes
            samples.append(Sample(f"image {item.id}", sha256, index[group], read, item.cluster))
            if not lazy and (n % 25 == 0 or n == len(images)):
                reporter.update("download", 0.05 * n / max(len(images), 1), f"downloaded {n}/{len(images)} images")
        return LabeledSet(classes, samples, [c for c in ds.none_classes if c in index]), ds.classifier or "classifier"

    def read_blob(self, sha256: str) -> bytes:
        """An image's bytes, downloaded on first use; OSError when the hub no longer has it (skipped like a
        corrupt file)."""
        path = self.blob(sha256)
        if path is None:
            raise FileNotFoundError(f"sha256 {sha256} is missing on the hub")
        return path.read_bytes()

    def hub_vectors(self, job_id: int) -> dict[str, np.ndarray]:
        """The embeddings the hub computed at import, so a quick job need not run the backbone on them again;
        without them (an old hub, an error) the trainer computes its own."""
        try:
            return self.client.embeddings(job_id)
        except HubError as exc:
            log.warning("job %s: no embeddings from the hub (%s); computing them here", job_id, exc)
            return {}

    def blob(self, sha256: str) -> Path | None:
        """The image file in the local cache, downloading it once."""
        path = self.cache_dir / "blobs" / sha256[:2] / sha256
        if path.is_file():
            return path
        data = self.client.blob(sha256)
        if data is None:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return path


def _checked_sha256(sha256: str) -> str:
    """A dataset's sha256 as a lowercase hex digest (it names a cache file), or HubError."""
    if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
        raise HubError(f"dataset: sha256 {sha256!r} is not a lowercase hex digest")
    return sha256
