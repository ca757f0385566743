"""POST /classify: multipart and base64, the production model or the ImageNet default, bad images as 4xx."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from apihelpers import bundle_zip, dataset_zip

from camfleet_contract.bundle import unpack_bundle
from camfleet_contract.images import decode_image
from camfleet_contract.runtime import ClassifierRuntime

API = "/api/v1"
CLF = f"{API}/sites/shop/classifiers/clothes"


def _images(root: Path) -> list[tuple[str, bytes]]:
    return [
        (p.name, p.read_bytes())
        for cls in ("dress", "hat")
        for p in sorted((root / "validation" / cls).glob("*.jpg"))[:1]
    ]


def _site(client, root: Path) -> None:  # type: ignore[no-untyped-def]
    client.post(f"{API}/sites", json={"name": "shop"})
    client.post(f"{API}/sites/shop/classifiers", json={"name": "clothes"})
    data = dataset_zip(root / "train", per_class=2)
    client.post(f"{CLF}/import?wait=true", files={"file": ("d.zip", data, "application/zip")})


def _multipart(client, images: list[tuple[str, bytes]], site: str = "shop", clf: str = "clothes"):  # type: ignore[no-untyped-def]
    files = [("files", (name, data, "image/jpeg")) for name, data in images]
    return client.post(f"{API}/classify", data={"site": site, "classifier": clf}, files=files)


def _json(client, images: list[bytes], site: str = "shop", clf: str = "clothes"):  # type: ignore[no-untyped-def]
    body = {"site": site, "classifier": clf, "images": [base64.b64encode(d).decode() for d in images]}
    return client.post(f"{API}/classify", json=body)


def _promoted_model(client, tmp_path: Path, key: str) -> dict:  # type: ignore[type-arg, no-untyped-def]
    job_id = client.post(f"{CLF}/jobs", json={}).json()["id"]
    client.post(f"{API}/jobs/claim", json={"worker": "t1"})
    model = client.post(
        f"{API}/jobs/{job_id}/result", files={"file": ("b.zip", bundle_zip(tmp_path, key), "application/zip")}
    ).json()
    assert client.post(f"{API}/models/{model['id']}/promote").status_code == 200
    return model  # type: ignore[no-any-return]


def test_classify_with_default_then_production_model(
    api, clothing_subset: Path, tmp_path: Path, trainer_key: str
) -> None:
    c = api.client
    _site(c, clothing_subset)
    images = _images(clothing_subset)

    none = _multipart(c, images)
    assert none.status_code == 503 and "no model exists yet" in none.json()["detail"]

    default_zip = bundle_zip(tmp_path, trainer_key, classes=["jersey", "sock", "cowboy_hat"], classifier="imagenet")
    c.put(f"{API}/models/default", files={"file": ("d.zip", default_zip, "application/zip")})
    r = _multipart(c, images)
    assert r.status_code == 200, r.text
    assert r.json()["model"]["default"] is True and r.json()["model"]["classifier"] == "imagenet"
    assert {res["label"] for res in r.json()["results"]} <= {"jersey", "sock", "cowboy_hat"}

    model = _promoted_model(c, tmp_path, trainer_key)
    r = _multipart(c, images)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["model"] == {
        "id": model["id"],
        "classifier": "clothes",
        "version": 1,
        "default": False,
        "precision": "fp32",
    }
    assert len(answer["results"]) == 2
    for res in answer["results"]:
        assert res["label"] in ("dress", "hat", "shoes")
        assert [p["label"] for p in res["predictions"]][0] == res["label"]
        assert len(res["predictions"]) == 3
        assert abs(sum(p["probability"] for p in res["predictions"]) - 1.0) < 1e-5
        assert 0.0 <= res["anomaly_score"] <= 1.0 and isinstance(res["anomaly"], bool)

    # base64 JSON gives the same answer as multipart, and both agree with the contract runtime on the bundle
    js = _json(c, [d for _n, d in images])
    assert js.status_code == 200
    assert [x["label"] for x in js.json()["results"]] == [x["label"] for x in answer["results"]]
    bundle_dir = unpack_bundle(c.get(model["bundle_url"]).content, tmp_path / "local")
    local = ClassifierRuntime(bundle_dir, public_key=c.get(f"{API}/keys/fleet").json()["public_key"])
    expected = local.classify([decode_image(d) for _n, d in images])
    for got, want in zip(js.json()["results"], expected, strict=True):
        assert got["label"] == want.label
        assert got["probability"] == pytest.approx(want.probability, abs=1e-6)
        assert got["anomaly"] == want.anomaly


def test_bad_classify_requests(sqlite_api, clothing_subset: Path, tmp_path: Path, trainer_key: str) -> None:
    c = sqlite_api.client
    _site(c, clothing_subset)
    _promoted_model(c, tmp_path, trainer_key)
    good = _images(clothing_subset)[0][1]

    r = _multipart(c, [("ok.jpg", good), ("notes.txt", b"hello")])
    assert r.status_code == 422 and "images[1] (notes.txt)" in r.json()["detail"]
    r = _multipart(c, [("cut.jpg", good[: len(good) // 3])])
    assert r.status_code == 422 and "images[0] (cut.jpg)" in r.json()["detail"]
    r = c.post(f"{API}/classify", json={"site": "shop", "classifier": "clothes", "images": ["!!not base64!!"]})
    assert r.status_code == 422 and "images[0]" in r.json()["detail"] and "base64" in r.json()["detail"]
    r = _json(c, [good, b"GIF89a-broken"])
    assert r.status_code == 422 and "images[1]" in r.json()["detail"]
    r = c.post(f"{API}/classify", json={"site": "shop", "classifier": "clothes", "images": []})
    assert r.status_code == 422 and "images" in r.json()["detail"]
    r = c.post(f"{API}/classify", json={"site": "shop", "classifier": "bad name", "images": ["AA=="]})
    assert r.status_code == 422 and "classifier='bad name'" in r.json()["detail"]
    r = _json(c, [good] * 33)
    assert r.status_code == 413 and "33 images" in r.json()["detail"]
    assert _multipart(c, [("a.jpg", good)], clf="unknown").status_code == 404
    assert _multipart(c, [("a.jpg", good)], site="elsewhere").status_code == 404
    r = c.post(f"{API}/classify", data={"site": "shop"}, files=[("files", ("a.jpg", good, "image/jpeg"))])
    assert r.status_code == 422 and "classifier" in r.json()["detail"]
    r = c.post(f"{API}/classify", data={"site": "shop", "classifier": "clothes"})
    assert r.status_code == 422
    r = c.post(f"{API}/classify", content=good, headers={"content-type": "image/jpeg"})
    assert r.status_code == 422 and "content-type" in r.json()["detail"]
