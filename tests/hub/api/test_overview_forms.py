"""The overview page's forms: a hub admin creates a site, a site admin a classifier; bad names and missing roles
get a page that says why, and nothing is created."""

from __future__ import annotations

from typing import Any

from test_auth import logged_in, make_user

API = "/api/v1"


def test_admin_creates_a_site_and_a_classifier_from_the_overview(sqlite_api) -> None:
    c = sqlite_api.client
    html = c.get("/").text
    assert 'id="create-site"' in html
    r = c.post("/ui/sites", data={"name": "shop"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/#site-shop"
    assert 'id="create-classifier-shop"' in c.get("/").text
    r = c.post("/ui/sites/shop/classifiers", data={"name": "door"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/sites/shop/classifiers/door"
    assert c.get(r.headers["location"]).status_code == 200
    assert [x["name"] for x in c.get(f"{API}/sites/shop/classifiers").json()] == ["door"]


def test_bad_or_taken_names_are_explained(sqlite_api) -> None:
    c = sqlite_api.client
    c.post("/ui/sites", data={"name": "shop"})
    for name, status, words in (("bad name!", 422, "name"), ("shop", 409, "already exists"), ("", 422, "name")):
        r = c.post("/ui/sites", data={"name": name})
        assert r.status_code == status and 'role="alert"' in r.text and words in r.text, (name, r.text[:300])
    r = c.post("/ui/sites/shop/classifiers", data={"name": "../x"})
    assert r.status_code == 422 and 'role="alert"' in r.text
    assert [s["name"] for s in c.get(f"{API}/sites").json()] == ["shop"]
    assert c.get(f"{API}/sites/shop/classifiers").json() == []


def test_forms_follow_the_roles(sqlite_api: Any) -> None:
    c = sqlite_api.client
    c.post("/ui/sites", data={"name": "shop"})
    make_user(sqlite_api, "lab", {"shop": "labeller"})
    make_user(sqlite_api, "boss", {"shop": "admin"})
    labeller, site_admin = logged_in(sqlite_api, "lab"), logged_in(sqlite_api, "boss")
    page = labeller.get("/").text
    assert 'id="create-site"' not in page and 'id="create-classifier-shop"' not in page
    assert labeller.post("/ui/sites/shop/classifiers", data={"name": "door"}).status_code == 403
    assert site_admin.post("/ui/sites", data={"name": "other"}).status_code == 403
    assert 'id="create-classifier-shop"' in site_admin.get("/").text
    r = site_admin.post("/ui/sites/shop/classifiers", data={"name": "door"}, follow_redirects=False)
    assert r.status_code == 303
    assert [x["name"] for x in c.get(f"{API}/sites/shop/classifiers").json()] == ["door"]
