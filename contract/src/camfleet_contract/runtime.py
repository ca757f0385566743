"""The ONNX Runtime classifier: one implementation and one result type for hub and agent alike."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .anomaly import batch_scores
from .bundle import MODEL, MODEL_INT8, BundleError, Manifest, verify_bundle
from .images import decode_image, preprocess_batch
from .messages import Prediction
from .neighbours import NeighbourIndex

log = logging.getLogger(__name__)

INPUT = "image"
OUTPUTS = ("logits", "embedding")
# ORT's intra-op threads spin-wait between parallel sections by default. On a small box that spinning takes the
# CPU the video decoder, preprocessing and other processes need: under load the agent spent 29 ms CPU per frame
# with it and 17 ms without (docs/BENCHMARKS.md, issue 12).
ALLOW_SPINNING = False


@dataclass(frozen=True)
class Classification:
    label: str
    probability: float
    predictions: list[Prediction]
    anomaly: bool
    anomaly_score: float
    distance: float | None
    embedding: np.ndarray
    latency_ms: float
    none_of_the_above: bool = False  # the top class is one of the manifest's none_classes (then anomaly is True)

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly view (no embedding)."""
        return {
            "label": self.label,
            "probability": self.probability,
            "predictions": [p.model_dump() for p in self.predictions],
            "anomaly": self.anomaly,
            "anomaly_score": self.anomaly_score,
            "distance": self.distance,
            "none_of_the_above": self.none_of_the_above,
        }


@dataclass(frozen=True)
class Assessment:
    """What the bundle's anomaly calibration says of a batch of model outputs, each (N,)."""

    distances: np.ndarray | None  # mean cosine distance to the k nearest training images; None without an index
    none: np.ndarray  # the top class is a none-of-the-above one
    scores: np.ndarray  # the manifest's anomaly score, 1.0 where a none class is on top
    flags: np.ndarray  # above the threshold, or a none class on top


def default_providers() -> list[str]:
    """CUDA when onnxruntime-gpu sees a GPU, else CPU."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """How every classifier session runs: `threads` intra-op threads (default min(4, cores)), full graph
    optimisation, no spin-waiting. Benchmarks use it too, so they measure what hub and agents run."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or min(4, os.cpu_count() or 1)
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if ALLOW_SPINNING else "0")
    return opts


def int8_usable(manifest: Manifest) -> bool:
    """The bundle ships an INT8 model and the trainer measured it within 1 accuracy point of FP32."""
    return MODEL_INT8 in manifest.files and manifest.metrics.get("int8_ok") is True


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e: np.ndarray = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


