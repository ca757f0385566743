"""Every Kubernetes manifest validates against the Kubernetes JSON schemas (strict: unknown fields are errors),
offline: the schemas ship in the kubernetes-validate package (requirements-dev.txt). Plus what the schema cannot
say: numeric users that match the images, separate liveness and readiness, bounded resources, TLS on the Ingress,
the trainer on GPU nodes and the agent as a DaemonSet."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# Oldest Kubernetes release the manifests promise to work on (k3s stable channels are at or above it).
KUBERNETES_VERSION = "1.30.0"
UID = GID = 10001


def _docs() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        out += [
            (f"{path.name}:{d.get('kind')}/{d.get('metadata', {}).get('name')}", d)
            for d in yaml.safe_load_all(path.read_text())
            if d
        ]
    return out


def _workloads() -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["name"]: d for _, d in _docs() if d["kind"] in ("Deployment", "DaemonSet", "StatefulSet", "Job")
    }


RESOURCES = [(where, doc) for where, doc in _docs() if doc.get("kind") != "Kustomization"]


@pytest.mark.parametrize(("where", "doc"), RESOURCES, ids=[w for w, _ in RESOURCES])
def test_manifest_validates_against_the_kubernetes_schema(where: str, doc: dict[str, Any]) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install -r requirements-dev.txt")
    try:
        kv.validate(doc, KUBERNETES_VERSION, strict=True)
    except kv.ValidationError as exc:
        pytest.fail(f"{where}: {'.'.join(str(p) for p in exc.path)}: {exc.message}")


def test_the_schema_check_catches_a_mistake() -> None:
    """A misspelt field and a string where a number belongs are both refused (the check can fail)."""
    kv = pytest.importorskip("kubernetes_validate")
    hub = _workloads()["hub"]
    typo = yaml.safe_load(yaml.safe_dump(hub))
    typo["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {"httpGet": {"path": "/", "port": 1}}
    with pytest.raises(kv.ValidationError):
        kv.validate(typo, KUBERNETES_VERSION, strict=True)
    wrong = yaml.safe_load(yaml.safe_dump(hub))
    wrong["spec"]["template"]["spec"]["securityContext"]["runAsUser"] = "camfleet"
    with pytest.raises(kv.ValidationError):
        kv.validate(wrong, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == files


@pytest.mark.parametrize("name", ["hub", "trainer", "agent-plaza"])
def test_camfleet_pods_run_as_the_images_numeric_user(name: str) -> None:
    pod = _workloads()[name]["spec"]["template"]["spec"]
    ctx = pod["securityContext"]
    assert ctx["runAsNonRoot"] is True and (ctx["runAsUser"], ctx["runAsGroup"]) == (UID, GID)
    image = pod["containers"][0]["image"].split(":")[0].split("/")[-1]
    dockerfile = (ROOT / "deploy" / "docker" / f"{image}.Dockerfile").read_text()
    assert f"USER {UID}:{GID}" in dockerfile.splitlines()
    assert re.search(rf"useradd [^\n]*--uid {UID} --gid {GID}", dockerfile)
    assert re.search(rf"groupadd [^\n]*--gid {GID}", dockerfile)


@pytest.mark.parametrize(
    ("name", "live", "ready"), [("hub", "/api/v1/healthz", "/api/v1/readyz"), ("agent-plaza", "/healthz", "/readyz")]
)
def test_liveness_and_readiness_are_separate_routes(name: str, live: str, ready: str) -> None:
    container = _workloads()[name]["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == live
    assert container["readinessProbe"]["httpGet"]["path"] == ready


def test_every_container_has_requests_and_limits() -> None:
    for name, workload in _workloads().items():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{name}/{container['name']}: {kind}"


def test_ingress_terminates_tls_for_its_hosts() -> None:
    ingresses = [d for _, d in _docs() if d["kind"] == "Ingress"]
    assert ingresses
    for ingress in ingresses:
        hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
        tls_hosts = {h for tls in ingress["spec"]["tls"] for h in tls["hosts"]}
        assert hosts <= tls_hosts and all(tls["secretName"] for tls in ingress["spec"]["tls"])


def test_trainer_runs_on_gpu_nodes_and_agent_on_every_site_node() -> None:
    workloads = _workloads()
    trainer = workloads["trainer"]["spec"]["template"]["spec"]
    assert trainer["nodeSelector"] and trainer["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    agent = workloads["agent-plaza"]
    assert agent["kind"] == "DaemonSet" and agent["spec"]["template"]["spec"]["nodeSelector"] == {
        "camfleet/site": "plaza"
    }
