"""Import jobs from folder-per-class zips and server folders: real images, hostile entries, duplicates, reasons.

Imports are background jobs; ``?wait=true`` returns the finished job, and its items say what became of each file.
"""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from pathlib import Path

import pytest
from apihelpers import dataset_zip, make_zip, make_zip_with, symlink_entry

from camfleet_contract.images import probe_image
from camfleet_hub.core.errors import InvalidError, TooLargeError
from camfleet_hub.imports.sources import ImportLimits, iter_zip, resolve_import_root

API = "/api/v1"
CLF = f"{API}/sites/shop/classifiers/clothes"


def _setup(client) -> None:  # type: ignore[no-untyped-def]
    assert client.post(f"{API}/sites", json={"name": "shop"}).status_code == 201
    assert client.post(f"{API}/sites/shop/classifiers", json={"name": "clothes"}).status_code == 201


def _upload(client, data: bytes, name: str = "data.zip"):  # type: ignore[no-untyped-def]
    return client.post(f"{CLF}/import", params={"wait": "true"}, files={"file": (name, data, "application/zip")})


def _items(client, job: dict, outcome: str | None = None) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    params = {"limit": 1000, **({"outcome": outcome} if outcome else {})}
    r = client.get(f"{API}/imports/{job['id']}/items", params=params)
    assert r.status_code == 200, r.text
    return r.json()["items"]  # type: ignore[no-any-return]


def _rejected(client, job: dict) -> dict[str, str]:  # type: ignore[no-untyped-def,type-arg]
    return {i["name"]: i["reason"] for i in _items(client, job, "rejected")}


def _count(job: dict, outcome: str) -> int:  # type: ignore[type-arg]
    return int(job["counts"].get(outcome, 0))


