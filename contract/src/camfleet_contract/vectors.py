"""Image embeddings on the wire (hub → trainer): an .npz of content hashes and their unit vectors in float16.

The hub embeds every image once, at import or ingest, with the default bundle; a trainer fetches those vectors
for a job instead of running the backbone again. `np.load(allow_pickle=False)` reads it: no code, only arrays.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Mapping

import numpy as np

MEDIA_TYPE = "application/octet-stream"
MODEL_HEADER = "X-Embedding-Model"  # sha256 of the bundle that computed the vectors
_SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_DIM = 8192


class VectorsError(ValueError):
    """Bytes that are not a well-formed vectors file."""


def pack_vectors(vectors: Mapping[str, np.ndarray]) -> bytes:
    """sha256 → unit vector (all of one dimension) as .npz bytes."""
    shas = sorted(vectors)
    dim = len(next(iter(vectors.values()))) if vectors else 0
    matrix = np.stack([np.asarray(vectors[s], dtype="<f2") for s in shas]) if shas else np.zeros((0, dim), "<f2")
    out = io.BytesIO()
    np.savez(out, sha256=np.array(shas, dtype="S64"), vectors=matrix)
    return out.getvalue()


def unpack_vectors(data: bytes, max_rows: int = 10_000_000) -> dict[str, np.ndarray]:
    """The mapping back, as float32 vectors; raises VectorsError naming what is wrong."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            if sorted(npz.files) != ["sha256", "vectors"]:
                raise VectorsError(f"vectors: expected arrays sha256 and vectors, got {sorted(npz.files)}")
            shas, matrix = npz["sha256"], npz["vectors"]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        if isinstance(exc, VectorsError):
            raise
        raise VectorsError(f"vectors: not a readable .npz ({exc})") from None
    if shas.dtype != np.dtype("S64") or shas.ndim != 1 or len(shas) > max_rows:
        raise VectorsError(f"vectors: sha256 must be ≤ {max_rows} 64-character hashes, not {shas.dtype} {shas.shape}")
    if matrix.dtype != np.dtype("<f2") or matrix.ndim != 2 or len(matrix) != len(shas) or matrix.shape[1] > MAX_DIM:
        raise VectorsError(f"vectors: expected float16 ({len(shas)}, D ≤ {MAX_DIM}), got {matrix.dtype} {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise VectorsError("vectors: not all values are finite")
    out: dict[str, np.ndarray] = {}
    for raw, row in zip(shas.tolist(), matrix.astype(np.float32), strict=True):
        sha = raw.decode("ascii", "replace")
        if not _SHA256.fullmatch(sha):
            raise VectorsError(f"vectors: {sha!r} is not a lowercase sha256")
        out[sha] = row
    return out
