"""Sites, cameras, classifiers, groups: create/list/get, validation errors that name field and value, 404/409."""

from __future__ import annotations

import pytest

API = "/api/v1"

BAD_NAMES = ["", "-starts-with-dash", "has space", "slash/inside", "plus+", "hash#", "x" * 65, "ünïcode"]


def test_health_and_openapi(api) -> None:
    health = api.client.get(f"{API}/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["database"] in ("sqlite", "postgresql")
    assert health.json()["mqtt_connected"] is True
    spec = api.client.get("/openapi.json").json()
    ops = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert {
        "create_site",
        "list_sites",
        "get_site",
        "create_camera",
        "create_classifier",
        "get_classifier",
        "create_group",
        "import_images",
        "create_job",
        "claim_job",
        "heartbeat_job",
        "fail_job",
        "cancel_job",
        "upload_job_result",
        "promote_model",
        "get_model_bundle",
        "put_default_model",
        "get_fleet_key",
        "classify",
        "list_frames",
        "get_ingest_stats",
        "list_dead_letters",
    } <= ops
    body = spec["paths"][f"{API}/classify"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)
    assert api.client.get("/docs").status_code == 200


def test_site_camera_classifier_group_lifecycle(api) -> None:
    c = api.client
    site = c.post(f"{API}/sites", json={"name": "shop-1"})
    assert site.status_code == 201, site.text
    assert site.json()["name"] == "shop-1"
    assert [s["name"] for s in c.get(f"{API}/sites").json()] == ["shop-1"]
    assert c.get(f"{API}/sites/shop-1").json()["id"] == site.json()["id"]

    assert c.post(f"{API}/sites/shop-1/cameras", json={"name": "door.cam"}).status_code == 201
    cams = c.get(f"{API}/sites/shop-1/cameras").json()
    assert [(x["site"], x["name"], x["agent"]) for x in cams] == [("shop-1", "door.cam", None)]
    owned = c.patch(f"{API}/sites/shop-1/cameras/door.cam", json={"agent": "edge-2"})  # a site admin reassigns it
    assert owned.status_code == 200 and owned.json()["agent"] == "edge-2", owned.text
    assert c.get(f"{API}/sites/shop-1/cameras").json()[0]["agent"] == "edge-2"
    assert c.patch(f"{API}/sites/shop-1/cameras/door.cam", json={"agent": None}).json()["agent"] is None  # released
    bad = c.patch(f"{API}/sites/shop-1/cameras/door.cam", json={"agent": "a b"})
    assert bad.status_code == 422 and "agent" in bad.text
    assert c.patch(f"{API}/sites/shop-1/cameras/door.cam", json={}).status_code == 422
    assert c.patch(f"{API}/sites/shop-1/cameras/nope", json={"agent": "edge-2"}).status_code == 404

    clf = c.post(f"{API}/sites/shop-1/classifiers", json={"name": "door"})
    assert clf.status_code == 201
    assert clf.json()["site"] == "shop-1"
    assert [x["name"] for x in c.get(f"{API}/sites/shop-1/classifiers").json()] == ["door"]

    assert c.post(f"{API}/sites/shop-1/classifiers/door/groups", json={"name": "open"}).status_code == 201
    child = c.post(f"{API}/sites/shop-1/classifiers/door/groups", json={"name": "ajar", "parent": "open"})
    assert child.status_code == 201
    assert child.json()["parent"] == "open"
    groups = c.get(f"{API}/sites/shop-1/classifiers/door/groups").json()
    assert [g["name"] for g in groups] == ["ajar", "open"]
    assert groups[0]["counts"] == {"NEW": 0, "GROUP": 0, "DELETED": 0}

    detail = c.get(f"{API}/sites/shop-1/classifiers/door").json()
    assert detail["new_count"] == 0
    assert [g["name"] for g in detail["groups"]] == ["ajar", "open"]
    assert detail["models"] == []


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_422_naming_field_and_value(sqlite_api, name: str) -> None:
    c = sqlite_api.client
    r = c.post(f"{API}/sites", json={"name": name})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert isinstance(detail, str)
    assert f"name={name!r}" in detail
    assert c.get(f"{API}/sites").json() == []


def test_bad_names_in_paths_and_children(sqlite_api) -> None:
    c = sqlite_api.client
    c.post(f"{API}/sites", json={"name": "s1"})
    r = c.get(f"{API}/sites/bad name")
    assert r.status_code == 422
    assert "site='bad name'" in r.json()["detail"]
    r = c.post(f"{API}/sites/s1/classifiers", json={"name": "a/b"})
    assert r.status_code == 422 and "'a/b'" in r.json()["detail"]
    r = c.post(f"{API}/sites/s1/cameras", json={"name": "cam 1"})
    assert r.status_code == 422 and "'cam 1'" in r.json()["detail"]
    c.post(f"{API}/sites/s1/classifiers", json={"name": "door"})
    r = c.post(f"{API}/sites/s1/classifiers/door/groups", json={"name": "open", "parent": "no such"})
    assert r.status_code == 422 and "parent" in r.json()["detail"]


def test_unknown_things_are_404_and_duplicates_409(sqlite_api) -> None:
    c = sqlite_api.client
    r = c.get(f"{API}/sites/nowhere")
    assert r.status_code == 404 and "site='nowhere'" in r.json()["detail"]
    assert c.post(f"{API}/sites/nowhere/cameras", json={"name": "cam"}).status_code == 404
    assert c.post(f"{API}/sites/nowhere/classifiers", json={"name": "door"}).status_code == 404
    c.post(f"{API}/sites", json={"name": "s1"})
    r = c.get(f"{API}/sites/s1/classifiers/nothing")
    assert r.status_code == 404 and "classifier='nothing'" in r.json()["detail"]
    assert c.get(f"{API}/sites/s1/classifiers/nothing/groups").status_code == 404
    assert c.post(f"{API}/sites/s1/classifiers/nothing/jobs", json={}).status_code == 404
    c.post(f"{API}/sites/s1/classifiers", json={"name": "door"})
    r = c.post(f"{API}/sites/s1/classifiers/door/groups", json={"name": "open", "parent": "missing"})
    assert r.status_code == 404 and "parent='missing'" in r.json()["detail"]
    assert c.get(f"{API}/jobs/9999").status_code == 404
    assert c.get(f"{API}/models/9999").status_code == 404
    assert c.get(f"{API}/images/9999/content").status_code == 404
    assert c.get(f"{API}/frames/nope/image").status_code == 404

    r = c.post(f"{API}/sites", json={"name": "s1"})
    assert r.status_code == 409 and "'s1'" in r.json()["detail"]
    assert c.post(f"{API}/sites/s1/classifiers", json={"name": "door"}).status_code == 409
    c.post(f"{API}/sites/s1/classifiers/door/groups", json={"name": "open"})
    assert c.post(f"{API}/sites/s1/classifiers/door/groups", json={"name": "open"}).status_code == 409


def test_malformed_bodies(sqlite_api) -> None:
    c = sqlite_api.client
    r = c.post(f"{API}/sites", json={"name": "s1", "colour": "red"})
    assert r.status_code == 422 and "colour" in r.json()["detail"]
    r = c.post(f"{API}/sites", json={})
    assert r.status_code == 422 and "name" in r.json()["detail"]
    r = c.post(f"{API}/sites", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    r = c.post(f"{API}/jobs/claim", json={"worker": ""})
    assert r.status_code == 422 and "worker" in r.json()["detail"]
    r = c.get(f"{API}/frames", params={"limit": 0})
    assert r.status_code == 422 and "limit" in r.json()["detail"]
