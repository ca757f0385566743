"""One web app: every page extends one base template (one navigation, stylesheets in <head>, the JS helpers),
page links are built from route names, and no page script keeps its own copy of the shared JS helpers."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from apihelpers import import_dataset

SITE, CLF = "shop", "clothes"
ROOT = f"/ui/sites/{SITE}/classifiers/{CLF}"


def _head_and_body(html: str) -> tuple[str, str]:
    head, sep, body = html.partition("</head>")
    assert sep, "no </head>: the page does not extend _base.html"
    return head, body


def test_every_page_has_the_one_navigation_and_head_stylesheets(sqlite_api, clothing_subset: Path) -> None:
    c = sqlite_api.client
    import_dataset(c, clothing_subset)
    image_id = c.get(f"/api/v1/sites/{SITE}/classifiers/{CLF}/images", params={"limit": 1}).json()[0]["id"]
    classifier_pages = [ROOT, *(f"{ROOT}/{p}" for p in ("triage", "history", "training", "errors", "import"))]
    classifier_pages += [f"{ROOT}/{p}" for p in ("duplicates", "outliers", "analyse")] + [f"/ui/images/{image_id}"]
    pages = ["/", "/ui/fleet", "/ui/try", f"/ui/sites/{SITE}/logs", *classifier_pages]
    for url in pages:
        r = c.get(url)
        assert r.status_code == 200, url
        head, body = _head_and_body(r.text)
        assert "common.js" in head and "csrf.js" in head, url
        assert 'rel="stylesheet"' not in body, f"{url}: a stylesheet outside <head>"
        assert body.count('class="site-nav"') == 1, url
        for nav in ("nav-overview", "nav-fleet", "nav-try"):
            assert f'id="{nav}"' in body, (url, nav)
        if url in classifier_pages:  # the breadcrumb and the one classifier sub-navigation, links from route names
            assert 'class="crumbs"' in body and body.count('id="clf-links"') == 1, url
            assert f'href="{ROOT}/triage"' in body and f'href="/ui/sites/{SITE}/logs"' in body, url
            assert f'href="{ROOT}/outliers"' in body and f'href="{ROOT}/analyse"' in body, url


def test_route_names_give_the_same_paths(sqlite_api) -> None:
    app = sqlite_api.client.app
    assert app.url_path_for("ui.overview") == "/"
    assert app.url_path_for("ui.training", site=SITE, clf=CLF) == f"{ROOT}/training"
    assert app.url_path_for("ui.image", image_id="7") == "/ui/images/7"
    assert app.url_path_for("serving.logs", site=SITE) == f"/ui/sites/{SITE}/logs"
    assert app.url_path_for("fleet.camera", site=SITE, camera="gate") == f"/ui/fleet/sites/{SITE}/cameras/gate"


def test_no_page_script_copies_the_shared_helpers() -> None:
    static = resources.files("camfleet_hub") / "web" / "static"
    scripts = [p for p in Path(str(static)).rglob("*.js") if p.name != "common.js"]
    assert scripts
    for path in scripts:
        text = path.read_text()
        assert not re.search(r"function\s+(showError|detailOf|detail)\s*\(", text), path.name
        assert "/ui/" not in text, f"{path.name}: a page path written out"
