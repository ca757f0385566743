"""The hub's REST answer and the agent's classification of the same image agree: the precision (fp32 | int8) is
signed into the bundle when the hub registers it, and both the hub's runtime cache and the agent's `classify` CLI
run that model file. The bundle ships a usable INT8 model, so before the choice was explicit the agent (INT8 by
default) and the hub (FP32) ran different files on it."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from camfleet_contract.bundle import MODEL, MODEL_INT8, pack_bundle, sign_bundle, unpack_bundle, verify_bundle
from camfleet_contract.images import decode_image, preprocess_batch
from camfleet_contract.signing import generate_signing_key, public_key_of
from camfleet_hub.api import create_app
from camfleet_hub.app import Hub, HubServices
from camfleet_hub.auth import callers, tokens, users
from camfleet_hub.auth.models import Role
from camfleet_hub.core.config import HubSettings
from camfleet_hub.training.models import ModelVersion
from camfleet_trainer.quantize import quantize_int8
from tests.support.polling import unique
from tests.support.tinybundle import make_bundle

API = "/api/v1"
COLOURS = [(200, 40, 40), (40, 190, 60), (50, 60, 210), (150, 140, 30), (90, 90, 90)]
ATOL = 1e-5  # same file, same runtime: only batch-size arithmetic may differ


def _int8_bundle(tmp: Path) -> bytes:
    """A trainer-signed tiny bundle that also ships a vouched-for INT8 model (as the full trainer's are)."""
    out = tmp / "bundle"
    manifest = make_bundle(out, generate_signing_key(), classifier="imagenet")
    # Static ranges as the trainer quantises (dynamic quantisation would make answers depend on the batch).
    calibration = preprocess_batch([decode_image(_png(c)) for c in COLOURS], manifest.preprocessing)
    quantize_int8(out / MODEL, out / MODEL_INT8, calibration)
    metrics = {**manifest.metrics, "int8_ok": True}
    # "blue" stands for a site's rejected frames: both sides must flag an image whose top class it is.
    update = {"metrics": metrics, "none_classes": ["blue"]}
    sign_bundle(out, manifest.model_copy(update=update), generate_signing_key())
    return pack_bundle(out)


def _png(rgb: tuple[int, int, int]) -> bytes:
    noise = np.random.default_rng(sum(rgb)).integers(0, 50, (48, 48, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def hub(tmp_path: Path, mosquitto: Any) -> Iterator[tuple[HubServices, TestClient]]:
    def start(precision: str) -> tuple[HubServices, TestClient]:
        settings = HubSettings.model_validate(
            {
                "data_dir": str(tmp_path / unique("hub-")),
                "mqtt": {"embedded": False, "host": mosquitto.host, "port": mosquitto.port, "root": unique("cf")},
                "db": {"url": f"sqlite:///{tmp_path / unique('db-')}.db"},
                "ingest": {"enabled": False},
                "auth": {"admin_username": "admin", "admin_password": "admin-password-1"},
                "classify": {"precision_by_classifier": {"*/imagenet": precision}},
            }
        )
        h = Hub(settings, http=False, ingest=False, broker=False)
        services = h.start()
        started.append(h)
        with services.sessions() as session:
            admin = users.get_user_by_name(session, "admin")
            _row, token = tokens.create_token(session, callers.caller_of_user(session, admin), "t", None, Role.ADMIN)
        client = TestClient(create_app(services), headers={"Authorization": f"Bearer {token}"})
        clients.append(client)
        return services, client

    started: list[Hub] = []
    clients: list[TestClient] = []
    yield start  # type: ignore[misc]
    for c in clients:
        c.close()
    for h in started:
        h.stop()


@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_hub_rest_and_agent_cli_agree(hub: Any, tmp_path: Path, precision: str) -> None:
    services, client = hub(precision)
    assert client.post(f"{API}/sites", json={"name": "shop"}).status_code == 201
    assert client.post(f"{API}/sites/shop/classifiers", json={"name": "door"}).status_code == 201
    r = client.put(f"{API}/models/default", files={"file": ("d.zip", _int8_bundle(tmp_path), "application/zip")})
    assert r.status_code in (200, 201), r.text

    images = [_png(c) for c in COLOURS]
    body = {"site": "shop", "classifier": "door", "top_k": 3, "images": [base64.b64encode(d).decode() for d in images]}
    answer = client.post(f"{API}/classify", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"]["precision"] == precision

    # The agent loads the very bundle the hub signed and stored, checked against the fleet key.
    with services.sessions() as session:
        model = session.query(ModelVersion).one()
        sha = model.sha256
    bundle_dir = unpack_bundle(services.store.get(sha, prefix="bundles"), tmp_path / "agent-bundle")
    assert verify_bundle(bundle_dir, None).metrics["precision"] == precision
    paths = []
    for i, data in enumerate(images):
        paths.append(tmp_path / f"img{i}.png")
        paths[-1].write_bytes(data)
    cmd = [sys.executable, "-m", "camfleet_agent", "classify", "--bundle", str(bundle_dir), "--json", "--top-k", "3"]
    cmd += ["--public-key", public_key_of(services.fleet_signing_key), *map(str, paths)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    agent = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert len(agent) == len(images)

    assert {a["model_file"] for a in agent} == {MODEL_INT8 if precision == "int8" else MODEL}
    for hub_result, agent_result in zip(answer.json()["results"], agent, strict=True):
        assert hub_result["label"] == agent_result["label"]
        want = {p["label"]: p["probability"] for p in agent_result["predictions"]}
        got = {p["label"]: p["probability"] for p in hub_result["predictions"]}
        assert got.keys() == want.keys()
        assert np.allclose([got[k] for k in want], list(want.values()), atol=ATOL), (got, want)
        assert hub_result["anomaly"] == agent_result["anomaly"]
        assert hub_result["anomaly_score"] == pytest.approx(agent_result["anomaly_score"], abs=1e-4)
    blue = [r for r in agent if r["label"] == "blue"]
    assert blue and all(r["anomaly"] and r["anomaly_score"] == 1.0 for r in blue), agent
