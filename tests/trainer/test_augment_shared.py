"""Training views are normalised by the contract's own function (no second copy), and importing the trainer's
augmentation changes no process-wide multiprocessing setting."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from camfleet_contract.images import Preprocessing, normalise, preprocess
from camfleet_trainer.augment import Augment, augment

PRELOAD = "import multiprocessing.forkserver as f, camfleet_trainer.augment; print(f._forkserver._preload_modules)"


def test_an_identity_view_is_the_inference_preprocessing() -> None:
    """No crop, flip or jitter: the training view is what the agent computes for the same pixels."""
    spec = Preprocessing(size=64, resize=64, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    rgb = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    identity = Augment("light", (1.0, 1.0), 0.0, ratio=(1.0, 1.0), flip=False)
    view = augment(rgb, spec, identity, np.random.default_rng(2))
    np.testing.assert_allclose(view, preprocess(rgb, spec), atol=1e-5)
    np.testing.assert_allclose(
        normalise(rgb.astype(np.float32) / 255.0, spec, unit=True), normalise(rgb, spec), atol=1e-5
    )


def test_importing_the_augmentation_leaves_the_forkserver_alone() -> None:
    out = subprocess.run([sys.executable, "-c", PRELOAD], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "['__main__']", out.stdout
