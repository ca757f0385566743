"""Import job sources other than a zip: browser uploads, URL lists (loopback server), web search, server folder
roles; progress, cancel, resume after a restart, and remembered deletes across sources."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from apihelpers import dataset_zip, wait_for
from PIL import Image as PILImage
from pydantic import SecretStr
from sqlalchemy import func, select

from camfleet_hub.auth import callers, tokens, users
from camfleet_hub.auth.models import Role
from camfleet_hub.datasets import crud
from camfleet_hub.datasets.models import Image
from camfleet_hub.imports.models import ImportItem, ImportJob, ImportStatus
from camfleet_hub.imports.search import NOT_CONFIGURED
from tests.support.loopback_http import LoopbackServer, loopback_server

API = "/api/v1"
CLF = f"{API}/sites/shop/classifiers/clothes"


@pytest.fixture
def web() -> Iterator[LoopbackServer]:
    with loopback_server() as server:
        yield server


def _setup(client) -> None:  # type: ignore[no-untyped-def]
    assert client.post(f"{API}/sites", json={"name": "shop"}).status_code == 201
    assert client.post(f"{API}/sites/shop/classifiers", json={"name": "clothes"}).status_code == 201


def _jpegs(root: Path, cls: str, n: int) -> list[bytes]:
    return [p.read_bytes() for p in sorted((root / "train" / cls).glob("*.jpg"))[:n]]


def _items(client, job_id: int, outcome: str | None = None) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    params = {"limit": 1000, **({"outcome": outcome} if outcome else {})}
    return client.get(f"{API}/imports/{job_id}/items", params=params).json()["items"]  # type: ignore[no-any-return]


def _by_name(items: list[dict]) -> dict[str, dict]:  # type: ignore[type-arg]
    return {i["name"]: i for i in items}


def _absurd_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A real 1x1 PNG whose header (with a valid CRC) claims ``width`` x ``height``."""
    buf = io.BytesIO()
    PILImage.new("RGB", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = bytes(data[12:16]) + struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr) & 0xFFFFFFFF)
    return bytes(data)


def _ico() -> bytes:
    buf = io.BytesIO()
    PILImage.new("RGB", (16, 16), (200, 10, 10)).save(buf, format="ICO")
    return buf.getvalue()


def _user_token(api, username: str, role: Role) -> str:  # type: ignore[no-untyped-def]
    with api.services.sessions() as session:
        user = users.create_user(session, username, "correct-horse-battery-9")
        site = crud.get_site(session, "shop")
        users.set_site_role(session, user, site, role)
        _row, secret = tokens.create_token(session, callers.caller_of_user(session, user), "t", site, role)
    return secret


