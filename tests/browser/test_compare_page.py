"""Which backbone? A person starts a comparison from the training page in a real browser, a real trainer worker
runs it against the real hub process, and the table with its bars reads on a phone."""

from __future__ import annotations

from pathlib import Path

from camfleet_trainer.client import HubClient
from camfleet_trainer.config import TrainerSettings
from camfleet_trainer.worker import Worker
from tests.browser.test_analysis_pages import shoot
from tests.browser.test_hub_page import ADMIN_PASSWORD, _zip, admin_api, log_in

SITE, CLF = "shop", "clothing"


def test_compare_from_the_training_page(start_hub, browser, clothing_subset: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    hub_url = start_hub(ADMIN_PASSWORD)
    api = admin_api(hub_url)
    assert api.post("/sites", json={"name": SITE}).status_code == 201
    assert api.post(f"/sites/{SITE}/classifiers", json={"name": CLF}).status_code == 201
    files = {"file": ("train.zip", _zip(clothing_subset / "train"), "application/zip")}
    assert api.post(f"/sites/{SITE}/classifiers/{CLF}/import?wait=true", files=files).status_code == 200

    training = f"/ui/sites/{SITE}/classifiers/{CLF}/training"
    page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone
    log_in(page, hub_url, "admin", ADMIN_PASSWORD, training)
    page.get_by_label("mode").select_option("compare")
    page.get_by_role("button", name="Start").click()
    page.wait_for_load_state()
    assert page.get_by_text("compare", exact=True).first.is_visible()

    token = api.headers["Authorization"].removeprefix("Bearer ")
    settings = TrainerSettings(
        hub_url=hub_url, api_token=token, worker="browser-trainer", cache_dir=tmp_path / "trainer", device="cpu",
        compare_backbones=["lite0"],
    )  # fmt: skip
    assert Worker(settings, client=HubClient(hub_url, token=token)).run(max_jobs=1) == 1

    page.goto(hub_url + training)
    table = page.locator("#comparison")
    assert table.get_by_role("heading", name="Which backbone?").is_visible()
    assert table.locator("tbody tr").count() == 2  # lite0 as FP32 and INT8
    assert table.get_by_text("INT8").is_visible() and table.locator("meter").count() == 4
    # Nothing pushes the page sideways on a phone: a wide table scrolls inside itself.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shoot(page, "ui-compare.png")
    page.close()
