"""The contract's nearest-neighbour index (usearch)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from camfleet_contract.neighbours import NeighbourIndex


def test_importing_the_index_first_then_onnxruntime_does_not_crash() -> None:
    """usearch loaded before onnxruntime segfaults the process; the module loads them in the safe order."""
    code = "import camfleet_contract.neighbours, onnxruntime, camfleet_contract.runtime; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", (done.returncode, done.stderr[-2000:])


def test_nearest_distances_follow_the_geometry() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(size=(200, 16)).astype(np.float32)
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    index = NeighbourIndex.build(train, np.arange(200) % 4)
    near = train[:5] + 0.01 * rng.normal(size=(5, 16)).astype(np.float32)
    far = -train[:5]
    d_near, d_far = index.distances(near, 1), index.distances(far, 1)
    assert np.all(d_near < 0.01) and np.all(d_far > d_near)


def test_the_index_stores_float16_and_keeps_exact_distances(tmp_path) -> None:
    rng = np.random.default_rng(1)
    train = rng.normal(size=(300, 512)).astype(np.float32)
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    query = train[:20] + 0.3 * rng.normal(size=(20, 512)).astype(np.float32)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    NeighbourIndex.build(train, np.zeros(300, dtype=np.int64)).save(tmp_path)
    loaded = NeighbourIndex.load(tmp_path)
    assert loaded is not None
    assert (tmp_path / "index.usearch").stat().st_size < 300 * 512 * 4 * 0.6  # half the bytes of float32
    exact = np.mean(1.0 - np.sort(query @ train.T, axis=1)[:, ::-1][:, :5], axis=1)
    assert np.allclose(loaded.distances(query, 5), exact, atol=2e-3)
