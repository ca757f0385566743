"""The "none of the above" group (issue 16): mark / unmark and its undo, the deleted images moved into it and that
undo, ``Dataset.none_classes`` of a training job, a job refused when every group is none of the above, roles."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from camfleet_contract.rest import Dataset
from camfleet_hub.datasets import crud, none_group
from camfleet_hub.training import jobs
from camfleet_hub.training.models import TrainingJob
from tests.hub.api.test_curation import API, Seeder, groups, image


def history(c: Any, url: str) -> list[dict[str, Any]]:
    return c.get(f"{url}/history").json()["entries"]  # type: ignore[no-any-return]


def dataset(api: Any, site: str, clf: str) -> Dataset:
    """The dataset a job of the classifier would train on (the job is rolled back)."""
    with api.services.sessions() as s:
        job = TrainingJob(classifier_id=crud.get_classifier(s, site, clf).id)
        s.add(job)
        s.flush()
        try:
            return jobs.dataset(s, job)
        finally:
            s.rollback()


def test_mark_unmark_and_undo(api) -> None:
    seed, c = Seeder(api), api.client
    url = seed.classifier("shop", "door", ("open", "junk"))
    assert groups(c, url)["junk"]["none_of_the_above"] is False

    marked = c.patch(f"{url}/groups/junk", json={"none_of_the_above": True})
    assert marked.status_code == 200, marked.text
    assert marked.json()["none_of_the_above"] is True and marked.json()["common"] is False
    entry = history(c, url)[0]
    assert entry["action"] == "set_none_of_the_above" and "none of the above" in entry["summary"]
    both = c.patch(f"{url}/groups/junk", json={"none_of_the_above": False, "common": True})
    assert both.status_code == 422 and "none_of_the_above" in both.json()["detail"]
    assert c.patch(f"{url}/groups/junk", json={"none_of_the_above": None}).status_code == 422

    assert c.post(f"{API}/history/{entry['id']}/undo").status_code == 200
    assert groups(c, url)["junk"]["none_of_the_above"] is False
    # a rename after marking keeps the mark through the rename's undo
    c.patch(f"{url}/groups/junk", json={"none_of_the_above": True})
    c.patch(f"{url}/groups/junk", json={"name": "rejects"})
    assert c.post(f"{url}/undo").status_code == 200
    assert groups(c, url)["junk"]["none_of_the_above"] is True
    # deleted and brought back by undo: still marked
    gone = c.delete(f"{url}/groups/junk").json()
    assert c.post(f"{API}/history/{gone['id']}/undo").status_code == 200
    assert groups(c, url)["junk"]["none_of_the_above"] is True
    # created marked
    made = c.post(f"{url}/groups", json={"name": "other", "none_of_the_above": True})
    assert made.status_code == 201 and made.json()["none_of_the_above"] is True
    assert "(none of the above)" in history(c, url)[0]["summary"]
    assert c.patch(f"{url}/groups/nope", json={"none_of_the_above": True}).status_code == 404


def test_deleted_images_into_a_new_none_group_and_undo(api) -> None:
    seed, c = Seeder(api), api.client
    url = seed.classifier("shop", "door", ("open", "closed"))
    opened = seed.images("shop", "door", 3, "open")
    inbox = seed.images("shop", "door", 3)
    assert c.post(f"{url}/images/bulk", json={"ids": opened[:1] + inbox[:2], "action": "delete"}).status_code == 200
    deleted = sorted(opened[:1] + inbox[:2])

    stale = c.post(f"{url}/images/deleted-to-none", json={"expected_count": 5})
    assert stale.status_code == 409 and "3 deleted image(s) would move now" in stale.json()["detail"]
    moved = c.post(f"{url}/images/deleted-to-none", json={"expected_count": 3})
    assert moved.status_code == 200, moved.text
    entry = moved.json()
    assert entry["action"] == "deleted_to_none" and sorted(entry["image_ids"]) == deleted
    assert "'none'" in entry["summary"]
    g = groups(c, url)
    assert g["none"]["none_of_the_above"] is True and g["none"]["counts"]["GROUP"] == 3
    assert [(image(c, i)["status"], image(c, i)["group"]) for i in deleted] == [("GROUP", "none")] * 3
    assert c.get(f"{url}/health").json()["deleted"] == 0
    again = c.post(f"{url}/images/deleted-to-none", json={})
    assert again.status_code == 422 and "no deleted images" in again.json()["detail"]

    assert c.post(f"{API}/history/{entry['id']}/undo").status_code == 200
    assert "none" not in groups(c, url)  # the entry made it, undo removes it
    assert [image(c, i)["status"] for i in deleted] == ["DELETED"] * 3
    assert image(c, opened[0])["group"] == "open" and image(c, inbox[0])["group"] is None


def test_deleted_images_into_the_marked_group_and_undo_blocked_by_later_change(api) -> None:
    seed, c = Seeder(api), api.client
    url = seed.classifier("shop", "door", ("open", "rejects"))
    already = seed.images("shop", "door", 2, "rejects")
    inbox = seed.images("shop", "door", 2)
    c.patch(f"{url}/groups/rejects", json={"none_of_the_above": True})
    c.post(f"{url}/images/bulk", json={"ids": inbox, "action": "delete"})
    with api.services.sessions() as s:
        plan = none_group.plan(s, crud.get_classifier(s, "shop", "door"))
    assert (plan.count, plan.group, plan.create, plan.mark) == (2, "rejects", False, False)
    assert "Move 2 deleted image(s) into group 'rejects'" in plan.text

    entry = c.post(f"{url}/images/deleted-to-none", json={"expected_count": 2}).json()
    assert groups(c, url)["rejects"]["counts"]["GROUP"] == 4 and "none" not in groups(c, url)
    later = c.post(f"{url}/images/bulk", json={"ids": inbox[:1], "action": "move", "group": "open"}).json()
    blocked = c.post(f"{API}/history/{entry['id']}/undo")
    assert blocked.status_code == 409 and f"entry id={later['id']}" in blocked.json()["detail"]
    assert c.post(f"{API}/history/{later['id']}/undo").status_code == 200
    assert c.post(f"{API}/history/{entry['id']}/undo").status_code == 200
    g = groups(c, url)
    assert g["rejects"]["none_of_the_above"] is True and g["rejects"]["counts"]["GROUP"] == len(already)
    assert [image(c, i)["status"] for i in inbox] == ["DELETED", "DELETED"]


def test_deleted_images_into_a_named_unmarked_group_marks_it_and_undo_unmarks(sqlite_api) -> None:
    seed, c = Seeder(sqlite_api), sqlite_api.client
    url = seed.classifier("shop", "door", ("open", "background"))
    [one] = seed.images("shop", "door", 1)
    c.post(f"{url}/images/bulk", json={"ids": [one], "action": "delete"})
    assert c.post(f"{url}/images/deleted-to-none", json={"group": "bad name!"}).status_code == 422
    entry = c.post(f"{url}/images/deleted-to-none", json={"group": "background"}).json()
    assert groups(c, url)["background"]["none_of_the_above"] is True
    assert c.post(f"{API}/history/{entry['id']}/undo").status_code == 200
    assert groups(c, url)["background"]["none_of_the_above"] is False
    assert image(c, one)["status"] == "DELETED"


def test_job_dataset_names_the_none_classes(api) -> None:
    seed, c = Seeder(api), api.client
    url = seed.classifier("shop", "door", ("open", "closed"))
    seed.images("shop", "door", 2, "open")
    seed.images("shop", "door", 2, "closed")
    seed.images("shop", "door", 2, "none")
    seed.images("shop", "door", 1, "stray")  # under MIN_IMAGES_PER_GROUP: not a class, even if marked
    assert dataset(api, "shop", "door").none_classes == []
    c.patch(f"{url}/groups/none", json={"none_of_the_above": True})
    c.patch(f"{url}/groups/stray", json={"none_of_the_above": True})
    ds = dataset(api, "shop", "door")
    assert ds.classes == ["closed", "none", "open"] and ds.none_classes == ["none"]
    assert sum(1 for i in ds.images if i.group == "none") == 2
    assert Dataset.model_validate_json(ds.model_dump_json()).none_classes == ["none"]


def test_a_marked_common_group_of_another_site_is_a_none_class(sqlite_api) -> None:
    seed, c = Seeder(sqlite_api), sqlite_api.client
    seed.classifier("shop", "door", ("open",))
    seed.images("shop", "door", 2, "open")
    temple = seed.classifier("temple", "door", ())
    seed.images("temple", "door", 3, "nothing")
    c.patch(f"{temple}/groups/nothing", json={"common": True})
    c.patch(f"{temple}/groups/nothing", json={"none_of_the_above": True})
    ds = dataset(sqlite_api, "shop", "door")
    assert ds.classes == ["nothing", "open"] and ds.none_classes == ["nothing"]


def test_none_group_counts_for_readiness_but_one_real_group_is_needed(api) -> None:
    seed, c = Seeder(api), api.client
    url = seed.classifier("shop", "door", ("open",))
    seed.images("shop", "door", 2, "open")
    seed.images("shop", "door", 2, "none")
    seed.images("shop", "door", 2, "junk")
    c.patch(f"{url}/groups/none", json={"none_of_the_above": True})
    c.patch(f"{url}/groups/junk", json={"none_of_the_above": True})
    c.patch(f"{url}/groups/open", json={"none_of_the_above": True})

    refused = c.post(f"{url}/jobs", json={"mode": "quick"})
    assert refused.status_code == 422, refused.text
    detail = refused.json()["detail"]
    assert "every group with enough images (junk, none, open) is marked none of the above" in detail

    c.patch(f"{url}/groups/junk", json={"none_of_the_above": False})
    c.patch(f"{url}/groups/open", json={"none_of_the_above": False})
    c.delete(f"{url}/groups/junk")
    # one real group plus the none group: a job (the none group counts like any group for the minimum)
    created = c.post(f"{url}/jobs", json={"mode": "quick"})
    assert created.status_code == 201, created.text
    ds = jobs_dataset(c, created.json()["id"])
    assert ds.classes == ["none", "open"] and ds.none_classes == ["none"]

    # marked after the job was queued: the dataset is refused rather than handed out without a real class
    c.patch(f"{url}/groups/open", json={"none_of_the_above": True})
    late = c.get(f"{API}/jobs/{created.json()['id']}/dataset")
    assert late.status_code == 422 and "marked none of the above" in late.json()["detail"]


def jobs_dataset(c: Any, job_id: int) -> Dataset:
    r = c.get(f"{API}/jobs/{job_id}/dataset")
    assert r.status_code == 200, r.text
    return Dataset.model_validate(r.json())


def test_viewer_and_agent_token_are_refused(sqlite_api) -> None:
    api, c = sqlite_api, sqlite_api.client
    seed = Seeder(api)
    url = seed.classifier("shop", "door", ("open", "junk"))
    [one] = seed.images("shop", "door", 1)
    c.post(f"{url}/images/bulk", json={"ids": [one], "action": "delete"})

    accounts = TestClient(c.app)
    login = accounts.post(f"{API}/auth/login", json={"username": "admin", "password": "admin-password-1"})
    accounts.headers["X-CSRF-Token"] = login.headers["x-csrf-token"]
    r = accounts.post(f"{API}/users", json={"username": "vic", "password": "long enough pw"})
    assert accounts.put(f"{API}/users/{r.json()['id']}/roles/shop", json={"role": "viewer"}).status_code == 200
    viewer = TestClient(c.app)
    viewer_login = viewer.post(f"{API}/auth/login", json={"username": "vic", "password": "long enough pw"})
    assert viewer_login.status_code == 200
    viewer.headers["X-CSRF-Token"] = viewer_login.headers["x-csrf-token"]
    token = accounts.post(f"{API}/tokens", json={"name": "agent shop-1", "site": "shop", "role": "viewer"})
    assert token.status_code == 201, token.text
    agent = TestClient(c.app, headers={"Authorization": f"Bearer {token.json()['token']}"})

    for who in (viewer, agent):
        assert who.get(f"{url}/groups").status_code == 200  # they may read
        mark = who.patch(f"{url}/groups/junk", json={"none_of_the_above": True})
        assert mark.status_code == 403 and "labeller" in mark.json()["detail"]
        move = who.post(f"{url}/images/deleted-to-none", json={})
        assert move.status_code == 403 and "labeller" in move.json()["detail"]
    assert groups(c, url)["junk"]["none_of_the_above"] is False and image(c, one)["status"] == "DELETED"