def test_zip_import_with_hostile_and_broken_entries(api, clothing_subset: Path) -> None:
    c = api.client
    _setup(c)
    train = clothing_subset / "train"
    good = [
        (f"{cls}/{p.name}", p.read_bytes()) for cls in ("dress", "hat") for p in sorted((train / cls).glob("*.jpg"))[:3]
    ]
    jpeg = good[0][1]
    entries = [
        *good,
        ("hat/readme.txt", b"these are hats\n"),  # not an image
        ("hat/truncated.jpg", jpeg[: len(jpeg) // 2]),  # truncated JPEG
        ("../evil.jpg", jpeg),  # traversal
        ("dress/../../evil2.jpg", jpeg),  # traversal inside
        ("/abs/dress/abs.jpg", jpeg),  # absolute
        ("dress/copy-of-first.jpg", jpeg),  # duplicate bytes under another name
        ("loose.jpg", good[3][1]),  # not in a class folder: the triage inbox, unless its bytes came already
        ("bad group/x.jpg", jpeg),  # class folder name not allowed
        ("dress/zeros.jpg", b"\0" * 3_000_000),  # zip-bomb-like ratio
    ]
    data = make_zip_with([*entries, symlink_entry("dress/link.jpg", "/etc/passwd")])
    r = _upload(c, data)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "succeeded" and body["kind"] == "zip"
    assert body["total"] == body["done"] == len(entries) + 1
    assert _count(body, "imported") == 6
    assert _count(body, "duplicate") == 2
    assert _count(body, "previously_deleted") == 0
    assert body["counts"]["groups"] == {"dress": 3, "hat": 3}
    rejected = _rejected(c, body)
    assert set(rejected) == {
        "hat/readme.txt",
        "hat/truncated.jpg",
        "../evil.jpg",
        "dress/../../evil2.jpg",
        "/abs/dress/abs.jpg",
        "bad group/x.jpg",
        "dress/zeros.jpg",
        "dress/link.jpg",
    }
    assert "not a readable image" in rejected["hat/readme.txt"]
    assert "truncated" in rejected["hat/truncated.jpg"] or "corrupt" in rejected["hat/truncated.jpg"]
    assert "traversal" in rejected["../evil.jpg"]
    assert "traversal" in rejected["dress/../../evil2.jpg"]
    assert "absolute" in rejected["/abs/dress/abs.jpg"]
    assert "bad group" in rejected["bad group/x.jpg"]
    assert "compression ratio" in rejected["dress/zeros.jpg"]
    assert "symbolic link" in rejected["dress/link.jpg"]
    # nothing was written outside the store
    assert not (api.services.settings.data_dir.parent / "evil.jpg").exists()

    detail = c.get(CLF).json()
    counts = {g["name"]: g["counts"] for g in detail["groups"]}
    assert counts == {"dress": {"NEW": 0, "GROUP": 3, "DELETED": 0}, "hat": {"NEW": 0, "GROUP": 3, "DELETED": 0}}
    assert detail["counts"]["GROUP"] == 6

    dupes = {i["name"]: i for i in _items(c, body, "duplicate")}
    assert set(dupes) == {"dress/copy-of-first.jpg", "loose.jpg"}
    assert all(i["image_id"] is not None for i in dupes.values())
    # every file has exactly one item
    assert len(_items(c, body)) == body["total"]

    # the same zip again: every image is a duplicate now
    again = _upload(c, data).json()
    assert (_count(again, "imported"), _count(again, "duplicate")) == (0, 8)


def test_deleted_images_are_not_offered_again(api, clothing_subset: Path) -> None:
    c = api.client
    _setup(c)
    data = dataset_zip(clothing_subset / "train", per_class=2, classes=("dress", "shoes"))
    assert _count(_upload(c, data).json(), "imported") == 4
    images = c.get(f"{CLF}/images", params={"group": "shoes"}).json()
    assert len(images) == 2
    r = c.patch(f"{API}/images/{images[0]['id']}", json={"status": "DELETED"})
    assert r.status_code == 200 and r.json()["status"] == "DELETED"
    body = _upload(c, data).json()
    assert body["counts"] == {"duplicate": 3, "previously_deleted": 1}
    (deleted,) = _items(c, body, "previously_deleted")
    assert deleted["image_id"] == images[0]["id"] and "deleted" in deleted["reason"]
    listed = c.get(f"{CLF}/images", params={"status": "GROUP"}).json()
    assert len(listed) == 3
    assert c.get(CLF).json()["counts"] == {"NEW": 0, "GROUP": 3, "DELETED": 1}


def test_image_listing_content_thumbnail_and_moves(sqlite_api, clothing_subset: Path) -> None:
    c = sqlite_api.client
    _setup(c)
    _upload(c, dataset_zip(clothing_subset / "train", per_class=2))
    images = c.get(f"{CLF}/images", params={"limit": 10}).json()
    assert len(images) == 6
    first = images[0]
    original = (clothing_subset / "train" / first["group"] / Path(first["original_name"]).name).read_bytes()
    content = c.get(first["content_url"])
    assert content.status_code == 200 and content.content == original
    assert content.headers["content-type"] == "image/jpeg"
    thumb = c.get(first["thumbnail_url"])
    assert thumb.status_code == 200
    fmt, w, h = probe_image(thumb.content)
    assert fmt == "JPEG" and max(w, h) <= 256
    assert c.get(first["thumbnail_url"]).content == thumb.content  # cached: same bytes
    assert c.get(f"{API}/blobs/{first['sha256']}").content == original
    assert c.get(f"{API}/blobs/not-a-sha").status_code == 422
    assert c.get(f"{API}/blobs/{'0' * 64}").status_code == 404

    moved = c.patch(f"{API}/images/{first['id']}", json={"group": "new-group", "status": "NEW"})
    assert moved.status_code == 200
    assert (moved.json()["group"], moved.json()["status"]) == ("new-group", "NEW")
    assert c.get(CLF).json()["new_count"] == 1
    assert len(c.get(f"{CLF}/images", params={"status": "NEW"}).json()) == 1
    assert c.get(f"{CLF}/images", params={"status": "WRONG"}).status_code == 422
    assert c.get(f"{CLF}/images", params={"group": "nothing"}).status_code == 404
    assert c.patch(f"{API}/images/{first['id']}", json={"group": "bad/name"}).status_code == 422


def test_server_folder_import(sqlite_api, clothing_subset: Path, tmp_path: Path) -> None:
    c = sqlite_api.client
    _setup(c)
    root = tmp_path / "folder"
    for cls in ("dress", "hat"):
        (root / cls).mkdir(parents=True)
        for p in sorted((clothing_subset / "train" / cls).glob("*.jpg"))[:2]:
            shutil.copyfile(p, root / cls / p.name)
    (root / "hat" / "notes.txt").write_text("not an image")
    secret = tmp_path / "secret.jpg"
    shutil.copyfile(next((clothing_subset / "validation" / "dress").glob("*.jpg")), secret)
    os.symlink(secret, root / "dress" / "link.jpg")
    os.symlink(tmp_path, root / "linked-dir")

    r = c.post(f"{CLF}/import", params={"wait": "true"}, json={"path": str(root)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["kind"] == "folder" and body["params"]["path"] == str(root.resolve())
    assert _count(body, "imported") == 4 and body["counts"]["groups"] == {"dress": 2, "hat": 2}
    rejected = _rejected(c, body)
    assert set(rejected) == {"hat/notes.txt", "dress/link.jpg", "linked-dir"}
    assert "symbolic link" in rejected["dress/link.jpg"]

    missing = c.post(f"{CLF}/import", json={"path": str(tmp_path / "nope")})
    assert missing.status_code == 422 and "does not exist" in missing.json()["detail"]
    a_file = c.post(f"{CLF}/import", json={"path": str(secret)})
    assert a_file.status_code == 422 and "not a directory" in a_file.json()["detail"]
    assert c.post(f"{CLF}/import", json={"path": str(root), "extra": 1}).status_code == 422


def test_bad_uploads(sqlite_api) -> None:
    c = sqlite_api.client
    _setup(c)
    r = _upload(c, b"this is not a zip")
    assert r.status_code == 422 and "zip" in r.json()["detail"]
    r = c.post(f"{CLF}/import", files={"other": ("x.zip", b"PK", "application/zip")})
    assert r.status_code == 422 and "file" in r.json()["detail"]
    r = c.post(f"{CLF}/import", json={"urls": ["http://x/a.jpg"], "path": "/tmp"})
    assert r.status_code == 422 and "exactly one" in r.json()["detail"]
    assert c.post(f"{CLF}/import", json={}).status_code == 422
    assert c.post(f"{CLF}/import", json={"urls": []}).status_code == 422
    assert c.post(f"{CLF}/import", json={"urls": ["http://x/a.jpg"], "group": "bad/name"}).status_code == 422
    # nothing was queued by the refused requests
    assert c.get(f"{CLF}/imports").json() == []
    r = c.post(f"{CLF}/import", content=b"raw", headers={"content-type": "application/octet-stream"})
    assert r.status_code == 422 and "content-type" in r.json()["detail"]
    assert c.post(f"{API}/sites/shop/classifiers/none/import", json={"path": "/"}).status_code == 404


def test_zip_limits_refuse_the_whole_archive() -> None:
    data = make_zip([(f"a/{i}.jpg", b"x" * 100) for i in range(5)], compression=zipfile.ZIP_STORED)
    with pytest.raises(TooLargeError, match="5 files"):
        list(iter_zip(io.BytesIO(data), ImportLimits(max_files=4)))
    with pytest.raises(TooLargeError, match="unpacks to 500 bytes"):
        list(iter_zip(io.BytesIO(data), ImportLimits(max_total_bytes=499)))
    with pytest.raises(TooLargeError, match="upload"):
        list(iter_zip(io.BytesIO(data), ImportLimits(max_upload_bytes=10)))
    with pytest.raises(InvalidError, match="zip"):
        list(iter_zip(io.BytesIO(b"PK\x03\x04 broken"), ImportLimits()))
    reasons = [e.reason for e in iter_zip(io.BytesIO(data), ImportLimits(max_file_bytes=50))]
    assert all(r and "exceeds the limit" in r for r in reasons)


def test_server_folder_must_lie_inside_the_allowed_roots(tmp_path: Path) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    (allowed / "data").mkdir(parents=True)
    outside.mkdir()
    os.symlink(outside, allowed / "escape")
    assert resolve_import_root(str(allowed / "data"), [allowed]) == (allowed / "data").resolve()
    with pytest.raises(InvalidError, match="outside the allowed import roots"):
        resolve_import_root(str(outside), [allowed])
    with pytest.raises(InvalidError, match="outside the allowed import roots"):
        resolve_import_root(str(allowed / "escape"), [allowed])  # a symlink does not smuggle a path in
    with pytest.raises(InvalidError, match="outside the allowed import roots"):
        resolve_import_root(str(allowed / "data" / ".." / ".." / "outside"), [allowed])
