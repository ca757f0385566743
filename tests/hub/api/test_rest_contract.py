"""The hub's OpenAPI agrees with camfleet_contract.rest: every path the agent and the trainer call exists with its
method, and its JSON bodies are the contract's models (same schema name, same schema)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from camfleet_contract.rest import API_PREFIX, ENDPOINTS, Endpoint

REF = "#/components/schemas/"


def _ref(content: dict[str, Any]) -> str | None:
    schema = content.get("application/json", {}).get("schema", {})
    ref = schema.get("$ref")
    return ref[len(REF) :] if isinstance(ref, str) and ref.startswith(REF) else None


def _component(spec: dict[str, Any], name: str) -> dict[str, Any]:
    """A served component schema, with its nested $refs resolved against the served components."""
    components = spec["components"]["schemas"]

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(components[node["$ref"][len(REF) :]])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(components[name])  # type: ignore[no-any-return]


def _contract_schema(model: type[BaseModel], mode: str) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=REF + "{model}", mode=mode)  # type: ignore[arg-type]
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"][len(REF) :]])
            # FastAPI leaves out `"default": null` (an optional field's default); so does this comparison
            return {k: resolve(v) for k, v in node.items() if not (k == "default" and v is None)}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)  # type: ignore[no-any-return]


def _operation(spec: dict[str, Any], endpoint: Endpoint) -> dict[str, Any]:
    path = API_PREFIX + endpoint.template
    assert path in spec["paths"], f"{endpoint.method} {path}: not in the hub's OpenAPI"
    operations = spec["paths"][path]
    assert endpoint.method.lower() in operations, f"{path}: the hub has {sorted(operations)}, not {endpoint.method}"
    return operations[endpoint.method.lower()]  # type: ignore[no-any-return]


def test_every_contract_endpoint_is_served_with_the_contract_models(sqlite_api) -> None:  # type: ignore[no-untyped-def]
    spec = sqlite_api.client.get("/openapi.json").json()
    for endpoint in ENDPOINTS:
        op = _operation(spec, endpoint)
        answer = op["responses"].get(str(endpoint.status))
        assert answer is not None, f"{endpoint.method} {endpoint.template}: no {endpoint.status} answer"
        if endpoint.response is not None:
            name = _ref(answer.get("content", {}))
            assert name == endpoint.response.__name__, f"{endpoint.template}: answers {name}"
            assert _component(spec, name) == _contract_schema(endpoint.response, "serialization"), name
        if endpoint.request is not None:
            name = _ref(op.get("requestBody", {}).get("content", {}))
            assert name == endpoint.request.__name__, f"{endpoint.template}: takes {name}"
            assert _component(spec, name) == _contract_schema(endpoint.request, "validation"), name


def test_a_drifted_model_is_caught(sqlite_api) -> None:  # type: ignore[no-untyped-def]
    """The comparison above can fail: a contract model with one more field does not match the served schema."""
    from camfleet_contract.rest import HeartbeatAnswer

    class Drifted(HeartbeatAnswer):
        extra_field: int = 0

    spec = sqlite_api.client.get("/openapi.json").json()
    assert _component(spec, "HeartbeatAnswer") == _contract_schema(HeartbeatAnswer, "serialization")
    assert _component(spec, "HeartbeatAnswer") != _contract_schema(Drifted, "serialization")


def test_paths_fill_their_parameters() -> None:
    from camfleet_contract.rest import HEARTBEAT_JOB, MODEL_BUNDLE

    assert HEARTBEAT_JOB.path(job_id=7) == "/jobs/7/heartbeat"
    assert MODEL_BUNDLE.url_path(model_id=3) == "/api/v1/models/3/bundle"
