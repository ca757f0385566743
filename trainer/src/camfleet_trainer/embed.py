"""Frozen-backbone features of images, cached on disk per image hash so re-training is fast."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from camfleet_contract.images import ImageError, decode_image, preprocess_batch
from camfleet_trainer.backbone import Backbone
from camfleet_trainer.data import Sample

log = logging.getLogger(__name__)

DEFAULT_BATCH = 32

# progress(done, total) -> None; may raise to abort (the worker's cancellation).
ProgressFn = Callable[[int, int], None]


class FeatureCache:
    """One .npy per (backbone, image): (2, D) float32 = features of the image and of its mirror image."""

    def __init__(self, root: str | Path, backbone_key: str) -> None:
        self.root = Path(root) / "embeddings" / backbone_key

    def _path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.npy"

    def get(self, sha256: str, dim: int) -> np.ndarray | None:
        """Cached features, or None when missing or unreadable (a damaged file is simply recomputed)."""
        path = self._path(sha256)
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None
        if arr.shape != (2, dim) or arr.dtype != np.float32:
            return None
        return arr

    def put(self, sha256: str, features: np.ndarray) -> None:
        """Write atomically (temp file + rename) so a crash never leaves a half-written entry."""
        path = self._path(sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, np.ascontiguousarray(features, dtype=np.float32), allow_pickle=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


@dataclass
class Embedded:
    """Features of the usable samples (in input order) and why the others were skipped."""

    features: np.ndarray  # (N, D) pooled pre-logits features
    flipped: np.ndarray  # (N, D) the same for the horizontally mirrored image
    kept: np.ndarray  # (len(samples),) bool: which input samples these rows are
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (sample name, reason)
    computed: int = 0  # how many were not in the cache


@torch.inference_mode()
def compute_features(backbone: Backbone, batch: np.ndarray, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Features of a preprocessed (N, 3, S, S) batch and of its mirror image, as float32 numpy."""
    x = torch.from_numpy(batch).to(device).contiguous(memory_format=torch.channels_last)
    both = torch.cat([x, torch.flip(x, dims=[3])])
    feats = backbone.features(both).float().cpu().numpy()
    return feats[: len(batch)], feats[len(batch) :]


def embed_samples(
    backbone: Backbone,
    samples: Sequence[Sample],
    cache: FeatureCache | None,
    device: torch.device,
    batch_size: int = DEFAULT_BATCH,
    progress: ProgressFn | None = None,
    show_progress: bool = False,
) -> Embedded:
    """Features of every decodable sample (cache first); undecodable images are skipped with a warning."""
    dim = backbone.embedding_dim
    rows: list[np.ndarray | None] = [None] * len(samples)
    skipped: list[tuple[str, str]] = []
    todo: list[int] = []
    for i, s in enumerate(samples):
        cached = cache.get(s.sha256, dim) if cache is not None else None
        if cached is None:
            todo.append(i)
        else:
            rows[i] = cached
    total = len(samples)
    done = total - len(todo)
    if progress is not None:
        progress(done, total)
    backbone.to(device)
    bar = tqdm(total=total, initial=done, unit="img", desc="embedding", disable=not show_progress, leave=False)
    try:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            images: list[np.ndarray] = []
            owners: list[int] = []
            for i in chunk:
                s = samples[i]
                try:
                    images.append(decode_image(s.read()))
                    owners.append(i)
                except (ImageError, OSError) as exc:
                    log.warning("skipping %s: %s", s.name, exc)
                    skipped.append((s.name, str(exc)))
            if images:
                feats, flipped = compute_features(backbone, preprocess_batch(images, backbone.preprocessing), device)
                for j, i in enumerate(owners):
                    pair = np.stack([feats[j], flipped[j]])
                    rows[i] = pair
                    if cache is not None:
                        cache.put(samples[i].sha256, pair)
            done += len(chunk)
            bar.update(len(chunk))
            if progress is not None:
                progress(done, total)
    finally:
        bar.close()
    kept = np.array([r is not None for r in rows], dtype=bool)
    stacked = [r for r in rows if r is not None]
    if stacked:
        arr = np.stack(stacked)
        features, flipped_all = arr[:, 0], arr[:, 1]
    else:
        features = flipped_all = np.zeros((0, dim), dtype=np.float32)
    return Embedded(
        features=np.ascontiguousarray(features),
        flipped=np.ascontiguousarray(flipped_all),
        kept=kept,
        skipped=skipped,
        computed=len(todo),
    )


def l2_normalize(features: np.ndarray) -> np.ndarray:
    """Row-wise unit vectors, as the ONNX model's `embedding` output (same eps as torch's F.normalize)."""
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return (features / np.maximum(norms, 1e-12)).astype(np.float32)
