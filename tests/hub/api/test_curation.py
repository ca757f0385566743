"""Curation rules: bulk move/delete/restore, history and undo of every action kind, conflicting undo and concurrent
edits (409), group rename/parent/common/merge/delete, common groups in the training dataset, health, export zip."""

from __future__ import annotations

import io
import zipfile
from typing import Any

from PIL import Image as PILImage

from camfleet_contract.rest import Dataset
from camfleet_hub.datasets import crud
from camfleet_hub.datasets.models import Blob, Classifier, Group, Image, ImageSource, ImageStatus, Site
from camfleet_hub.training import jobs
from camfleet_hub.training.models import TrainingJob

API = "/api/v1"


def jpeg(seed: int) -> bytes:
    """A small real JPEG, different for every seed."""
    img = PILImage.new("RGB", (24, 16), ((seed * 37) % 256, (seed * 91) % 256, (seed * 53 + 7) % 256))
    img.putpixel((seed % 24, (seed // 24) % 16), (255 - seed % 256, 0, 0))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95)
    return buf.getvalue()


class Seeder:
    """Create sites/classifiers/groups over the API and insert images straight into the store and database."""

    def __init__(self, api: Any) -> None:
        self.api, self.c, self.n = api, api.client, 0

    def classifier(self, site: str, clf: str, groups: tuple[str, ...] = ()) -> str:
        if self.c.get(f"{API}/sites/{site}").status_code == 404:
            assert self.c.post(f"{API}/sites", json={"name": site}).status_code == 201
        assert self.c.post(f"{API}/sites/{site}/classifiers", json={"name": clf}).status_code == 201
        for g in groups:
            assert self.c.post(f"{API}/sites/{site}/classifiers/{clf}/groups", json={"name": g}).status_code == 201
        return f"{API}/sites/{site}/classifiers/{clf}"

    def images(self, site: str, clf: str, count: int, group: str | None = None, name: str = "img") -> list[int]:
        ids = []
        with self.api.services.sessions() as s:
            classifier = crud.get_classifier(s, site, clf)
            group_id = None if group is None else crud.ensure_group(s, classifier, group).id
            for _ in range(count):
                self.n += 1
                data = jpeg(self.n)
                sha = self.api.services.store.put(data)
                if s.get(Blob, sha) is None:
                    s.add(Blob(sha256=sha, size=len(data), width=24, height=16, format="JPEG"))
                img = Image(
                    classifier_id=classifier.id,
                    sha256=sha,
                    status=ImageStatus.NEW.value if group is None else ImageStatus.GROUP.value,
                    group_id=group_id,
                    source=ImageSource.UPLOAD.value,
                    original_name=f"{name}.jpg",
                )
                s.add(img)
                s.flush()
                ids.append(img.id)
            s.commit()
        return ids


def image(c: Any, image_id: int) -> dict[str, Any]:
    r = c.get(f"{API}/images/{image_id}")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def groups(c: Any, clf_url: str) -> dict[str, dict[str, Any]]:
    return {g["name"]: g for g in c.get(f"{clf_url}/groups").json()}


def test_bulk_move_delete_restore_and_undo(api) -> None:
    seed, c = Seeder(api), api.client
    url = seed.classifier("shop", "door", ("open", "closed"))
    new = seed.images("shop", "door", 6)

    r = c.post(f"{url}/images/bulk", json={"ids": new[:4], "action": "move", "group": "open"})
    assert r.status_code == 200, r.text
    move = r.json()
    user = move["username"]
    assert move["action"] == "move" and move["image_ids"] == new[:4] and user
    detail = image(c, new[0])
    assert detail["status"] == "GROUP" and detail["group"] == "open" and detail["labelled_by"] == user
    assert groups(c, url)["open"]["counts"]["GROUP"] == 4

    delete = c.post(f"{url}/images/bulk", json={"ids": new[4:], "action": "delete"}).json()
    assert [image(c, i)["status"] for i in new[4:]] == ["DELETED", "DELETED"]
    # restore: a deleted NEW image goes back to the inbox, a deleted grouped one back to its group
    c.post(f"{url}/images/bulk", json={"ids": [new[0]], "action": "delete"})
    restore = c.post(f"{url}/images/bulk", json={"ids": [new[0], new[4]], "action": "restore"}).json()
    assert image(c, new[0])["status"] == "GROUP" and image(c, new[0])["group"] == "open"
    assert image(c, new[4])["status"] == "NEW" and image(c, new[4])["group"] is None
    # restoring an image that is not deleted is refused
    again = c.post(f"{url}/images/bulk", json={"ids": [new[1]], "action": "restore"})
    assert again.status_code == 409 and str(new[1]) in again.json()["detail"]

    # undo restore, then the delete of 4/5 is blocked by the restore... once undone it is free again
    assert c.post(f"{API}/history/{restore['id']}/undo").status_code == 200
    assert image(c, new[4])["status"] == "DELETED" and image(c, new[0])["status"] == "DELETED"
    blocked = c.post(f"{API}/history/{move['id']}/undo")
    assert blocked.status_code == 409 and "changed images" in blocked.json()["detail"]
    assert c.post(f"{API}/history/{delete['id']}/undo").status_code == 200
    assert [image(c, i)["status"] for i in new[4:]] == ["NEW", "NEW"]
    # undoing twice is refused
    twice = c.post(f"{API}/history/{delete['id']}/undo")
    assert twice.status_code == 409 and "already undone" in twice.json()["detail"]

    hist = c.get(f"{url}/history").json()["entries"]
    assert [e["action"] for e in hist][:4] == ["restore", "delete", "delete", "move"]
    assert hist[0]["undone_by"] == user


def test_bulk_validation(api) -> None:
    seed, c = Seeder(api), api.client
    url = seed.classifier("shop", "door", ("open",))
    other = seed.classifier("shop", "lights", ("on",))
    mine, theirs = seed.images("shop", "door", 2), seed.images("shop", "lights", 1)
    r = c.post(f"{url}/images/bulk", json={"ids": mine + theirs, "action": "delete"})
    assert r.status_code == 422 and str(theirs[0]) in r.json()["detail"] and "'door'" in r.json()["detail"]
    assert c.post(f"{url}/images/bulk", json={"ids": [10**9], "action": "delete"}).status_code == 404
    assert c.post(f"{url}/images/bulk", json={"ids": mine, "action": "move"}).status_code == 422
    assert c.post(f"{url}/images/bulk", json={"ids": mine, "action": "move", "group": "nope"}).status_code == 404
    made = c.post(f"{url}/images/bulk", json={"ids": mine, "action": "move", "group": "nope", "create_group": True})
    assert made.status_code == 200 and groups(c, url)["nope"]["counts"]["GROUP"] == 2
    assert c.post(f"{url}/images/bulk", json={"ids": [], "action": "delete"}).status_code == 422
    assert c.post(f"{url}/images/bulk", json={"ids": mine, "action": "explode"}).status_code == 422
    assert c.get(f"{other}/history").json()["entries"][0]["action"] == "create_group"


def test_concurrent_edit_is_a_conflict(api) -> None:
    seed, c = Seeder(api), api.client
    url = seed.classifier("shop", "door", ("open", "closed"))
    [a, b] = seed.images("shop", "door", 2)
    seen = image(c, a)
    # labeller 1 confirms it ...
    first = c.patch(f"{API}/images/{a}", json={"group": "open", "expected_status": "NEW"})
    assert first.status_code == 200 and first.json()["status"] == "GROUP"
    # ... labeller 2 still thinks it is NEW
    second = c.patch(f"{API}/images/{a}", json={"group": "closed", "expected_status": "NEW"})
    assert second.status_code == 409
    user = first.json()["labelled_by"]
    assert "now GROUP in group 'open'" in second.json()["detail"] and repr(user) in second.json()["detail"]
    stale = c.patch(f"{API}/images/{a}", json={"status": "DELETED", "expected_updated_at": seen["updated_at"]})
    assert stale.status_code == 409
    fresh = image(c, a)
    ok = c.patch(f"{API}/images/{a}", json={"status": "DELETED", "expected_updated_at": fresh["updated_at"]})
    assert ok.status_code == 200 and ok.json()["status"] == "DELETED"
    # bulk with expected_status: the whole action is refused, nothing half-done
    r = c.post(f"{url}/images/bulk", json={"ids": [b, a], "action": "move", "group": "open", "expected_status": "NEW"})
    assert r.status_code == 409 and f"id={a}" in r.json()["detail"]
    assert image(c, b)["status"] == "NEW"


def test_patch_goes_through_history_and_undo_last(api) -> None:
    seed, c = Seeder(api), api.client
    url = seed.classifier("shop", "door", ("open",))
    [a] = seed.images("shop", "door", 1)
    assert c.patch(f"{API}/images/{a}", json={"group": "open"}).json()["status"] == "GROUP"
    assert c.patch(f"{API}/images/{a}", json={"status": "GROUP", "group": "fresh"}).json()["group"] == "fresh"
    entries = c.get(f"{url}/history").json()["entries"]
    assert [e["action"] for e in entries[:2]] == ["edit", "edit"]
    r = c.post(f"{url}/undo")
    assert r.status_code == 200 and r.json()["id"] == entries[0]["id"]
    assert image(c, a)["group"] == "open"
    assert c.post(f"{url}/undo").status_code == 200
    assert image(c, a)["status"] == "NEW" and image(c, a)["group"] is None and image(c, a)["labelled_by"] is None
    # the create_group entry is next ("fresh" was made on the fly by the edit, which stays), then nothing is left
    assert c.post(f"{url}/undo").json()["action"] == "create_group"
    assert "open" not in groups(c, url) and "fresh" in groups(c, url)
    assert c.post(f"{url}/undo").status_code == 404


def test_group_rename_parent_common_merge_delete_and_their_undo(api) -> None:
    seed, c = Seeder(api), api.client
    url = seed.classifier("shop", "door", ("animals", "cats", "dogs"))
    cats, dogs = seed.images("shop", "door", 3, "cats"), seed.images("shop", "door", 2, "dogs")
    hist = lambda: c.get(f"{url}/history").json()["entries"]  # noqa: E731

    assert c.patch(f"{url}/groups/cats", json={"name": "kitties"}).json()["name"] == "kitties"
    assert image(c, cats[0])["group"] == "kitties"
    assert c.patch(f"{url}/groups/kitties", json={"name": "dogs"}).status_code == 409
    assert c.patch(f"{url}/groups/kitties", json={"parent": "animals"}).json()["parent"] == "animals"
    cycle = c.patch(f"{url}/groups/animals", json={"parent": "kitties"})
    assert cycle.status_code == 422 and "subgroup" in cycle.json()["detail"]
    assert c.patch(f"{url}/groups/dogs", json={"common": True}).json()["common"] is True
    assert c.patch(f"{url}/groups/dogs", json={"name": "x", "common": False}).status_code == 422

    # undo common, parent, rename in turn
    for expect in ("set_common", "set_parent", "rename_group"):
        entry = hist()[0] if hist()[0]["undone_at"] is None else next(e for e in hist() if e["undone_at"] is None)
        assert entry["action"] == expect
        assert c.post(f"{API}/history/{entry['id']}/undo").status_code == 200, expect
    g = groups(c, url)
    assert set(g) == {"animals", "cats", "dogs"} and g["cats"]["parent"] is None and g["dogs"]["common"] is False

    # merge cats into dogs, then undo: cats comes back with its images
    c.patch(f"{url}/groups/cats", json={"parent": "animals"})
    merged = c.patch(f"{url}/groups/cats", json={"merge_into": "dogs"})
    assert merged.status_code == 200 and merged.json()["counts"]["GROUP"] == 5
    assert "cats" not in groups(c, url) and image(c, cats[1])["group"] == "dogs"
    merge_entry = hist()[0]
    assert merge_entry["action"] == "merge_groups" and merge_entry["image_count"] == 3
    assert c.post(f"{API}/history/{merge_entry['id']}/undo").status_code == 200
    g = groups(c, url)
    assert g["cats"]["counts"]["GROUP"] == 3 and g["dogs"]["counts"]["GROUP"] == 2 and g["cats"]["parent"] == "animals"
    assert image(c, cats[2])["group"] == "cats"

    # delete a group: its images go back to NEW; undo puts them back; a later change blocks the undo
    deleted = c.delete(f"{url}/groups/dogs")
    assert deleted.status_code == 200 and "dogs" not in groups(c, url)
    assert [image(c, i)["status"] for i in dogs] == ["NEW", "NEW"]
    assert c.post(f"{API}/history/{deleted.json()['id']}/undo").status_code == 200
    assert [image(c, i)["group"] for i in dogs] == ["dogs", "dogs"] and groups(c, url)["dogs"]["counts"]["GROUP"] == 2
    again = c.delete(f"{url}/groups/dogs").json()
    later = c.post(f"{url}/images/bulk", json={"ids": [dogs[0]], "action": "move", "group": "cats"}).json()
    blocked = c.post(f"{API}/history/{again['id']}/undo")
    assert blocked.status_code == 409 and f"entry id={later['id']}" in blocked.json()["detail"]
    assert str(dogs[0]) in blocked.json()["detail"]
    assert c.delete(f"{url}/groups/nope").status_code == 404


def test_common_groups_join_every_same_named_classifier(api) -> None:
    seed, c = Seeder(api), api.client
    a = seed.classifier("shop", "door", ("open", "closed"))
    seed.classifier("temple", "door", ("open",))
    seed.classifier("temple", "lights", ())
    seed.images("shop", "door", 3, "open")
    seed.images("shop", "door", 2, "closed")
    seed.images("temple", "door", 4, "open")
    shared = seed.images("temple", "door", 5, "nothing")
    seed.images("temple", "lights", 5, "nothing")  # same group name, different classifier: never shared
    c.post(f"{API}/sites/temple/classifiers/lights/groups/nothing", json={})
    assert c.patch(f"{API}/sites/temple/classifiers/lights/groups/nothing", json={"common": True}).status_code == 200

    def dataset() -> Dataset:
        with api.services.sessions() as s:
            clf = crud.get_classifier(s, "shop", "door")
            job = TrainingJob(classifier_id=clf.id)
            s.add(job)
            s.flush()
            out = jobs.dataset(s, job)
            s.rollback()
            return out

    assert dataset().classes == ["closed", "open"]
    r = c.patch(f"{API}/sites/temple/classifiers/door/groups/nothing", json={"common": True})
    assert r.status_code == 200
    ds = dataset()
    assert ds.classes == ["closed", "nothing", "open"]
    assert sorted(i.id for i in ds.images if i.group == "nothing") == shared
    assert sum(1 for i in ds.images if i.group == "open") == 3  # temple's "open" is not common
    health = c.get(f"{a}/health").json()
    nothing = next(g for g in health["groups"] if g["name"] == "nothing")
    assert nothing == {"name": "nothing", "common": True, "none_of_the_above": False, "images": 5, "shared": 5}
    with api.services.sessions() as s:
        assert jobs.trainable_groups(s, crud.get_classifier(s, "shop", "door"))["nothing"] == 5
    # a deleted image of a common group is not shared
    temple = f"{API}/sites/temple/classifiers/door"
    c.post(f"{temple}/images/bulk", json={"ids": shared[:1], "action": "delete"})
    assert len([i for i in dataset().images if i.group == "nothing"]) == 4


def test_health_figures(api) -> None:
    seed, c = Seeder(api), api.client
    url = seed.classifier("shop", "door", ("open", "closed", "empty"))
    seed.images("shop", "door", 30, "open")
    seed.images("shop", "door", 4, "closed")
    seed.images("shop", "door", 3)
    deleted = seed.images("shop", "door", 2)
    c.post(f"{url}/images/bulk", json={"ids": deleted, "action": "delete"})
    h = c.get(f"{url}/health").json()
    assert {g["name"]: g["images"] for g in h["groups"]} == {"closed": 4, "empty": 0, "open": 30}
    assert h["new"] == 3 and h["deleted"] == 2 and h["confirmed"] == 34
    assert h["under_min"] == ["closed", "empty"] and h["min_to_train"] == 10
    assert h["imbalanced"] is True and h["imbalance_ratio"] == 7.5
    assert any("imbalance" in w and "'open'" in w for w in h["warnings"])
    assert any("3 new image" in w for w in h["warnings"])
    seed.images("shop", "door", 8, "closed")
    h = c.get(f"{url}/health").json()
    assert h["imbalanced"] is False and h["under_min"] == ["empty"]


def test_export_zip_is_folder_per_class_with_safe_unique_names(api) -> None:
    seed, c = Seeder(api), api.client
    url = seed.classifier("shop", "door", ("open", "closed"))
    opened = seed.images("shop", "door", 3, "open", name="../../etc/pass wd")
    seed.images("shop", "door", 2, "closed", name="ünï code")
    seed.images("shop", "door", 2)  # NEW: not exported
    gone = seed.images("shop", "door", 1, "open")
    c.post(f"{url}/images/bulk", json={"ids": gone, "action": "delete"})
    r = c.get(f"{url}/export")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert "shop-door-dataset.zip" in r.headers["content-disposition"]
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    names = sorted(zf.namelist())
    assert names == ["closed/n_code-2.jpg", "closed/n_code.jpg", "open/pass_wd-2.jpg", "open/pass_wd-3.jpg",
                     "open/pass_wd.jpg"]  # fmt: skip
    assert zf.read("open/pass_wd.jpg") == api.services.store.get(image(c, opened[0])["sha256"])
    assert zf.testzip() is None


def test_image_detail_has_frame_camera_and_file_metadata(api) -> None:
    seed, c = Seeder(api), api.client
    seed.classifier("shop", "door", ())
    [a] = seed.images("shop", "door", 1, name="door-1")
    from datetime import UTC, datetime

    from camfleet_hub.datasets.models import Camera, Frame

    captured = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with api.services.sessions() as s:
        site = s.query(Site).filter_by(name="shop").one()
        cam = Camera(site_id=site.id, name="front")
        s.add(cam)
        s.flush()
        img = s.get(Image, a)
        assert img is not None
        s.add(Frame(frame_id="f-1", site_id=site.id, camera_id=cam.id, agent="pi-1", captured_at=captured,
                    sha256=img.sha256, width=24, height=16))  # fmt: skip
        img.frame_id, img.source, img.origin = "f-1", ImageSource.CAMERA.value, "front"
        s.commit()
    d = image(c, a)
    assert d["camera"] == "front" and d["agent"] == "pi-1" and d["captured_at"].startswith("2026-01-02T03:04:05")
    assert (d["width"], d["height"], d["format"], d["site"], d["classifier"]) == (24, 16, "JPEG", "shop", "door")
    assert d["size"] > 0 and len(d["sha256"]) == 64 and d["original_name"] == "door-1.jpg"
    assert c.get(f"{API}/images/999999").status_code == 404


def test_keyset_listing(api) -> None:
    seed, c = Seeder(api), api.client
    url = seed.classifier("shop", "door", ())
    ids = seed.images("shop", "door", 7)
    first = c.get(f"{url}/images", params={"status": "NEW", "limit": 3}).json()
    nxt = c.get(f"{url}/images", params={"status": "NEW", "limit": 3, "after_id": first[-1]["id"]}).json()
    assert [i["id"] for i in first + nxt] == ids[:6]


def test_undo_of_group_creation_refused_once_used(api) -> None:
    seed, c = Seeder(api), api.client
    url = seed.classifier("shop", "door", ())
    created = c.post(f"{url}/groups", json={"name": "fresh"})
    assert created.status_code == 201
    entry = c.get(f"{url}/history").json()["entries"][0]
    [a] = seed.images("shop", "door", 1)
    c.post(f"{url}/images/bulk", json={"ids": [a], "action": "move", "group": "fresh"})
    r = c.post(f"{API}/history/{entry['id']}/undo")
    assert r.status_code == 409
    with api.services.sessions() as s:
        assert s.query(Group).filter_by(name="fresh").count() == 1
        assert s.query(Classifier).count() == 1


def test_deleted_image_is_remembered_across_imports_until_restored(api, clothing_subset) -> None:
    c = api.client
    url = Seeder(api).classifier("shop", "door", ())
    files = sorted((clothing_subset / "train" / "hat").glob("*.jpg"))[:3]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in files:
            zf.write(f, f.name)
    archive = buf.getvalue()

    def import_zip() -> dict[str, Any]:
        r = c.post(f"{url}/import?wait=true", files={"file": ("inbox.zip", archive, "application/zip")})
        assert r.status_code in (200, 201, 202), r.text
        return r.json()["counts"]  # type: ignore[no-any-return]

    assert import_zip()["imported"] == 3
    new = [i["id"] for i in c.get(f"{url}/images", params={"status": "NEW"}).json()]
    assert len(new) == 3
    c.post(f"{url}/images/bulk", json={"ids": new[:1], "action": "delete"})
    again = import_zip()
    assert again.get("previously_deleted") == 1 and again.get("imported", 0) == 0
    assert [i["id"] for i in c.get(f"{url}/images", params={"status": "NEW"}).json()] == new[1:]
    assert image(c, new[0])["status"] == "DELETED"
    c.post(f"{url}/images/bulk", json={"ids": new[:1], "action": "restore"})
    assert import_zip().get("previously_deleted", 0) == 0
    assert image(c, new[0])["status"] == "NEW"


def test_roles_viewer_reads_labeller_edits_own_site_only(sqlite_api) -> None:
    from fastapi.testclient import TestClient

    api, c = sqlite_api, sqlite_api.client
    seed = Seeder(api)
    shop = seed.classifier("shop", "door", ("open",))
    temple = seed.classifier("temple", "door", ("open",))
    [mine] = seed.images("shop", "door", 1)
    [theirs] = seed.images("temple", "door", 1)

    accounts = TestClient(c.app)  # users and roles are managed from the admin's session, never with a token
    login = accounts.post(f"{API}/auth/login", json={"username": "admin", "password": "admin-password-1"})
    accounts.headers["X-CSRF-Token"] = login.headers["x-csrf-token"]

    def user(name: str, roles: dict[str, str]) -> TestClient:
        r = accounts.post(f"{API}/users", json={"username": name, "password": "long enough pw"})
        assert r.status_code == 201, r.text
        for site, role in roles.items():
            assert accounts.put(f"{API}/users/{r.json()['id']}/roles/{site}", json={"role": role}).status_code == 200
        client = TestClient(c.app)
        login = client.post(f"{API}/auth/login", json={"username": name, "password": "long enough pw"})
        assert login.status_code == 200
        client.headers["X-CSRF-Token"] = login.headers["x-csrf-token"]
        return client

    viewer, labeller = user("vic", {"shop": "viewer"}), user("lea", {"shop": "labeller"})
    assert viewer.get(f"{shop}/history").status_code == 200 and viewer.get(f"{shop}/health").status_code == 200
    assert viewer.get(f"{API}/images/{mine}").status_code == 200
    refused = viewer.post(f"{shop}/images/bulk", json={"ids": [mine], "action": "delete"})
    assert refused.status_code == 403 and "labeller" in refused.json()["detail"]
    assert viewer.patch(f"{API}/images/{mine}", json={"group": "open"}).status_code == 403
    assert viewer.patch(f"{shop}/groups/open", json={"name": "x"}).status_code == 403

    move = labeller.post(f"{shop}/images/bulk", json={"ids": [mine], "action": "move", "group": "open"})
    assert move.status_code == 200 and move.json()["username"] == "lea"
    assert image(c, mine)["labelled_by"] == "lea"
    assert viewer.post(f"{API}/history/{move.json()['id']}/undo").status_code == 403
    # another site: neither its images, its history nor its groups
    assert labeller.post(f"{temple}/images/bulk", json={"ids": [theirs], "action": "delete"}).status_code == 403
    assert labeller.get(f"{API}/images/{theirs}").status_code == 403
    assert labeller.patch(f"{API}/images/{theirs}", json={"group": "open"}).status_code == 403
    assert labeller.get(f"{temple}/export").status_code == 403
    # nor by smuggling the other site's image ids into a bulk action on its own classifier
    smuggled = labeller.post(f"{shop}/images/bulk", json={"ids": [theirs], "action": "delete"})
    assert smuggled.status_code == 422 and image(c, theirs)["status"] == "NEW"
    # undo last is per user: the admin has nothing of lea's to undo
    assert labeller.post(f"{shop}/undo").json()["id"] == move.json()["id"]
    assert image(c, mine)["status"] == "NEW"
