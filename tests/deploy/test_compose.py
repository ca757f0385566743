"""The deploy files (docker-compose.yml, Dockerfiles, k8s manifests, example configs) match the code.

There is no container engine here, so these tests check what can go stale: every command names a real module and
subcommand, every CAMFLEET_* override names a real config field, and every example config validates.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

# python -m module  ->  (package folder, env prefix, settings class "module:Class", example config)
PROCESSES: dict[str, tuple[str, str, str, str]] = {
    "camfleet_hub": ("hub", "CAMFLEET_HUB", "camfleet_hub.core.config:HubSettings", "hub.toml"),
    "camfleet_agent": ("edge-agent", "CAMFLEET_AGENT", "camfleet_agent.config:AgentSettings", "agent.toml"),
    "camfleet_trainer": ("trainer", "CAMFLEET_TRAINER", "camfleet_trainer.config:TrainerSettings", "trainer.toml"),
}
SUBST = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-?])([^}]*))?\}")
# Stands in for a required ${VAR:?message} value when the deploy configs are validated.
REQUIRED_STAND_IN = "set-in-env"


def _substitute(value: str) -> str:
    """Compose's interpolation: ${VAR:-default} gives the default, ${VAR:?message} a stand-in, ${VAR} empty."""
    return SUBST.sub(lambda m: REQUIRED_STAND_IN if m.group(2) == "?" else (m.group(3) or ""), value)


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def _k8s_containers() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name, doc in _k8s_docs():
        if doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            for container in doc["spec"]["template"]["spec"]["containers"]:
                out.append((f"{name}:{doc['metadata']['name']}/{container['name']}", container))
    return out


def _dockerfile_cmds() -> list[tuple[str, list[str]]]:
    out = []
    for path in sorted((DEPLOY / "docker").glob("*.Dockerfile")):
        cmd = [line for line in path.read_text().splitlines() if line.startswith("CMD ")]
        assert len(cmd) == 1, f"{path.name}: expected one CMD line"
        out.append((path.name, yaml.safe_load(cmd[0][4:])))
    return out


def _camfleet_commands() -> list[tuple[str, list[str]]]:
    """Every command line in the deploy files that starts a camfleet process."""
    found = []
    for name, service in _compose()["services"].items():
        if "command" in service and isinstance(service["command"], list) and "-m" in service["command"]:
            found.append((f"docker-compose.yml:{name}", service["command"]))
    found += [(where, c["command"]) for where, c in _k8s_containers() if "camfleet" in c.get("image", "")]
    found += _dockerfile_cmds()
    return found


def _env_blocks() -> list[tuple[str, dict[str, str]]]:
    """(where, {name: value}) for every camfleet process in compose and k8s; ${VAR:-default} → default."""
    blocks = []
    for name, service in _compose()["services"].items():
        env = service.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        blocks.append((f"docker-compose.yml:{name}", {k: _substitute(str(v)) for k, v in env.items()}))
    for where, container in _k8s_containers():
        env = {e["name"]: str(e.get("value", "from-secret")) for e in container.get("env", [])}
        blocks.append((where, env))
    return blocks


def _settings(module: str) -> type:
    dotted, cls = PROCESSES[module][2].split(":")
    config = pytest.importorskip(dotted, reason=f"{dotted} does not exist yet")
    return getattr(config, cls)


def test_every_compose_service_has_an_image_or_build() -> None:
    services = _compose()["services"]
    assert {"mosquitto", "s3", "postgres", "hub", "trainer", "agent"} <= set(services)
    for name, service in services.items():
        assert "image" in service or "build" in service, f"service {name} has neither image nor build"
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file(), f"{name}: {build} missing"


def _compose_text_values() -> list[tuple[str, str]]:
    """(service/key, raw value) of every environment entry in docker-compose.yml."""
    out = []
    for name, service in _compose()["services"].items():
        env = service.get("environment") or {}
        out += [(f"{name}/{key}", str(value)) for key, value in env.items()]
    return out


