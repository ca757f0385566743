"""The hub → trainer embeddings file: round trip, and a clear error for anything else."""

from __future__ import annotations

import io

import numpy as np
import pytest

from camfleet_contract.vectors import VectorsError, pack_vectors, unpack_vectors

SHA_A, SHA_B = "a" * 64, "0123456789abcdef" * 4


def test_round_trip_keeps_hashes_and_float16_values() -> None:
    rng = np.random.default_rng(0)
    vectors = {sha: (v := rng.normal(size=1280)) / np.linalg.norm(v) for sha in (SHA_A, SHA_B)}
    back = unpack_vectors(pack_vectors(vectors))
    assert set(back) == {SHA_A, SHA_B}
    for sha, v in vectors.items():
        assert back[sha].dtype == np.float32 and back[sha].shape == (1280,)
        assert np.abs(back[sha] - v).max() < 1e-3  # float16 on the wire
    assert unpack_vectors(pack_vectors({})) == {}


def _npz(**arrays: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not a zip", "not a readable .npz"),
        (_npz(sha256=np.array([SHA_A], "S64")), "expected arrays sha256 and vectors"),
        (_npz(sha256=np.array([SHA_A], "S64"), vectors=np.zeros((1, 4), "<f4")), "expected float16"),
        (_npz(sha256=np.array([SHA_A, SHA_B], "S64"), vectors=np.zeros((1, 4), "<f2")), "expected float16"),
        (_npz(sha256=np.array(["A" * 64], "S64"), vectors=np.zeros((1, 4), "<f2")), "not a lowercase sha256"),
        (_npz(sha256=np.array([SHA_A], "S64"), vectors=np.full((1, 4), np.inf, "<f2")), "not all values are finite"),
        (_npz(sha256=np.array([1]), vectors=np.zeros((1, 4), "<f2")), "64-character hashes"),
        (_npz(sha256=np.array([SHA_A], dtype=object), vectors=np.zeros((1, 4), "<f2")), "vectors:"),
    ],
)
def test_bad_files_are_refused_with_the_reason(data: bytes, message: str) -> None:
    with pytest.raises(VectorsError, match=message):
        unpack_vectors(data)
