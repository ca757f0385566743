"""docs/openapi.json is the API the hub serves: regenerate it with CAMFLEET_WRITE_OPENAPI=1 when routes change."""

from __future__ import annotations

import json
import os
from pathlib import Path

DOC = Path(__file__).resolve().parents[3] / "docs" / "openapi.json"
REGENERATE = "run CAMFLEET_WRITE_OPENAPI=1 pytest tests/hub/api/test_openapi_doc.py"


def test_openapi_document_is_current(sqlite_api) -> None:  # type: ignore[no-untyped-def]
    served = sqlite_api.client.get("/openapi.json").json()
    text = json.dumps(served, indent=2, sort_keys=True) + "\n"
    if os.environ.get("CAMFLEET_WRITE_OPENAPI") == "1":
        DOC.write_text(text)
    assert DOC.exists(), f"docs/openapi.json is missing: {REGENERATE}"
    assert json.loads(DOC.read_text()) == served, f"docs/openapi.json is stale: {REGENERATE}"
    ids = [op["operationId"] for path in served["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids)), "operation ids must be unique and stable"