def test_browser_upload_many_files_bad_ones_reported_per_file(api, clothing_subset: Path) -> None:
    c = api.client
    _setup(c)
    a, b, d = _jpegs(clothing_subset, "hat", 3)
    files = [
        ("files", ("ünïcødé 帽子.jpg", a, "image/jpeg")),
        ("files", ("same.jpg", b, "image/jpeg")),
        ("files", ("same.jpg", d, "image/jpeg")),  # same name, other bytes: both imported
        ("files", ("again.jpg", a, "image/jpeg")),  # same bytes, other name: a duplicate
        ("files", ("notes.txt", b"hello, not an image", "text/plain")),
        ("files", ("truncated.jpg", b[: len(b) // 3], "image/jpeg")),
        ("files", ("absurd.png", _absurd_png(), "image/png")),
        ("files", ("icon.ico", _ico(), "image/x-icon")),
    ]
    r = c.post(f"{CLF}/import", params={"wait": "true"}, files=files)
    assert r.status_code == 200, r.text
    job = r.json()
    assert (job["kind"], job["status"], job["total"], job["done"]) == ("upload", "succeeded", 8, 8)
    assert job["counts"] == {"imported": 3, "duplicate": 1, "rejected": 4}
    items = _items(c, job["id"])
    assert [i["name"] for i in items] == [f[1][0] for f in files]  # names kept as sent, in order
    by = _by_name(items)
    assert by["ünïcødé 帽子.jpg"]["outcome"] == "imported"
    assert (
        by["again.jpg"]["outcome"] == "duplicate" and by["again.jpg"]["image_id"] == by["ünïcødé 帽子.jpg"]["image_id"]
    )
    reasons = {i["name"]: i["reason"] for i in items if i["outcome"] == "rejected"}
    assert "not a readable image" in reasons["notes.txt"]
    assert "truncated" in reasons["truncated.jpg"] or "corrupt" in reasons["truncated.jpg"]
    assert "too large" in reasons["absurd.png"] or "pixels" in reasons["absurd.png"]
    assert "unsupported image format" in reasons["icon.ico"]
    # no target group: the triage inbox, with thumbnails made at import
    new = c.get(f"{CLF}/images", params={"status": "NEW"}).json()
    assert sorted(i["original_name"] for i in new) == ["same.jpg", "same.jpg", "ünïcødé 帽子.jpg"]
    assert all(i["source"] == "upload" for i in new)
    with api.services.sessions() as session:
        stored = session.scalars(select(Image).where(Image.import_job_id == job["id"])).all()
        assert len(stored) == 3 and all(img.blob.thumb_sha256 for img in stored)
        assert session.scalar(select(func.count()).select_from(ImportItem)) == 8

    # with a target group: straight into it, status GROUP
    e = _jpegs(clothing_subset, "shoes", 1)[0]
    job2 = c.post(
        f"{CLF}/import", params={"wait": "true"}, files=[("files", ("s.jpg", e, "image/jpeg"))], data={"group": "shoes"}
    ).json()
    assert job2["target_group"] == "shoes" and job2["counts"] == {"imported": 1, "groups": {"shoes": 1}}
    (shoe,) = c.get(f"{CLF}/images", params={"group": "shoes"}).json()
    assert shoe["status"] == "GROUP"


def test_huge_upload_refused_whole_and_nothing_staged(sqlite_api, clothing_subset: Path) -> None:
    c = sqlite_api.client
    _setup(c)
    sqlite_api.services.settings.imports.max_upload_bytes = 30_000
    files = [("files", (f"{i}.jpg", data, "image/jpeg")) for i, data in enumerate(_jpegs(clothing_subset, "dress", 3))]
    r = c.post(f"{CLF}/import", files=files)
    assert r.status_code == 413 and "max_upload_bytes" in r.json()["detail"]
    # far over the limit: refused from its Content-Length, before the body is read
    big = [("files", ("big.jpg", b"\xff" * 2_000_000, "image/jpeg"))]
    r = c.post(f"{CLF}/import", files=big)
    assert r.status_code == 413 and "2000" in r.json()["detail"]
    big_zip = dataset_zip(clothing_subset / "train", per_class=3)
    r = c.post(f"{CLF}/import", files={"file": ("d.zip", big_zip, "application/zip")})
    assert r.status_code == 413
    assert c.get(f"{CLF}/imports").json() == []
    staging = sqlite_api.services.settings.resolve("imports")
    assert not staging.exists() or list(staging.iterdir()) == []


def test_url_imports_refuse_internal_addresses_by_default(
    sqlite_api, clothing_subset: Path, web: LoopbackServer
) -> None:
    """Without imports.url_allow_private a URL list cannot make the hub read loopback or private hosts."""
    c = sqlite_api.client
    _setup(c)
    sqlite_api.services.settings.imports.url_allow_private = False
    (a,) = _jpegs(clothing_subset, "dress", 1)
    web.images["a.jpg"] = a
    urls = [web.image_url("a.jpg"), "http://10.1.2.3/x.jpg", "http://[::1]/x.jpg", "http://169.254.169.254/latest"]
    r = c.post(f"{CLF}/import", params={"wait": "true"}, json={"urls": urls, "group": "dress"})
    assert r.status_code == 200, r.text
    assert r.json()["counts"]["rejected"] == 4
    for item in _items(c, r.json()["id"]):
        assert item["outcome"] == "rejected" and "url_allow_private" in item["reason"], item
    assert web.requests == [], "the hub must not connect to a refused host"


def test_url_list_with_bad_urls(sqlite_api, clothing_subset: Path, web: LoopbackServer) -> None:
    c = sqlite_api.client
    _setup(c)
    settings = sqlite_api.services.settings.imports
    settings.url_max_bytes, settings.url_timeout_s, settings.url_max_redirects = 100_000, 1.0, 3
    a, b = _jpegs(clothing_subset, "dress", 2)
    web.images.update({"a.jpg": a, "b.jpg": b, "fake.jpg": b"<html>an error page</html>"})
    urls = [
        web.image_url("a.jpg"),
        f"{web.url}/to/b.jpg",  # one redirect: fine
        f"{web.url}/missing",
        f"{web.url}/loop",
        f"{web.url}/huge",
        f"{web.url}/page.html",
        f"{web.url}/slow/a.jpg",
        web.image_url("fake.jpg"),
        "ftp://example.com/x.jpg",
        "not a url",
    ]
    r = c.post(f"{CLF}/import", params={"wait": "true"}, json={"urls": urls, "group": "dress"})
    assert r.status_code == 200, r.text
    job = r.json()
    assert (job["kind"], job["status"], job["total"], job["done"]) == ("urls", "succeeded", 10, 10)
    assert job["counts"]["imported"] == 2 and job["counts"]["rejected"] == 8
    by = _by_name(_items(c, job["id"]))
    assert by[urls[0]]["outcome"] == by[urls[1]]["outcome"] == "imported"
    assert "404" in by[urls[2]]["reason"]
    assert "redirects" in by[urls[3]]["reason"]
    assert "limit" in by[urls[4]]["reason"]
    assert "text/html" in by[urls[5]]["reason"]
    assert "timed out" in by[urls[6]]["reason"] or "longer than" in by[urls[6]]["reason"]
    assert "not a readable image" in by[urls[7]]["reason"]
    assert "only http and https" in by[urls[8]]["reason"]
    assert "only http and https" in by["not a url"]["reason"]
    images = c.get(f"{CLF}/images", params={"group": "dress"}).json()
    assert {i["source"] for i in images} == {"url"} and len(images) == 2


def test_remembered_deletes_across_sources(api, clothing_subset: Path, web: LoopbackServer) -> None:
    c = api.client
    _setup(c)
    data = dataset_zip(clothing_subset / "train", per_class=2, classes=("hat",))
    first = c.post(f"{CLF}/import", params={"wait": "true"}, files={"file": ("d.zip", data, "application/zip")})
    assert first.json()["counts"]["imported"] == 2
    victim = c.get(f"{CLF}/images", params={"group": "hat"}).json()[0]
    assert c.patch(f"{API}/images/{victim['id']}", json={"status": "DELETED"}).status_code == 200
    content = c.get(victim["content_url"]).content
    web.images["v.jpg"] = content

    again = c.post(f"{CLF}/import", params={"wait": "true"}, files={"file": ("d.zip", data, "application/zip")}).json()
    assert again["counts"] == {"previously_deleted": 1, "duplicate": 1}
    by_url = c.post(f"{CLF}/import", params={"wait": "true"}, json={"urls": [web.image_url("v.jpg")]}).json()
    assert by_url["counts"] == {"previously_deleted": 1}
    upload = c.post(
        f"{CLF}/import", params={"wait": "true"}, files=[("files", ("v.jpg", content, "image/jpeg"))]
    ).json()
    assert upload["counts"] == {"previously_deleted": 1}
    (item,) = _items(c, upload["id"])
    assert item["image_id"] == victim["id"] and "deleted" in item["reason"]
    assert c.get(CLF).json()["counts"] == {"NEW": 0, "GROUP": 1, "DELETED": 1}


def test_web_search_with_the_fixture_provider(sqlite_api, clothing_subset: Path, web: LoopbackServer) -> None:
    c = sqlite_api.client
    _setup(c)
    r = c.get(f"{CLF}/search", params={"q": "hat"})
    assert r.status_code == 503 and r.json()["detail"] == NOT_CONFIGURED
    r = c.post(f"{CLF}/import", json={"search": {"term": "hat"}})
    assert r.status_code == 503 and r.json()["detail"] == NOT_CONFIGURED

    hats = _jpegs(clothing_subset, "hat", 3)
    results = []
    for i, data in enumerate(hats):
        web.images[f"h{i}.jpg"] = data
        results.append(
            {
                "thumbnail_url": web.image_url(f"h{i}.jpg"),
                "image_url": web.image_url(f"h{i}.jpg"),
                "title": f"a hat {i}",
                "source_page": f"{web.url}/page/{i}",
            }
        )
    web.json["search"] = [{**results[0], "title": "a shoe"}, *results[1:]]
    settings = sqlite_api.services.settings.imports
    settings.search_provider, settings.search_endpoint = "fixture", f"{web.url}/json/search"
    found = c.get(f"{CLF}/search", params={"q": "hat", "count": 5}).json()
    assert [f["title"] for f in found] == ["a hat 1", "a hat 2", "a shoe"]  # matching titles first
    chosen = [found[0]["image_url"], found[1]["image_url"]]
    job = c.post(
        f"{CLF}/import", params={"wait": "true"}, json={"search": {"term": "hat", "urls": chosen}, "group": "hat"}
    ).json()
    assert job["kind"] == "search" and job["counts"] == {"imported": 2, "groups": {"hat": 2}}
    assert job["params"] == {"term": "hat", "urls": 2}
    images = c.get(f"{CLF}/images", params={"group": "hat"}).json()
    assert {i["source"] for i in images} == {"search"}
    with sqlite_api.services.sessions() as session:
        origins = set(session.scalars(select(Image.origin)))
    assert origins == {f"search: hat | {u}" for u in chosen}


def test_progress_and_cancel(sqlite_api, clothing_subset: Path, web: LoopbackServer) -> None:
    c = sqlite_api.client
    _setup(c)
    web.slow_s = 0.3
    for i, data in enumerate(_jpegs(clothing_subset, "dress", 20) + _jpegs(clothing_subset, "hat", 10)):
        web.images[f"s{i}.jpg"] = data
    urls = [f"{web.url}/slow/s{i}.jpg" for i in range(30)]
    r = c.post(f"{CLF}/import", json={"urls": urls})
    assert r.status_code == 202
    job_id = r.json()["id"]
    assert r.json()["status"] in ("queued", "running")
    wait_for(lambda: c.get(f"{API}/imports/{job_id}").json()["done"] >= 2, "two files imported")
    assert c.post(f"{API}/imports/{job_id}/cancel").json()["cancel_requested"] is True
    job = wait_for(
        lambda: (j := c.get(f"{API}/imports/{job_id}").json())["status"] == "cancelled" and j, "the job to stop"
    )
    assert job["total"] == 30 and 2 <= job["done"] < 30 and "cancelled" in job["message"]
    items = _items(c, job_id)
    assert len(items) == job["done"]
    # nothing half-written: every imported item has its image and its row, and nothing else was added
    new = c.get(f"{CLF}/images", params={"status": "NEW"}).json()
    assert len(new) == job["counts"]["imported"] == len([i for i in items if i["outcome"] == "imported"])
    assert listed_ids(c) == [job_id]
    # a finished job is left alone; an unknown one is a 404
    assert c.post(f"{API}/imports/{job_id}/cancel").json()["status"] == "cancelled"
    assert c.get(f"{API}/imports/999999").status_code == 404
    page = c.get(f"{API}/imports/{job_id}/items", params={"limit": 1}).json()
    assert page["total"] == job["done"] and len(page["items"]) == 1 and page["next_after"] == page["items"][0]["id"]
    nxt = c.get(f"{API}/imports/{job_id}/items", params={"limit": 1, "after": page["next_after"]}).json()
    assert nxt["items"][0]["id"] > page["items"][0]["id"]


def listed_ids(client) -> list[int]:  # type: ignore[no-untyped-def]
    return [j["id"] for j in client.get(f"{CLF}/imports").json()]


def test_jobs_left_running_resume_after_a_restart(
    sqlite_url: str, hub_factory, clothing_subset: Path, web: LoopbackServer
) -> None:  # type: ignore[no-untyped-def]
    first = hub_factory(sqlite_url)
    _setup(first.client)
    for i, data in enumerate(_jpegs(clothing_subset, "shoes", 3)):
        web.images[f"p{i}.jpg"] = data
    urls = [web.image_url(f"p{i}.jpg") for i in range(3)]
    with first.services.sessions() as session:  # as a crash would leave it: one file done, still "running"
        clf = crud.get_classifier(session, "shop", "clothes")
        job = ImportJob(
            classifier_id=clf.id,
            kind="urls",
            status=ImportStatus.RUNNING.value,
            params={"urls": urls},
            total=3,
            done=1,
            counts={"rejected": 1},
            created_by="admin",
        )
        session.add(job)
        session.flush()
        session.add(ImportItem(job_id=job.id, name=urls[0], outcome="rejected", reason="pretend"))
        session.commit()
        job_id = job.id
    second = hub_factory(sqlite_url)  # a new hub process on the same database resumes it
    done = wait_for(
        lambda: (j := second.client.get(f"{API}/imports/{job_id}").json())["status"] == "succeeded" and j,
        "the resumed job",
    )
    assert done["done"] == 3 and done["counts"] == {"rejected": 1, "imported": 2}
    assert len(_items(second.client, job_id)) == 3
    assert "/img/p0.jpg" not in web.requests  # the file done before the "crash" was not fetched again


def test_server_folder_is_for_hub_admins_only(sqlite_api, clothing_subset: Path) -> None:
    c = sqlite_api.client
    _setup(c)
    labeller = {"Authorization": f"Bearer {_user_token(sqlite_api, 'lab', Role.LABELLER)}"}
    viewer = {"Authorization": f"Bearer {_user_token(sqlite_api, 'view', Role.VIEWER)}"}
    folder = str(clothing_subset / "train")
    r = c.post(f"{CLF}/import", json={"path": folder}, headers=labeller)
    assert r.status_code == 403 and "administrator" in r.json()["detail"]
    assert c.post(f"{CLF}/import", json={"urls": ["http://127.0.0.1:9/x.jpg"]}, headers=viewer).status_code == 403
    job = c.post(f"{CLF}/import", json={"urls": ["http://127.0.0.1:9/x.jpg"]}, headers=labeller)
    assert job.status_code == 202 and job.json()["created_by"] != "admin"  # who asked is recorded
    assert c.get(f"{API}/imports/{job.json()['id']}", headers=viewer).status_code == 200
    assert c.post(f"{API}/imports/{job.json()['id']}/cancel", headers=viewer).status_code == 403
    assert c.get(f"{CLF}/imports", headers=viewer).status_code == 200


def test_cancel_while_queued_and_staging_cleaned_at_start(sqlite_api, clothing_subset: Path) -> None:
    from camfleet_hub.imports.worker import ImportWorker

    c = sqlite_api.client
    _setup(c)
    services = sqlite_api.services
    services.import_worker.stop()  # nobody runs jobs now: this one stays queued
    data = _jpegs(clothing_subset, "hat", 1)[0]
    job = c.post(f"{CLF}/import", files=[("files", ("h.jpg", data, "image/jpeg"))]).json()
    assert job["status"] == "queued"
    staging = services.settings.resolve("imports")
    assert len(list(staging.iterdir())) == 1
    cancelled = c.post(f"{API}/imports/{job['id']}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["message"] == "cancelled before it started"
    worker = ImportWorker(services, services.embedder, services.near_indexes)
    worker.start()  # a new start drops the uploads no unfinished job needs, and does not run the cancelled job
    try:
        assert list(staging.iterdir()) == []
        assert c.get(f"{API}/imports/{job['id']}").json()["done"] == 0
        assert c.get(f"{CLF}/images").json() == []
    finally:
        worker.stop()


def test_pexels_provider_against_a_pexels_shaped_server(sqlite_api, web: LoopbackServer) -> None:
    c = sqlite_api.client
    _setup(c)
    settings = sqlite_api.services.settings.imports
    settings.search_provider = "pexels"
    assert c.get(f"{CLF}/search", params={"q": "hat"}).json()["detail"] == NOT_CONFIGURED  # no key yet
    web.json["pexels_key"] = "secret-key"
    web.json["pexels"] = {
        "photos": [
            {
                "url": "https://www.pexels.com/photo/1/",
                "alt": "a red hat",
                "src": {"medium": "https://images.example/1-m.jpg", "large2x": "https://images.example/1-l.jpg"},
            }
        ]
    }
    settings.search_api_key, settings.search_endpoint = SecretStr("wrong"), f"{web.url}/pexels"
    r = c.get(f"{CLF}/search", params={"q": "hat"})
    assert r.status_code == 503 and "401" in r.json()["detail"]
    settings.search_api_key = SecretStr("secret-key")
    found = c.get(f"{CLF}/search", params={"q": "red hat", "count": 3}).json()
    assert found == [
        {
            "thumbnail_url": "https://images.example/1-m.jpg",
            "image_url": "https://images.example/1-l.jpg",
            "title": "a red hat",
            "source_page": "https://www.pexels.com/photo/1/",
        }
    ]
    assert any(p.startswith("/pexels/search?query=red+hat&per_page=3") for p in web.requests)
