"""Result upload → verified, versioned, re-signed model; idempotence; bad bundles; promote, announce, rollback."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import onnx
import paho.mqtt.publish as mqtt_publish
from apihelpers import bundle_zip, import_dataset, rewrite_zip, tiny_onnx, write_bundle
from fastapi.testclient import TestClient

from camfleet_contract.bundle import pack_bundle, sign_bundle, unpack_bundle, verify_bundle
from camfleet_contract.messages import ModelAnnouncement, from_json
from camfleet_contract.rollback import verify_rollback
from camfleet_contract.signing import generate_signing_key, public_key_of
from camfleet_hub.api import create_app

API = "/api/v1"
CLF = f"{API}/sites/shop/classifiers/clothes"


def _dataset(client, root: Path) -> None:  # type: ignore[no-untyped-def]
    import_dataset(client, root, per_class=2)


def _claimed_job(client, auto_promote: bool = False) -> int:  # type: ignore[no-untyped-def]
    job_id = client.post(f"{CLF}/jobs", json={"auto_promote": auto_promote}).json()["id"]
    claimed = client.post(f"{API}/jobs/claim", json={"worker": "trainer-1"})
    assert claimed.json()["job"]["id"] == job_id
    return int(job_id)


def _upload(client, job_id: int, data: bytes):  # type: ignore[no-untyped-def]
    return client.post(f"{API}/jobs/{job_id}/result", files={"file": ("bundle.zip", data, "application/zip")})


def _announced(payload: bytes) -> ModelAnnouncement:
    return from_json(ModelAnnouncement, payload)


def test_result_upload_verify_resign_idempotent(api, clothing_subset: Path, tmp_path: Path, trainer_key: str) -> None:
    c = api.client
    _dataset(c, clothing_subset)
    job_id = _claimed_job(c)
    data = bundle_zip(tmp_path, trainer_key, classifier="whatever", version="0")

    r = _upload(c, job_id, data)
    assert r.status_code == 201, r.text
    model = r.json()
    assert (model["version"], model["status"], model["classifier"], model["site"]) == (
        1,
        "candidate",
        "clothes",
        "shop",
    )
    assert model["classes"] == ["dress", "hat", "shoes"] and model["metrics"]["accuracy"] == 0.9
    job = c.get(f"{API}/jobs/{job_id}").json()
    assert (job["status"], job["model_version_id"], job["progress"]) == ("succeeded", model["id"], 1.0)

    again = _upload(c, job_id, data)
    assert again.status_code == 200 and again.json()["id"] == model["id"]
    assert len(c.get(f"{CLF}/models").json()) == 1

    bundle = c.get(model["bundle_url"])
    assert bundle.status_code == 200 and bundle.headers["content-type"] == "application/zip"
    assert hashlib.sha256(bundle.content).hexdigest() == model["sha256"] and len(bundle.content) == model["size"]
    fleet = c.get(f"{API}/keys/fleet").json()["public_key"]
    assert fleet == public_key_of(api.services.fleet_signing_key) != public_key_of(trainer_key)
    manifest = verify_bundle(unpack_bundle(bundle.content, tmp_path / "downloaded"), fleet)
    assert (manifest.version, manifest.classifier, manifest.signer) == ("1", "clothes", fleet)
    assert (manifest.site, manifest.format_version) == ("shop", 2)  # agents check the signed site (issue 10)

    detail = c.get(CLF).json()
    assert [m["version"] for m in detail["models"]] == [1]


def test_bad_bundles_are_422_and_leave_the_job_alone(
    api, clothing_subset: Path, tmp_path: Path, trainer_key: str
) -> None:
    c = api.client
    _dataset(c, clothing_subset)
    job_id = _claimed_job(c)
    good = bundle_zip(tmp_path, trainer_key)
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(good)).read("manifest.json"))
    forged_manifest = json.dumps({**manifest, "classes": ["a", "b", "c"]}).encode()
    other_key_sig = bundle_zip(tmp_path, generate_signing_key())
    cases = {
        "not a zip": (b"definitely not a zip", "not a valid zip"),
        "tampered model": (rewrite_zip(good, {"model.onnx": b"\x08\x07garbage"}), "does not match its sha256"),
        "forged manifest": (rewrite_zip(good, {"manifest.json": forged_manifest}), "signature"),
        "signature of another key": (
            rewrite_zip(good, {"manifest.sig": zipfile.ZipFile(io.BytesIO(other_key_sig)).read("manifest.sig")}),
            "signature",
        ),
        "unexpected member": (rewrite_zip(good, {"../evil.py": b"print(1)"}), "unexpected"),
    }
    for name, (data, reason) in cases.items():
        r = _upload(c, job_id, data)
        assert r.status_code == 422, (name, r.text)
        assert reason in r.json()["detail"], (name, r.json()["detail"])
        job = c.get(f"{API}/jobs/{job_id}").json()
        assert (job["status"], job["model_version_id"]) == ("running", None), name
    assert c.get(f"{CLF}/models").json() == []
    assert _upload(c, job_id, good).status_code == 201
    assert _upload(c, 4242, good).status_code == 404


def test_wrong_outputs_are_rejected(sqlite_api, clothing_subset: Path, tmp_path: Path, trainer_key: str) -> None:
    """A bundle whose model gives 3 logits but whose manifest lists 2 classes never reaches the registry."""
    c = sqlite_api.client
    _dataset(c, clothing_subset)
    job_id = _claimed_job(c)
    out = tmp_path / "mismatch"
    manifest = write_bundle(out, trainer_key, classes=["a", "b"])
    onnx.save(tiny_onnx(3), str(out / "model.onnx"))
    sign_bundle(out, manifest, trainer_key)
    r = _upload(c, job_id, pack_bundle(out))
    assert r.status_code == 422 and "logits" in r.json()["detail"]


def test_promote_announce_and_rollback(api, clothing_subset: Path, tmp_path: Path, trainer_key: str, retained) -> None:
    c = api.client
    _dataset(c, clothing_subset)
    site_topic = api.prefix

    v1 = _upload(c, _claimed_job(c), bundle_zip(tmp_path, trainer_key, model_seed=1)).json()
    v2 = _upload(c, _claimed_job(c), bundle_zip(tmp_path, trainer_key, model_seed=2)).json()
    assert (v1["version"], v2["version"]) == (1, 2)
    assert retained.snapshot(site_topic, "shop") == {}  # candidates are not announced

    r = c.post(f"{API}/models/{v1['id']}/promote")
    assert r.status_code == 200 and r.json()["status"] == "production"
    seen = retained.wait_for(site_topic, "shop", lambda m: "clothes" in m, "the clothes v1 announcement")
    ann = _announced(seen["clothes"])
    bundle = c.get(f"{API}/models/{v1['id']}/bundle").content
    assert (ann.classifier, ann.version, ann.url) == ("clothes", "1", f"{API}/models/{v1['id']}/bundle")
    assert (ann.sha256, ann.size) == (hashlib.sha256(bundle).hexdigest(), len(bundle))
    assert ann.signature == zipfile.ZipFile(io.BytesIO(bundle)).read("manifest.sig").decode().strip()
    assert ann.classes == ["dress", "hat", "shoes"] and ann.rollback is None

    c.post(f"{API}/models/{v2['id']}/promote")
    retained.wait_for(site_topic, "shop", lambda m: _announced(m["clothes"]).version == "2", "v2 announced")
    statuses = {m["version"]: m["status"] for m in c.get(f"{CLF}/models").json()}
    assert statuses == {1: "retired", 2: "production"}

    # rollback: promote the older version again
    c.post(f"{API}/models/{v1['id']}/promote")
    seen = retained.wait_for(site_topic, "shop", lambda m: _announced(m["clothes"]).version == "1", "rollback to v1")
    statuses = {m["version"]: m["status"] for m in c.get(f"{CLF}/models").json()}
    assert statuses == {1: "production", 2: "retired"}
    # Agents refuse a lower version unless the fleet key signed a rollback naming it (issue 10).
    rollback = _announced(seen["clothes"]).rollback
    assert rollback is not None
    assert (rollback.site, rollback.classifier, rollback.version, rollback.replaces) == ("shop", "clothes", "1", "2")
    verify_rollback(rollback, public_key_of(api.services.fleet_signing_key))
    assert c.post(f"{API}/models/999/promote").status_code == 404


def test_default_model_announced_until_a_site_model_exists(
    api, clothing_subset: Path, tmp_path: Path, trainer_key: str, retained
) -> None:
    c = api.client
    prefix = api.prefix
    assert c.get(f"{API}/models/default").status_code == 404
    _dataset(c, clothing_subset)
    default_zip = bundle_zip(tmp_path, trainer_key, classes=["jersey", "sock", "cowboy_hat"], classifier="imagenet")
    r = c.put(f"{API}/models/default", files={"file": ("default.zip", default_zip, "application/zip")})
    assert r.status_code == 200, r.text
    default = r.json()
    assert default["default"] is True and default["classifier"] is None and default["status"] == "production"
    assert c.get(f"{API}/models/default").json()["id"] == default["id"]
    bad = c.put(f"{API}/models/default", files={"file": ("x.zip", b"junk", "application/zip")})
    assert bad.status_code == 422

    seen = retained.wait_for(prefix, "shop", lambda m: "imagenet" in m, "the default announcement")
    assert _announced(seen["imagenet"]).classes == ["jersey", "sock", "cowboy_hat"]
    signed = verify_bundle(unpack_bundle(c.get(default["bundle_url"]).content, tmp_path / "default"), None)
    assert (signed.site, signed.classifier) == ("*", "imagenet")  # never a site classifier (issue 10)
    c.post(f"{API}/sites", json={"name": "plaza"})  # a new site gets the default at once
    retained.wait_for(prefix, "plaza", lambda m: "imagenet" in m, "the default for a new site")
    assert c.post(f"{API}/models/{default['id']}/promote").status_code == 422

    job_id = _claimed_job(c, auto_promote=True)
    model = _upload(c, job_id, bundle_zip(tmp_path, trainer_key)).json()
    assert c.get(f"{API}/models/{model['id']}").json()["status"] == "production"  # auto-promoted
    seen = retained.wait_for(
        prefix, "shop", lambda m: "clothes" in m and "imagenet" not in m, "site model announced, default cleared"
    )
    assert _announced(seen["clothes"]).version == "1"
    assert "imagenet" in retained.snapshot(prefix, "plaza")  # the other site still runs the default


def test_startup_reannounces(api, clothing_subset: Path, tmp_path: Path, trainer_key: str, retained, mosquitto) -> None:
    c = api.client
    _dataset(c, clothing_subset)
    model = _upload(c, _claimed_job(c), bundle_zip(tmp_path, trainer_key)).json()
    c.post(f"{API}/models/{model['id']}/promote")
    topic = api.services.topics.model("shop", "clothes")
    retained.wait_for(api.prefix, "shop", lambda m: "clothes" in m, "first announcement")
    mqtt_publish.single(topic, b"", qos=1, retain=True, hostname=mosquitto.host, port=mosquitto.port)
    retained.wait_for(api.prefix, "shop", lambda m: "clothes" not in m, "the announcement wiped by hand")
    with TestClient(create_app(api.services)):
        retained.wait_for(api.prefix, "shop", lambda m: "clothes" in m, "the start-up re-announcement")
