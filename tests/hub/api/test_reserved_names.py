"""Names that would alias a broker user, a topic word or the signed ImageNet default are refused with a 422."""

from __future__ import annotations

import pytest

API = "/api/v1"


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("sites", "hub"),
        ("sites", "observer"),
        ("sites/{site}/cameras", "models"),
        ("sites/{site}/cameras", "agents"),
        ("sites/{site}/classifiers", "imagenet"),
        ("sites/{site}/classifiers", "ImageNet"),
        ("sites/{site}/classifiers", "frame"),
        ("sites/{site}/classifiers", "event"),
    ],
)
def test_reserved_names_are_refused(sqlite_api, path: str, name: str) -> None:  # type: ignore[no-untyped-def]
    c = sqlite_api.client
    assert c.post(f"{API}/sites", json={"name": "shop"}).status_code == 201
    r = c.post(f"{API}/{path.format(site='shop')}", json={"name": name})
    assert r.status_code == 422, r.text
    assert "reserved" in r.text and name in r.text
    # an ordinary name still works: the refusal is about the name, not the route
    if path != "sites":
        assert c.post(f"{API}/{path.format(site='shop')}", json={"name": "door"}).status_code == 201