SECRET_NAME = re.compile(r"PASSWORD|SECRET|ACCESS_KEY", re.I)


def test_compose_has_no_default_passwords() -> None:
    """Every secret is ${VAR:?message}: compose refuses to start without it, never falls back to a default."""
    checked = 0
    for where, value in _compose_text_values():
        for match in SUBST.finditer(value):
            if SECRET_NAME.search(match.group(1)):
                assert match.group(2) == "?", f"{where}: ${{{match.group(1)}}} must be required (:?), not defaulted"
                checked += 1
        if SECRET_NAME.search(where.split("/")[1]) and "${" not in value:
            pytest.fail(f"{where}: a literal secret in docker-compose.yml")
    assert checked >= 8


def test_env_example_names_every_required_variable() -> None:
    required = {m.group(1) for _, v in _compose_text_values() for m in SUBST.finditer(v) if m.group(2) == "?"}
    example = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert required and required <= example, sorted(required - example)
    for line in (ROOT / ".env.example").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            assert line.split("=", 1)[1] == "", f".env.example ships a value: {line}"


def test_every_image_is_pinned_to_a_version() -> None:
    """No floating tags: ``latest`` or a bare major ("postgres:16") changes under a deployment."""
    images = [(f"docker-compose.yml:{n}", s["image"]) for n, s in _compose()["services"].items() if "image" in s]
    images += [(where, c["image"]) for where, c in _k8s_containers()]
    for path in sorted((DEPLOY / "docker").glob("*.Dockerfile")):
        images += [(path.name, line.split()[1]) for line in path.read_text().splitlines() if line.startswith("FROM ")]
    assert len(images) >= 10
    for where, image in images:
        name, _, tag = image.partition("@")[0].rpartition(":")
        assert name and tag and tag != "latest", f"{where}: {image} has no version tag"
        assert re.match(r"^\d+\.\d+", tag), f"{where}: {image} is not pinned to a version (major.minor at least)"
    assert all("minio/minio" not in image for _, image in images), "the minio/minio image is no longer published"


