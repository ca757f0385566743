"""Trainer fixtures: one backbone, one embedding cache and one trained bundle shared by the trainer tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from camfleet_contract.images import decode_image
from camfleet_contract.signing import load_or_create_key
from camfleet_trainer.backbone import Backbone, build_backbone, configure_threads
from camfleet_trainer.data import load_folder
from camfleet_trainer.pipeline import BundleTarget, TrainOutcome
from camfleet_trainer.quick_bundle import QuickBundleOptions, train_quick_bundle


@dataclass
class Trained:
    """The shared quick-mode bundle trained on clothing_subset/train."""

    outcome: TrainOutcome
    bundle: Path
    seed: str


def read_images(folder: Path) -> dict[str, list[np.ndarray]]:
    """Decoded RGB images per class sub-folder."""
    return {
        d.name: [decode_image(f.read_bytes()) for f in sorted(d.glob("*.jpg"))]
        for d in sorted(folder.iterdir())
        if d.is_dir()
    }


@pytest.fixture(scope="session")
def backbone() -> Backbone:
    configure_threads(None)
    return build_backbone()


@pytest.fixture(scope="session")
def trainer_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Embedding cache shared by every trainer test, so each image is embedded once per session."""
    return tmp_path_factory.mktemp("trainer-cache")


@pytest.fixture(scope="session")
def trainer_seed(trainer_cache: Path) -> str:
    return load_or_create_key(trainer_cache / "trainer.key")


@pytest.fixture(scope="session")
def trained(
    clothing_subset: Path, backbone: Backbone, trainer_cache: Path, trainer_seed: str, tmp_path_factory
) -> Trained:
    out = tmp_path_factory.mktemp("trained") / "bundle"
    outcome = train_quick_bundle(
        load_folder(clothing_subset / "train"),
        backbone,
        BundleTarget(out, trainer_seed, classifier="clothes", device=torch.device("cpu")),
        QuickBundleOptions(cache_dir=trainer_cache),
    )
    return Trained(outcome, out, trainer_seed)


@pytest.fixture(scope="session")
def validation_images(clothing_subset: Path) -> dict[str, list[np.ndarray]]:
    return read_images(clothing_subset / "validation")


@dataclass
class FullRun:
    """The shared full-mode run: `camfleet-trainer train --mode full` at 128 px for 2 epochs, INT8 on, shoes as the
    none-of-the-above group."""

    bundle: Path
    stdout: str
    stderr: str
    returncode: int


@pytest.fixture(scope="session")
def full_run(clothing_subset: Path, trainer_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> FullRun:
    """One real fine-tune through the CLI (about a minute on 2 cores), shared by test_full and test_int8."""
    import os
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("full") / "bundle"
    proc = subprocess.run(
        [
            sys.executable, "-m", "camfleet_trainer", "train", "--mode", "full",
            "--data", str(clothing_subset / "train"), "--out", str(out), "--cache-dir", str(trainer_cache),
            "--classifier", "clothes", "--epochs", "2", "--image-size", "128", "--batch-size", "16", "--int8",
            "--no-progress", "--none-group", "shoes",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    return FullRun(out, proc.stdout, proc.stderr, proc.returncode)