class ClassifierRuntime:
    """A verified bundle loaded into ONNX Runtime.

    >>> rt = ClassifierRuntime("bundles/door-3", public_key=fleet_key)
    >>> rt.classify([rgb])[0].label
    'open'
    """

    def __init__(
        self,
        bundle_dir: str | Path,
        public_key: str | None = None,
        providers: Sequence[str] | None = None,
        top_k: int = 5,
        threads: int | None = None,
        prefer_int8: bool = False,
    ) -> None:
        self.bundle_dir = Path(bundle_dir)
        self.manifest: Manifest = verify_bundle(self.bundle_dir, public_key)
        # INT8 only when asked for and the trainer vouched for it; otherwise the FP32 model.
        self.model_file = MODEL_INT8 if prefer_int8 and int8_usable(self.manifest) else MODEL
        try:
            self.session = ort.InferenceSession(
                str(self.bundle_dir / self.model_file),
                session_options(threads),
                providers=list(providers or default_providers()),
            )
        except Exception as exc:  # ORT raises its own exception types for bad graphs
            raise BundleError(f"{self.model_file} cannot be loaded by ONNX Runtime: {exc}") from None
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != [INPUT] or not set(OUTPUTS) <= set(outputs):
            raise BundleError(
                f"{self.model_file} has inputs {inputs} and outputs {outputs}; expected {INPUT!r} -> {OUTPUTS}"
            )
        self.index = NeighbourIndex.load(self.bundle_dir)
        self.top_k = max(1, min(top_k, len(self.manifest.classes)))
        self._classes = np.asarray(self.manifest.classes, dtype=object)
        self._none = np.isin(self._classes, self.manifest.none_classes)

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def classes(self) -> list[str]:
        return list(self.manifest.classes)

    @property
    def providers(self) -> list[str]:
        return [str(p) for p in self.session.get_providers()]

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw model outputs (logits, embedding) of a preprocessed batch."""
        logits, embedding = self.session.run(list(OUTPUTS), {INPUT: batch})
        if logits.shape[1] != len(self.manifest.classes):
            raise BundleError(f"model gives {logits.shape[1]} logits for {len(self.manifest.classes)} classes")
        return logits, embedding

    def assess(self, logits: np.ndarray, embedding: np.ndarray) -> Assessment:
        """Distances, none-of-the-above, scores and flags of raw model outputs, the argmax taken once. Callers that
        run the model themselves (the hub's batcher) use this, so they flag exactly what ``classify`` flags."""
        cal = self.manifest.anomaly
        distances = self.index.distances(embedding, cal.k) if self.index is not None else None
        none = self.none_on_top(logits)
        scores = self._scores(logits, embedding, distances, none)
        return Assessment(distances, none, scores, self._flags(scores, none))

    def anomaly_scores(
        self, logits: np.ndarray, embedding: np.ndarray, distances: np.ndarray | None = None
    ) -> np.ndarray:
        """The manifest's anomaly score (N,) of raw model outputs; flag where it is above the threshold. Every
        statistic the bundle was calibrated with (energy, SCALE-shaped energy, kNN distance, confidence) is included.
        """
        if distances is None and self.index is not None:
            distances = self.index.distances(embedding, self.manifest.anomaly.k)
        return self._scores(logits, embedding, distances, self.none_on_top(logits))

    def _scores(
        self, logits: np.ndarray, embedding: np.ndarray, distances: np.ndarray | None, none: np.ndarray
    ) -> np.ndarray:
        scores = batch_scores(logits, embedding, distances, self.manifest.anomaly)
        # A "none of the above" class on top is the strongest evidence the bundle has: the score says so.
        return np.where(none, 1.0, scores)

    def none_on_top(self, logits: np.ndarray) -> np.ndarray:
        """(N,) bools: the most likely class is one of the manifest's none-of-the-above classes."""
        on_top: np.ndarray = self._none[np.asarray(logits).argmax(axis=1)]
        return on_top

    def anomaly_flags(self, logits: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """(N,) bools: fits no known group, i.e. the score is above the threshold or a none class is on top."""
        return self._flags(scores, self.none_on_top(logits))

    def _flags(self, scores: np.ndarray, none: np.ndarray) -> np.ndarray:
        flags: np.ndarray = (np.asarray(scores) > self.manifest.anomaly.threshold) | none
        return flags

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return self.run(self.prepare(images))[1]

    def prepare(self, images: Sequence[np.ndarray], *, bgr: bool = False) -> np.ndarray:
        """The model's input batch of RGB uint8 arrays (BGR with `bgr`; the bundle's preprocessing)."""
        return preprocess_batch(images, self.manifest.preprocessing, bgr=bgr)

    def classify(self, images: Sequence[np.ndarray], *, bgr: bool = False) -> list[Classification]:
        """Classify RGB uint8 arrays (BGR with `bgr`); the latency covers preprocessing and inference per image."""
        if not images:
            return []
        start = time.perf_counter()
        batch = self.prepare(images, bgr=bgr)
        return self.classify_batch(batch, time.perf_counter() - start)

    def classify_batch(self, batch: np.ndarray, prepare_s: float = 0.0) -> list[Classification]:
        """Classify a batch made by ``prepare`` (perhaps on another thread, which took ``prepare_s`` seconds: the
        latency reported covers that and the inference, not the wait in between)."""
        if not len(batch):
            return []
        start = time.perf_counter()
        logits, embedding = self.run(batch)
        cal = self.manifest.anomaly
        probs = softmax(logits, cal.temperature)
        found = self.assess(logits, embedding)
        latency = (time.perf_counter() - start + prepare_s) * 1000.0 / len(batch)
        order = np.argsort(-probs, axis=1)[:, : self.top_k]
        results = []
        for i in range(len(batch)):
            top = [Prediction(label=str(self._classes[j]), probability=float(probs[i, j])) for j in order[i]]
            results.append(
                Classification(
                    label=top[0].label,
                    probability=top[0].probability,
                    predictions=top,
                    anomaly=bool(found.flags[i]),
                    anomaly_score=float(found.scores[i]),
                    distance=None if found.distances is None else float(found.distances[i]),
                    embedding=embedding[i],
                    latency_ms=latency,
                    none_of_the_above=bool(found.none[i]),
                )
            )
        return results

    def classify_bytes(self, blobs: Sequence[bytes]) -> list[Classification]:
        """Decode (raising ImageError for a bad one) and classify."""
        return self.classify([decode_image(b) for b in blobs])
