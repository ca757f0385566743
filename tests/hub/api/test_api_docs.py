"""/docs works offline: Swagger UI from files installed with the hub under the normal CSP; the OpenAPI document
declares the Bearer scheme, the real error shape ``{"detail": str}`` and request examples."""

from __future__ import annotations

import re

API = "/api/v1"


def test_docs_page_references_only_local_assets_and_they_are_served(sqlite_api) -> None:  # type: ignore[no-untyped-def]
    c = sqlite_api.client
    page = c.get("/docs")
    assert page.status_code == 200
    refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert refs, page.text
    for ref in refs:
        assert ref.startswith("/") and not ref.startswith("//"), f"{ref} is not served by the hub"
        asset = c.get(ref)
        assert asset.status_code == 200 and asset.content, ref
    assert "<script>" not in page.text  # no inline script: the page runs under script-src 'self'
    assert any(r.endswith("swagger-ui-bundle.js") for r in refs)
    csp = page.headers["content-security-policy"]
    script_src = next(p for p in csp.split(";") if p.strip().startswith("script-src"))
    assert "unsafe-inline" not in script_src and "http" not in script_src and "cdn" not in csp
    init = c.get("/docs/init.js")
    assert "/openapi.json" in init.text


def test_openapi_declares_bearer_scheme_error_shape_and_examples(sqlite_api) -> None:  # type: ignore[no-untyped-def]
    doc = sqlite_api.client.get("/openapi.json").json()
    scheme = doc["components"]["securitySchemes"]["bearer"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    error = doc["components"]["schemas"]["ErrorPublic"]
    assert error["properties"]["detail"]["type"] == "string" and error["required"] == ["detail"]
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    ref = {"$ref": "#/components/schemas/ErrorPublic"}

    def errors(path: str, method: str) -> dict[str, object]:
        responses = doc["paths"][path][method]["responses"]
        return {code: r["content"]["application/json"]["schema"] for code, r in responses.items() if code >= "4"}

    create = errors(f"{API}/sites/{{site}}/classifiers", "post")
    assert create == {code: ref for code in ("401", "403", "404", "409", "413", "422")}
    assert doc["paths"][f"{API}/sites/{{site}}/classifiers"]["post"]["security"] == [{"bearer": []}]
    assert set(errors(f"{API}/images/{{image_id}}", "get")) == {"401", "403", "404", "422"}
    login = doc["paths"][f"{API}/auth/login"]["post"]
    assert "security" not in login  # logging in needs no token
    assert login["requestBody"]["content"]["application/json"]["example"]["username"] == "admin"
    assert "security" not in doc["paths"][f"{API}/healthz"]["get"]
    assert doc["paths"]["/api/predict"]["post"]["security"] == [{"bearer": []}]  # authenticates in the handler
    for op in ("create_site", "create_classifier", "create_group", "bulk_images", "create_token", "classify"):
        found = [o for ops in doc["paths"].values() for o in ops.values() if o["operationId"] == op]
        assert found and "example" in found[0]["requestBody"]["content"]["application/json"], op


def test_refusals_have_the_declared_shape(sqlite_api) -> None:  # type: ignore[no-untyped-def]
    c = sqlite_api.client
    missing = c.get(f"{API}/sites/nowhere")
    invalid = c.post(f"{API}/sites", json={"name": ""})
    for r, code in ((missing, 404), (invalid, 422)):
        assert r.status_code == code and set(r.json()) == {"detail"} and isinstance(r.json()["detail"], str)
