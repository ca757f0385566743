"""Curation pages render from the real services: classifier (tree, mosaic, health chart), triage shell, history
with undo buttons, image detail, and their form actions (group create/rename/merge/delete, undo, image actions)."""

from __future__ import annotations

import re

from test_curation import Seeder

API = "/api/v1"
UI = "/ui/sites/shop/classifiers/door"


def test_classifier_page_tree_mosaic_health_and_group_forms(sqlite_api) -> None:
    seed, c = Seeder(sqlite_api), sqlite_api.client
    seed.classifier("shop", "door", ("open", "closed"))
    seed.classifier("temple", "door", ())
    seed.images("temple", "door", 2, "nothing")
    c.patch(f"{API}/sites/temple/classifiers/door/groups/nothing", json={"common": True})
    opened = seed.images("shop", "door", 65, "open")
    seed.images("shop", "door", 3, "closed")
    seed.images("shop", "door", 4)

    page = c.get(f"{UI}?group=open")
    assert page.status_code == 200
    html = page.text
    assert 'data-group="open"' in html and 'data-group="closed"' in html
    assert "from temple" in html and "4</strong> new image(s) to triage" in html
    assert "class imbalance" in html and "<svg" in html and "min 10" in html
    assert f'href="/ui/images/{opened[0]}"' in html and f'href="/ui/images/{opened[-1]}"' not in html  # page 1 of 2
    nxt = re.search(r'href="([^"]+after=\d+)" id="mosaic-next"', html)
    assert nxt is not None
    assert f'href="/ui/images/{opened[-1]}"' in c.get(nxt.group(1).replace("&amp;", "&")).text
    for link in ("/triage", "/history", "/training", "/errors", "/import", "/duplicates", "/export"):
        assert link in html

    act = f"{UI}/groups/action"
    r = c.post(act, data={"action": "create", "value": "ajar", "parent": "open"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].endswith("?group=ajar")
    assert "under open" in c.get(r.headers["location"]).text
    bad = c.post(act, data={"action": "create", "value": "open"})
    assert bad.status_code == 409 and "already exists" in bad.text
    assert c.post(act, data={"action": "rename", "group": "ajar", "value": "half"}).status_code == 200
    assert c.post(act, data={"action": "common", "group": "half", "common": "1"}).status_code == 200
    assert c.post(act, data={"action": "merge", "group": "closed", "value": "half"}).status_code == 200
    assert c.post(act, data={"action": "delete", "group": "half"}).status_code == 200
    assert c.post(act, data={"action": "explode", "group": "open"}).status_code == 422
    tree = c.get(UI).text
    assert 'data-group="half"' not in tree and 'data-group="closed"' not in tree and "7</strong> new image" in tree

    history = c.get(f"{UI}/history").text
    assert history.count('class="undo"') >= 6 and "merged group" in history
    first = re.search(r'action="/ui/history/(\d+)/undo"', history)
    assert first is not None
    assert c.post(f"/ui/history/{first.group(1)}/undo", follow_redirects=False).status_code == 303  # undo delete
    assert 'data-group="half"' in c.get(UI).text
    # a conflicting undo shows the reason on the page
    entries = c.get(f"{API}/sites/shop/classifiers/door/history").json()["entries"]
    create = next(e for e in entries if e["action"] == "create_group" and "ajar" in e["summary"])
    refused = c.post(f"/ui/history/{create['id']}/undo")
    assert refused.status_code == 409 and "cannot undo" in refused.text


def test_triage_shell_and_image_page(sqlite_api) -> None:
    seed, c = Seeder(sqlite_api), sqlite_api.client
    seed.classifier("shop", "door", ("open", "closed"))
    [a] = seed.images("shop", "door", 1, name="front door")
    t = c.get(f"{UI}/triage")
    assert t.status_code == 200 and "triage.js" in t.text
    assert '<kbd>1</kbd> <span data-hotkey="1">closed</span>' in t.text and 'data-status="NEW"' in t.text
    d = c.get(f"{UI}/triage?view=deleted")
    assert 'data-status="DELETED"' in d.text and "Restore selected" in d.text

    page = c.get(f"/ui/images/{a}")
    assert page.status_code == 200 and "front door.jpg" in page.text and "sha256" in page.text
    r = c.post(f"/ui/images/{a}/action", data={"action": "move", "group": "open"}, follow_redirects=False)
    assert r.status_code == 303
    assert "status-GROUP" in c.get(f"/ui/images/{a}").text
    c.post(f"/ui/images/{a}/action", data={"action": "delete"})
    assert "Restore" in c.get(f"/ui/images/{a}").text
    refused = c.post(f"/ui/images/{a}/action", data={"action": "move", "group": "nope"})
    assert refused.status_code == 404 and "nope" in refused.text
    assert c.get("/ui/images/999999").status_code == 404


def test_none_of_the_above_controls_on_the_classifier_and_triage_pages(sqlite_api) -> None:
    seed, c = Seeder(sqlite_api), sqlite_api.client
    url = seed.classifier("shop", "door", ("open", "closed"))
    deleted = seed.images("shop", "door", 3)
    c.post(f"{url}/images/bulk", json={"ids": deleted, "action": "delete"})
    act = f"{UI}/groups/action"

    page = c.get(f"{UI}?group=closed").text
    assert "Mark none of the above" in page and 'class="badge none"' not in page
    assert "Use the 3 deleted image(s) as none of the above" in page
    assert "Move 3 deleted image(s) into a new group &#39;none&#39; (marked none of the above)" in page
    stale = c.post(act, data={"action": "deleted_to_none", "group": "none", "expected_count": "2"})
    assert stale.status_code == 409 and "reload and confirm again" in stale.text
    r = c.post(act, data={"action": "deleted_to_none", "group": "none", "expected_count": "3"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].endswith("?group=none")
    page = c.get(r.headers["location"]).text
    assert 'data-group="none"' in page and page.count('class="badge none"') == 2  # tree and heading
    assert "Unmark none of the above" in page and "deleted image(s) as none of the above" not in page
    assert "<title>none (none of the above): 3</title>" in page  # the health chart's bar
    triage = c.get(f"{UI}/triage").text
    assert re.search(r'data-hotkey="\d">none</span> <span class="badge none"[^>]*>none of the above<', triage)
    assert '<option value="none">none (none of the above)</option>' in triage  # the "Selection to" list
    assert '<option value="open">open</option>' in triage

    assert c.post(act, data={"action": "none", "group": "none"}).status_code == 200  # unmark
    assert "Mark none of the above" in c.get(f"{UI}?group=none").text
    assert c.post(act, data={"action": "none", "group": "closed", "none_of_the_above": "1"}).status_code == 200
    tree = c.get(f"{UI}?group=open").text
    assert tree.count('class="badge none"') == 1 and re.search(r'closed</a>\s*<span class="badge none"', tree)
    made = c.post(act, data={"action": "create", "value": "junk", "none_of_the_above": "1"}, follow_redirects=False)
    assert made.status_code == 303
    names = {g["name"]: g["none_of_the_above"] for g in c.get(f"{url}/groups").json()}
    assert names == {"closed": True, "junk": True, "none": False, "open": False}
