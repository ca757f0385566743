"""Plain helpers for the hub API tests: zips, a tiny real signed bundle, reading retained MQTT messages."""

from __future__ import annotations

import io
import json
import stat
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from camfleet_contract.anomaly import calibrate
from camfleet_contract.bundle import Manifest, pack_bundle, sign_bundle
from camfleet_contract.images import Preprocessing
from camfleet_contract.neighbours import NeighbourIndex
from tests.support.polling import WAIT_S, unique, wait_for  # noqa: F401 - re-exported
from tests.support.tinybundle import tiny_onnx as build_tiny_onnx

CLASSES = ["dress", "hat", "shoes"]
EMBED_DIM = 8
SIZE = 32


# --------------------------------------------------------------------------- zips


def make_zip(entries: Iterable[tuple[str, bytes]], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, data in entries:
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return buf.getvalue()


def symlink_entry(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # unix
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


def make_zip_with(entries: Iterable[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


def dataset_zip(root: Path, per_class: int, classes: Iterable[str] = CLASSES, prefix: str = "") -> bytes:
    """A folder-per-class zip of the first ``per_class`` real images of each class folder under ``root``."""
    entries = []
    for cls in classes:
        for path in sorted((root / cls).glob("*.jpg"))[:per_class]:
            entries.append((f"{prefix}{cls}/{path.name}", path.read_bytes()))
    return make_zip(entries)


def import_dataset(
    client: Any, root: Path, per_class: int = 3, classes: Iterable[str] = CLASSES, classifier: str = "clothes"
) -> str:
    """Site ``shop`` and ``classifier`` (created when missing) with the first ``per_class`` images of each class of
    ``root/train`` imported as groups (waiting for the import job); returns the classifier's API path."""
    client.post("/api/v1/sites", json={"name": "shop"})
    client.post("/api/v1/sites/shop/classifiers", json={"name": classifier})
    url = f"/api/v1/sites/shop/classifiers/{classifier}"
    data = dataset_zip(root / "train", per_class, classes)
    r = client.post(f"{url}/import?wait=true", files={"file": ("d.zip", data, "application/zip")})
    assert r.status_code == 200, r.text
    return url


# --------------------------------------------------------------------------- bundles


def tiny_onnx(classes: int, seed: int = 0) -> onnx.ModelProto:
    """The tests' one tiny-model builder at this module's input size and embedding width."""
    return build_tiny_onnx(classes, size=SIZE, embed_dim=EMBED_DIM, seed=seed, scale=4.0)


def write_bundle(
    out_dir: Path,
    seed_hex: str,
    classes: list[str] | None = None,
    classifier: str = "clothes",
    version: str = "0",
    model_seed: int = 0,
    report: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> Manifest:
    """A signed bundle in ``out_dir`` with a usearch index, calibrated anomaly thresholds and maybe a report."""
    classes = classes or CLASSES
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx.save(tiny_onnx(len(classes), model_seed), str(out_dir / "model.onnx"))
    rng = np.random.default_rng(model_seed)
    train = rng.normal(size=(30, EMBED_DIM)).astype(np.float32)
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    index = NeighbourIndex.build(train, np.arange(30) % len(classes))
    index.save(out_dir)
    if report is not None:
        (out_dir / "report.json").write_text(json.dumps(report))
    manifest = Manifest(
        classifier=classifier,
        version=version,
        classes=classes,
        backbone="tiny-pool",
        embedding_dim=EMBED_DIM,
        preprocessing=Preprocessing(size=SIZE, resize=SIZE),
        anomaly=calibrate(0.5 + 0.5 * rng.random(20), index.distances(train[:20], 5), k=5),
        metrics=metrics or {"accuracy": 0.9, "val_images": 15},
    )
    return sign_bundle(out_dir, manifest, seed_hex)


def bundle_zip(tmp: Path, seed_hex: str, **kw: Any) -> bytes:
    out = tmp / unique("bundle-")
    write_bundle(out, seed_hex, **kw)
    return pack_bundle(out)


def sample_report(images: list[dict[str, Any]], classes: list[str] | None = None) -> dict[str, Any]:
    """A report.json as the trainer writes it, over the hub's ``images`` (from GET …/images).

    Every image gets an out-of-fold row; the first image of each class is "mislabelled" (the model doubts it
    and predicts the next class), with self-confidence falling along the list so the order is known.
    """
    classes = classes or CLASSES
    rows = []
    seen: set[str] = set()
    for n, img in enumerate(images):
        label = img["group"]
        doubtful = label not in seen
        seen.add(label)
        predicted = classes[(classes.index(label) + 1) % len(classes)] if doubtful else label
        p_label = 0.01 * (n + 1) if doubtful else 0.9 + 0.001 * n
        rows.append(
            {
                "name": f"image {img['id']}",
                "sha256": img["sha256"],
                "label": label,
                "predicted": predicted,
                "p_label": p_label,
                "p_predicted": 1 - p_label,
                "distance": 0.1,
            }
        )
    rows.append({"name": "x", "sha256": "f" * 64, "label": "hat", "predicted": "hat", "p_label": 0.0})  # not ours
    rows.sort(key=lambda r: r["p_label"])
    return {
        "classes": classes,
        "counts": {c: 3 for c in classes},
        "metrics": {
            "mode": "quick",
            "oof_accuracy": 0.9,
            "per_class": {c: {"precision": 0.9, "recall": 0.8, "support": 3} for c in classes},
            "confusion": [[3 if i == j else 1 for j in range(len(classes))] for i in range(len(classes))],
            "temperature": 1.3,
        },
        "label_errors": rows,
        "thresholds": {"anomaly_threshold": 0.93, "target_flag_rate": 0.05},
        "int8": {"accuracy": 0.89, "fp32_accuracy": 0.9, "speedup": 2.1},
    }


def rewrite_zip(data: bytes, replace: dict[str, bytes]) -> bytes:
    """The same zip with some members' bytes replaced or added (to tamper with a bundle)."""
    src = zipfile.ZipFile(io.BytesIO(data))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as out:
        for info in src.infolist():
            out.writestr(info.filename, replace.get(info.filename, src.read(info.filename)))
        for name, content in replace.items():
            if name not in src.namelist():
                out.writestr(name, content)
    return buf.getvalue()


# --------------------------------------------------------------------------- mqtt


class RetainedReader:
    """Reads what the broker holds retained under ``{root}/v1/{site}/models/+`` (a fresh subscriber's view)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    def snapshot(self, prefix: str, site: str, timeout_s: float = 10.0) -> dict[str, bytes]:
        """Retained payloads by classifier; a marker published after SUBACK ends the retained burst."""
        messages: dict[str, bytes] = {}
        done = threading.Event()
        subscribed = threading.Event()
        marker_topic = f"{prefix}/{site}/models/zz-marker-{uuid.uuid4().hex[:8]}"

        def on_message(_c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
            if msg.topic == marker_topic:
                done.set()
            elif msg.retain:
                messages[msg.topic.rsplit("/", 1)[-1]] = bytes(msg.payload)

        client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=unique("reader-"))
        client.on_message = on_message
        client.on_subscribe = lambda *_a: subscribed.set()
        client.connect(self.host, self.port)
        client.loop_start()
        try:
            client.subscribe(f"{prefix}/{site}/models/+", qos=1)
            assert subscribed.wait(timeout_s), "no SUBACK from mosquitto"
            client.publish(marker_topic, b"marker", qos=1).wait_for_publish(timeout_s)
            assert done.wait(timeout_s), "marker never came back"
        finally:
            client.loop_stop()
            client.disconnect()
        return messages

    def wait_for(
        self, prefix: str, site: str, predicate: Callable[[dict[str, bytes]], bool], what: str
    ) -> dict[str, bytes]:
        """Snapshots until ``predicate`` holds (the hub publishes asynchronously); fails naming ``what``."""
        last: dict[str, bytes] = {}

        def check() -> bool:
            nonlocal last
            last = self.snapshot(prefix, site)
            return predicate(last)

        deadline = time.monotonic() + WAIT_S
        while not check():
            if time.monotonic() > deadline:
                pytest.fail(f"retained announcements never showed {what}; last: {last!r}")
            time.sleep(0.1)
        return last