def test_compose_trainer_reserves_a_gpu() -> None:
    devices = _compose()["services"]["trainer"]["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] for d in devices)


def test_compose_mounts_exist() -> None:
    for name, service in _compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"service {name} mounts {source}, which does not exist"


def test_commands_found() -> None:
    where = [w for w, _ in _camfleet_commands()]
    assert len(where) >= 9, where  # 3 compose services, 3 k8s deployments, 3 Dockerfiles


@pytest.mark.parametrize(("where", "command"), [pytest.param(w, c, id=w) for w, c in _camfleet_commands()])
def test_command_names_a_real_module_and_subcommand(where: str, command: list[str]) -> None:
    assert command[:2] == ["python", "-m"], f"{where}: {command}"
    module, subcommand = command[2], command[3]
    assert module in PROCESSES, f"{where}: unknown module {module}"
    package_dir = ROOT / PROCESSES[module][0] / "src" / module
    assert (package_dir / "__main__.py").is_file(), f"{where}: {package_dir}/__main__.py does not exist"
    cli_source = "\n".join(p.read_text() for p in package_dir.rglob("*.py"))
    assert re.search(rf"""["']{subcommand}["']""", cli_source), f"{where}: no subcommand {subcommand!r} in {module}"
    if "--config" in command:
        config = Path(command[command.index("--config") + 1])
        assert (DEPLOY / "config" / config.name).is_file(), f"{where}: no deploy/config/{config.name}"


@pytest.mark.parametrize(
    "module,subcommand", [("camfleet_hub", "serve"), ("camfleet_agent", "run"), ("camfleet_trainer", "worker")]
)
def test_subcommand_help_runs(module: str, subcommand: str) -> None:
    pytest.importorskip(module, reason=f"{module} is not installed")
    done = subprocess.run(
        [sys.executable, "-m", module, subcommand, "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--config" in done.stdout


@pytest.mark.parametrize("module", sorted(PROCESSES))
def test_env_overrides_name_real_fields(module: str) -> None:
    settings = _settings(module)
    prefix = PROCESSES[module][1] + "__"
    checked = 0
    for where, env in _env_blocks():
        for name in env:
            if not name.startswith(prefix):
                continue
            model: Any = settings
            for part in name[len(prefix) :].lower().split("__"):
                assert model is not None and part in model.model_fields, f"{where}: {name} names no config field"
                annotation = model.model_fields[part].annotation
                model = annotation if isinstance(annotation, type) and hasattr(annotation, "model_fields") else None
            checked += 1
    assert checked > 0, f"no {prefix}* override found in the deploy files"


@pytest.mark.parametrize("module", sorted(PROCESSES))
def test_example_config_validates_with_every_env_block(module: str) -> None:
    settings = _settings(module)
    load_config = importlib.import_module("camfleet_contract.config").load_config
    path = DEPLOY / "config" / PROCESSES[module][3]
    load_config(settings, path, PROCESSES[module][1], environ={})
    for where, env in _env_blocks():
        if any(name.startswith(PROCESSES[module][1] + "__") for name in env):
            try:
                load_config(settings, path, PROCESSES[module][1], environ=env)
            except ValueError as exc:
                pytest.fail(f"{path.name} with the environment of {where}: {exc}")


def test_k8s_configmaps_match_deploy_files() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        generator = importlib.import_module("k8s_configmaps")
    finally:
        sys.path.pop(0)
    maps = {doc["metadata"]["name"]: doc["data"] for _, doc in _k8s_docs() if doc.get("kind") == "ConfigMap"}
    for name, files in generator.CONFIGMAPS.items():
        for file in files:
            assert maps[name][file.name] == file.read_text(), (
                f"deploy/k8s/config.yaml is stale for {file.name}: run python scripts/k8s_configmaps.py"
            )


def test_k8s_kustomization_lists_existing_files_and_trainer_gets_a_gpu() -> None:
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (DEPLOY / "k8s" / resource).is_file(), resource
    kinds = {(doc["kind"], doc["metadata"]["name"]) for _, doc in _k8s_docs() if "metadata" in doc}
    assert {("Deployment", "hub"), ("Service", "hub"), ("Deployment", "trainer"), ("Deployment", "mosquitto")} <= kinds
    trainer = dict(_k8s_containers())["trainer.yaml:trainer/trainer"]
    assert trainer["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_dockerfiles_copy_what_exists() -> None:
    for path in sorted((DEPLOY / "docker").glob("*.Dockerfile")):
        for line in path.read_text().splitlines():
            if line.startswith("COPY "):
                source = line.split()[1]
                assert (ROOT / source).exists(), f"{path.name}: COPY {source} does not exist"
        assert (path.parent / f"{path.name}.dockerignore").is_file(), f"{path.name} has no .dockerignore"


# --- MQTT credentials: the one-shot mqtt-users job feeds Mosquitto, and the agent logs in with what it issued ---

EXPORT_MOUNT = "/camfleet/mqtt"  # deploy/mosquitto/entrypoint.sh's default CAMFLEET_MQTT_EXPORT_DIR
MOSQUITTO_GID = 1883  # the mosquitto group of the eclipse-mosquitto image


def _hub_cli_steps(script: str) -> dict[str, Any]:
    """``python -m camfleet_hub mqtt ...`` steps of a ``sh -c`` script, parsed by the hub's own parser."""
    import shlex

    from camfleet_hub.__main__ import build_parser

    steps = {}
    for step in script.split("&&"):
        words = shlex.split(step)
        assert words[:3] == ["python", "-m", "camfleet_hub"], f"not a hub command: {step!r}"
        args = build_parser().parse_args(words[3:])
        steps[f"{args.command} {args.mqtt_command}"] = args
    return steps


def _agent_identity(env: dict[str, str]) -> tuple[str, str]:
    """(site, agent) of the sample agent: deploy/config/agent.toml, after the environment's overrides."""
    import tomllib

    config = tomllib.loads((DEPLOY / "config" / "agent.toml").read_text())
    return env.get("CAMFLEET_AGENT__SITE", config["site"]), env.get("CAMFLEET_AGENT__AGENT", config["agent"])


def test_compose_mqtt_users_issues_the_agents_login_and_exports_before_mosquitto() -> None:
    services = _compose()["services"]
    job, broker, agent = services["mqtt-users"], services["mosquitto"], services["agent"]
    assert job.get("restart") == "no"  # one-shot
    assert broker["depends_on"]["mqtt-users"] == {"condition": "service_completed_successfully"}
    assert job["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "mqtt-users" not in (services["hub"].get("depends_on") or {})  # the hub reaches the broker after it
    assert job["user"].split(":")[1] == str(MOSQUITTO_GID)
    assert job["entrypoint"] == ["/bin/sh", "-ec"]

    steps = _hub_cli_steps(job["command"][0])
    assert list(steps) == ["mqtt create", "mqtt export-mosquitto"]  # issued first, then exported
    create, export = steps["mqtt create"], steps["mqtt export-mosquitto"]
    assert str(export.out) == EXPORT_MOUNT and export.file_mode == 0o640
    assert create.password_env and not create.password_stdin
    assert create.create_site  # a fresh database has no site yet: the broker must not wait for one
    # the password reaches the job and the agent from the same required .env variable
    job_password, agent_password = job["environment"][create.password_env], agent["environment"]
    assert SUBST.fullmatch(job_password) and SUBST.fullmatch(job_password).group(2) == "?"  # type: ignore[union-attr]
    assert agent_password["CAMFLEET_AGENT__MQTT__PASSWORD"] == job_password
    # the agent logs in as agent/{site}/{agent} with the names it runs under (the broker binds topics to them)
    site, name = _agent_identity({k: _substitute(str(v)) for k, v in agent["environment"].items()})
    assert (create.site, create.agent) == (site, name)
    assert agent["environment"]["CAMFLEET_AGENT__MQTT__USERNAME"] == f"agent/{site}/{name}"

    assert f"mqtt-export:{EXPORT_MOUNT}" in job["volumes"]  # written by the job ...
    assert f"mqtt-export:{EXPORT_MOUNT}:ro" in broker["volumes"]  # ... read by the broker only
    assert "mqtt-export" in _compose()["volumes"]
    # a fresh volume takes the image's folder: owned by the hub's user, readable by the mosquitto group
    dockerfile = (DEPLOY / "docker" / "hub.Dockerfile").read_text()
    assert f"install -d -o 10001 -g {MOSQUITTO_GID} -m 0750 {EXPORT_MOUNT}" in dockerfile


def test_env_example_lists_no_stale_mqtt_passwords() -> None:
    names = {line.split("=", 1)[0] for line in (ROOT / ".env.example").read_text().splitlines() if "=" in line}
    assert "CAMFLEET_AGENT_MQTT_PASSWORD" in names
    assert not {"CAMFLEET_MQTT_OBSERVER_PASSWORD", "CAMFLEET_MQTT_PLAZA_PASSWORD"} & names
    compose = (ROOT / "docker-compose.yml").read_text()
    assert "PLAZA_PASSWORD" not in compose and "OBSERVER_PASSWORD" not in compose


def test_k8s_mosquitto_init_container_issues_the_agents_login() -> None:
    workloads = {
        doc["metadata"]["name"]: doc for _, doc in _k8s_docs() if doc.get("kind") in ("Deployment", "DaemonSet")
    }
    pod = workloads["mosquitto"]["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["image"].startswith("camfleet/hub:")
    assert init["securityContext"]["runAsGroup"] == MOSQUITTO_GID and init["securityContext"]["runAsNonRoot"]
    steps = _hub_cli_steps(init["command"][2])
    assert init["command"][:2] == ["/bin/sh", "-ec"] and list(steps) == ["mqtt create", "mqtt export-mosquitto"]
    create, export = steps["mqtt create"], steps["mqtt export-mosquitto"]
    assert str(export.out) == EXPORT_MOUNT and export.file_mode == 0o640
    init_env = {e["name"]: e for e in init["env"]}
    secret_key = init_env[create.password_env]["valueFrom"]["secretKeyRef"]["key"]

    broker = pod["containers"][0]
    assert {"name": "mqtt-export", "mountPath": EXPORT_MOUNT} in init["volumeMounts"]
    assert {"name": "mqtt-export", "mountPath": EXPORT_MOUNT, "readOnly": True} in broker["volumeMounts"]
    assert "emptyDir" in {v["name"]: v for v in pod["volumes"]}["mqtt-export"]

    agent = workloads["agent-plaza"]["spec"]["template"]["spec"]["containers"][0]
    agent_env = {e["name"]: e for e in agent["env"]}
    site, name = _agent_identity({k: str(v.get("value", "")) for k, v in agent_env.items()})
    assert (create.site, create.agent) == (site, name)
    assert agent_env["CAMFLEET_AGENT__MQTT__USERNAME"]["value"] == f"agent/{site}/{name}"
    assert agent_env["CAMFLEET_AGENT__MQTT__PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == secret_key
    example = yaml.safe_load((DEPLOY / "k8s" / "secret.example.yaml").read_text())["stringData"]
    assert secret_key in example and "mqtt-plaza-password" not in example


def _watch_args(command: list[str]) -> Any:
    from camfleet_hub.__main__ import build_parser

    assert command[:3] == ["python", "-m", "camfleet_hub"]
    return build_parser().parse_args(command[3:])


def test_mqtt_watch_keeps_mosquittos_export_current_in_compose_and_k8s() -> None:
    """Credentials and camera owners reach Mosquitto without anyone re-running the export: a long-running
    ``export-mosquitto --watch`` writes into the folder the broker's entrypoint watches."""
    services = _compose()["services"]
    watch, job = services["mqtt-watch"], services["mqtt-users"]
    args = _watch_args(watch["command"])
    assert args.watch and str(args.out) == EXPORT_MOUNT and args.file_mode == 0o640
    assert watch["restart"] == "unless-stopped" and watch["user"] == job["user"]
    assert f"mqtt-export:{EXPORT_MOUNT}" in watch["volumes"]
    assert watch["depends_on"]["mqtt-users"] == {"condition": "service_completed_successfully"}
    for key in ("CAMFLEET_HUB__DB__URL", "CAMFLEET_HUB__MQTT__USERNAME", "CAMFLEET_HUB__MQTT__PASSWORD"):
        assert watch["environment"][key] == job["environment"][key]

    workloads = {doc["metadata"]["name"]: doc for _, doc in _k8s_docs() if doc.get("kind") == "Deployment"}
    pod = workloads["mosquitto"]["spec"]["template"]["spec"]
    sidecar = {c["name"]: c for c in pod["containers"]}["mqtt-watch"]
    args = _watch_args(sidecar["command"])
    assert args.watch and str(args.out) == EXPORT_MOUNT and args.file_mode == 0o640
    assert {"name": "mqtt-export", "mountPath": EXPORT_MOUNT} in sidecar["volumeMounts"]
    assert sidecar["securityContext"] == pod["initContainers"][0]["securityContext"]
    init_env = {e["name"]: e for e in pod["initContainers"][0]["env"]}
    for entry in sidecar["env"]:
        assert init_env[entry["name"]] == entry
