"""Offline contract checks for the deployment files.

docker-compose.yml is validated against the Compose Specification schema (check-jsonschema's
vendored copy) plus structural rules; the Kustomize overlays are rendered by the small
renderer in tests/support/kustomize.py and every document is validated against the
Kubernetes OpenAPI schemas bundled with kubernetes-validate (strict: unknown fields fail).
No Docker engine, cluster or kustomize binary is needed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support.kustomize import (
    KustomizeError,
    render,
    split_image,
    strategic_merge,
)

ROOT = Path(__file__).resolve().parents[2]

COMPOSE_FILE = ROOT / "docker-compose.yml"
OTEL_CONFIG = ROOT / "deploy" / "otel-collector.yaml"
DOCKERFILE = ROOT / "services" / "incidents" / "Dockerfile"
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATIONS = ["base", "overlays/dev", "overlays/prod"]
K8S_VERSION = "1.31"

SECRET_KEY = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|CREDENTIAL", re.IGNORECASE)
# `${VAR}` or `${VAR:?message}` / `${VAR?message}`; a `:-default` would embed a literal.
ENV_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:?\?[^}]*)?\}$")
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet"}
CLUSTER_SCOPED = {"Namespace"}

Doc = dict[str, Any]


# --------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose() -> Doc:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def _environment(service: Doc) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.partition("=") for item in env)
        return {key: (value if sep else None) for key, sep, value in pairs}
    return {key: None if value is None else str(value) for key, value in env.items()}


def test_compose_file_matches_the_compose_spec() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE_FILE),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"check-jsonschema failed:\n{result.stdout}\n{result.stderr}"


def test_depends_on_waits_for_healthy_dependencies(compose: Doc) -> None:
    services = compose["services"]
    problems = []
    for name, service in services.items():
        depends_on = service.get("depends_on")
        if depends_on is None:
            continue
        if not isinstance(depends_on, dict):
            problems.append(f"{name}: short-form depends_on only waits for the container start")
            continue
        for dependency, options in depends_on.items():
            if (options or {}).get("condition") != "service_healthy":
                problems.append(f"{name} -> {dependency}: condition is not service_healthy")
            if "healthcheck" not in services.get(dependency, {}):
                problems.append(f"{name} -> {dependency}: dependency has no healthcheck")
    assert not problems, "\n".join(problems)


def test_every_platform_service_has_a_healthcheck(compose: Doc) -> None:
    platform = {name: s for name, s in compose["services"].items() if "build" in s}
    assert "incidents" in platform
    problems = []
    for name, service in platform.items():
        check = service.get("healthcheck") or {}
        if check.get("disable") or not check.get("test") or check["test"] == ["NONE"]:
            problems.append(f"{name}: no healthcheck")
        if service.get("restart") != "unless-stopped":
            problems.append(f"{name}: restart policy is not unless-stopped")
    assert not problems, "\n".join(problems)


def test_compose_has_no_literal_secrets(compose: Doc) -> None:
    problems = []
    for name, service in compose["services"].items():
        build = service.get("build")
        args = build.get("args", {}) if isinstance(build, dict) else {}
        candidates = {**_environment(service), **_environment({"environment": args})}
        for key, value in candidates.items():
            if SECRET_KEY.search(key) and value is not None and not ENV_REFERENCE.match(value):
                problems.append(f"{name}: {key} is a literal, not a ${{VAR}} reference")
    assert not problems, "\n".join(problems)


def test_compose_images_are_pinned(compose: Doc) -> None:
    problems = []
    for name, service in compose["services"].items():
        image = service.get("image")
        if image is None:
            problems.append(f"{name}: no image")
            continue
        _, tag, digest = split_image(image)
        if not digest and (tag is None or tag == "latest"):
            problems.append(f"{name}: image {image} is not pinned")
    assert not problems, "\n".join(problems)


def test_compose_endpoints_are_consistent(compose: Doc) -> None:
    services = compose["services"]
    incidents = _environment(services["incidents"])
    kafka = _environment(services["kafka"])
    advertised = kafka["KAFKA_ADVERTISED_LISTENERS"] or ""
    assert f"PLAINTEXT://{incidents['ITSM_INCIDENTS_KAFKA_BOOTSTRAP']}" in advertised
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"

    mongo_command = services["mongodb"]["command"]
    replica_set = mongo_command[mongo_command.index("--replSet") + 1]
    assert f"replicaSet={replica_set}" in (incidents["ITSM_INCIDENTS_MONGO_URL"] or "")
    mongo_check = " ".join(services["mongodb"]["healthcheck"]["test"])
    assert f"_id: '{replica_set}'" in mongo_check
    assert "host: 'mongodb:27017'" in mongo_check

    assert incidents["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    assert _environment(services["jaeger"])["COLLECTOR_OTLP_ENABLED"] == "true"


def test_compose_bind_mounts_exist(compose: Doc) -> None:
    missing = []
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source")
            if source.startswith((".", "/")) and not (ROOT / source).exists():
                missing.append(f"{name}: {source}")
    assert not missing, missing


def test_otel_collector_pipelines_use_defined_components() -> None:
    config = yaml.safe_load(OTEL_CONFIG.read_text())
    problems = []
    for pipeline_name, pipeline in config["service"]["pipelines"].items():
        for section in ("receivers", "processors", "exporters"):
            for component in pipeline.get(section, []):
                if component not in (config.get(section) or {}):
                    problems.append(f"{pipeline_name}: {section[:-1]} {component} not defined")
    assert not problems, "\n".join(problems)
    assert config["exporters"]["otlp/jaeger"]["endpoint"] == "jaeger:4317"
    assert config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert "otlp/jaeger" in config["service"]["pipelines"]["traces"]["exporters"]


def test_incidents_dockerfile_is_multi_stage_and_non_root() -> None:
    text = DOCKERFILE.read_text()
    assert len(re.findall(r"^FROM python:3\.11-slim", text, re.MULTILINE)) == 2
    assert re.search(r"^USER 10001$", text, re.MULTILINE)
    assert re.search(r"^EXPOSE 8000$", text, re.MULTILINE)
    assert re.search(r"^HEALTHCHECK .*\n?.*/livez", text, re.MULTILINE)
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    for needed in ("pyproject.toml", "README.md", "shared", "services"):
        assert needed not in ignored, f".dockerignore excludes {needed}, which the build copies"


# --------------------------------------------------------------------------- kustomize


@pytest.fixture(scope="module", params=KUSTOMIZATIONS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Doc]]:
    return request.param, render(K8S / request.param)


def _by_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc["kind"] == kind]


def _pod_labels(docs: list[Doc]) -> list[dict[str, str]]:
    return [
        doc["spec"]["template"]["metadata"].get("labels", {})
        for doc in docs
        if doc["kind"] in WORKLOAD_KINDS
    ]


def _selects(selector: dict[str, str], docs: list[Doc]) -> bool:
    return bool(selector) and any(
        selector.items() <= labels.items() for labels in _pod_labels(docs)
    )


def test_kubernetes_validate_bundles_the_pinned_version() -> None:
    assert K8S_VERSION in {
        ".".join(v.split(".")[:2]) for v in kubernetes_validate.utils.all_versions()
    }
    bogus = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "bogus": 1}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bogus, K8S_VERSION, strict=True)


def test_rendered_manifests_pass_kubernetes_validate(rendered: tuple[str, list[Doc]]) -> None:
    name, docs = rendered
    assert docs, f"{name} rendered nothing"
    problems = []
    for doc in docs:
        ident = f"{name}: {doc['kind']}/{doc['metadata']['name']}"
        try:
            used = kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(part) for part in exc.path)
            problems.append(f"{ident}: {where}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{ident}: {exc.message}")
        else:
            assert used == K8S_VERSION
    assert not problems, "\n".join(problems)


def test_workloads_have_probes_resources_and_run_as_non_root(
    rendered: tuple[str, list[Doc]],
) -> None:
    name, docs = rendered
    assert _by_kind(docs, "Deployment"), f"{name}: no Deployment"
    problems = []
    for doc in docs:
        if doc["kind"] not in WORKLOAD_KINDS:
            continue
        pod = doc["spec"]["template"]["spec"]
        pod_non_root = (pod.get("securityContext") or {}).get("runAsNonRoot")
        for container in pod["containers"]:
            ident = f"{name}: {doc['kind']}/{doc['metadata']['name']}/{container['name']}"
            for probe in ("livenessProbe", "readinessProbe"):
                if probe not in container:
                    problems.append(f"{ident}: no {probe}")
            resources = container.get("resources") or {}
            if not resources.get("requests") or not resources.get("limits", {}).get("memory"):
                problems.append(f"{ident}: needs resource requests and a memory limit")
            context = container.get("securityContext") or {}
            if context.get("runAsNonRoot", pod_non_root) is not True:
                problems.append(f"{ident}: runAsNonRoot is not true")
            if "ALL" not in (context.get("capabilities") or {}).get("drop", []):
                problems.append(f"{ident}: capabilities are not dropped")
            if context.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{ident}: allowPrivilegeEscalation is not false")
            _, tag, digest = split_image(container["image"])
            # The base leaves the incidents tag to the overlays.
            if name != "base" and not digest and tag in (None, "latest"):
                problems.append(f"{ident}: image {container['image']} is not pinned")
    assert not problems, "\n".join(problems)


def test_incidents_is_hardened(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    (deployment,) = [
        d for d in _by_kind(docs, "Deployment") if d["metadata"]["name"] == "incidents"
    ]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env_from = container["envFrom"]
    assert {"configMapRef": {"name": "itsm-config"}} in env_from
    assert {"secretRef": {"name": "itsm-secrets"}} in env_from


def test_references_resolve_and_no_secret_is_committed(rendered: tuple[str, list[Doc]]) -> None:
    name, docs = rendered
    assert not _by_kind(docs, "Secret"), f"{name}: Secrets are created out of band"
    config_maps = {doc["metadata"]["name"] for doc in _by_kind(docs, "ConfigMap")}
    workloads = {(d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"] in WORKLOAD_KINDS}
    problems = []
    for (kind, workload_name), doc in workloads.items():
        for container in doc["spec"]["template"]["spec"]["containers"]:
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef")
                if ref and ref["name"] not in config_maps:
                    problems.append(f"{kind}/{workload_name}: ConfigMap {ref['name']} missing")
    for doc in _by_kind(docs, "Service"):
        if not _selects(doc["spec"].get("selector", {}), docs):
            problems.append(f"Service/{doc['metadata']['name']} selects no pods")
    for doc in _by_kind(docs, "PodDisruptionBudget") + _by_kind(docs, "NetworkPolicy"):
        selector = doc["spec"].get("selector") or doc["spec"].get("podSelector") or {}
        if not _selects(selector.get("matchLabels", {}), docs):
            problems.append(f"{doc['kind']}/{doc['metadata']['name']} selects no pods")
    for doc in _by_kind(docs, "HorizontalPodAutoscaler"):
        target = doc["spec"]["scaleTargetRef"]
        if (target["kind"], target["name"]) not in workloads:
            problems.append(f"HPA/{doc['metadata']['name']}: target {target} missing")
    for doc in docs:
        namespace = doc["metadata"].get("namespace")
        if doc["kind"] not in CLUSTER_SCOPED and namespace != "itsm":
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: namespace {namespace}")
    assert not problems, "\n".join(problems)


def test_disruption_budgets_leave_room_to_evict(rendered: tuple[str, list[Doc]]) -> None:
    name, docs = rendered
    (pdb,) = _by_kind(docs, "PodDisruptionBudget")
    (hpa,) = _by_kind(docs, "HorizontalPodAutoscaler")
    (deployment,) = _by_kind(docs, "Deployment")
    min_available = pdb["spec"].get("minAvailable")
    if isinstance(min_available, int):
        smallest = min(deployment["spec"]["replicas"], hpa["spec"]["minReplicas"])
        assert smallest > min_available, f"{name}: the PDB would block every drain"
    metric = hpa["spec"]["metrics"][0]["resource"]
    assert metric["name"] == "cpu"
    assert metric["target"] == {"type": "Utilization", "averageUtilization": 70}


def test_incidents_network_policy(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    (policy,) = _by_kind(docs, "NetworkPolicy")
    spec = policy["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    ingress_ports = {p["port"] for rule in spec["ingress"] for p in rule.get("ports", [])}
    egress_ports = {p["port"] for rule in spec["egress"] for p in rule.get("ports", [])}
    assert ingress_ports == {8000}
    assert egress_ports == {9092, 27017, 53, 4318}


def test_dev_overlay_runs_kafka_and_mongodb_in_cluster() -> None:
    docs = render(K8S / "overlays" / "dev")
    (deployment,) = _by_kind(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    images = {
        doc["metadata"]["name"]: doc["spec"]["template"]["spec"]["containers"][0]["image"]
        for doc in _by_kind(docs, "StatefulSet")
    }
    assert images == {"kafka": "apache/kafka:4.4.0", "mongodb": "mongo:8.0"}
    services = {doc["metadata"]["name"] for doc in _by_kind(docs, "Service")}
    assert {"kafka", "mongodb", "incidents"} <= services
    (config,) = _by_kind(docs, "ConfigMap")
    assert config["data"]["ITSM_INCIDENTS_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert "replicaSet=rs0" in config["data"]["ITSM_INCIDENTS_MONGO_URL"]


def test_prod_overlay_pins_images_and_keeps_stateful_services_external() -> None:
    docs = render(K8S / "overlays" / "prod")
    assert not _by_kind(docs, "StatefulSet"), "Kafka/MongoDB are external in prod"
    for doc in _by_kind(docs, "Deployment"):
        for container in doc["spec"]["template"]["spec"]["containers"]:
            image, tag, _ = split_image(container["image"])
            assert "/" in image, f"{container['image']} has no registry"
            assert tag and re.fullmatch(r"\d+\.\d+\.\d+", tag), f"{container['image']} not pinned"


# --------------------------------------------------------------------------- renderer


def test_renderer_strategic_merge_semantics() -> None:
    target = {
        "spec": {
            "replicas": 2,
            "minAvailable": 1,
            "containers": [{"name": "a", "image": "x:1", "env": [{"name": "A", "value": "1"}]}],
            "args": ["--one"],
        }
    }
    patch = {
        "spec": {
            "minAvailable": None,
            "containers": [
                {"name": "a", "env": [{"name": "B", "value": "2"}]},
                {"name": "b", "image": "y:1"},
            ],
            "args": ["--two"],
        }
    }
    merged = strategic_merge(target, patch)["spec"]
    assert "minAvailable" not in merged
    assert merged["replicas"] == 2
    assert [c["name"] for c in merged["containers"]] == ["a", "b"]
    assert merged["containers"][0]["image"] == "x:1"
    assert [e["name"] for e in merged["containers"][0]["env"]] == ["A", "B"]
    assert merged["args"] == ["--two"]


def test_renderer_rejects_what_it_does_not_understand(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("configMapGenerator: []\n")
    with pytest.raises(KustomizeError, match="unsupported"):
        render(tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [cm.yaml]\npatches:\n  - patch: |-\n"
        "      kind: ConfigMap\n      metadata: {name: other}\n"
    )
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n")
    with pytest.raises(KustomizeError, match="matches 0"):
        render(tmp_path)


def test_renderer_images_namespace_and_labels(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        "namespace: ns\ncommonLabels: {team: x}\nresources: [d.yaml]\n"
        "images: [{name: reg.io/app, newName: other.io/app, newTag: '2'}]\n"
    )
    (tmp_path / "d.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n"
        "  selector: {matchLabels: {app: d}}\n"
        "  template:\n    metadata: {labels: {app: d}}\n"
        "    spec: {containers: [{name: c, image: 'reg.io/app:1'}]}\n"
    )
    (doc,) = render(tmp_path)
    assert doc["metadata"]["namespace"] == "ns"
    assert doc["spec"]["selector"]["matchLabels"] == {"app": "d", "team": "x"}
    assert doc["spec"]["template"]["spec"]["containers"][0]["image"] == "other.io/app:2"
    assert split_image("localhost:5000/a/b:1.2@sha256:ab") == (
        "localhost:5000/a/b",
        "1.2",
        "sha256:ab",
    )
