"""Offline contract checks for the deployment files.

docker-compose.yml is validated against the Compose Specification schema (check-jsonschema's
vendored copy) plus structural rules; the Kustomize overlays are rendered by the small
renderer in tests/support/kustomize.py and every document is validated against the
Kubernetes OpenAPI schemas bundled with kubernetes-validate (strict: unknown fields fail).
Both must describe every platform service; the commands they run must exist in the code, and
the Ingress (and compose's gateway) must route every API path to the service that serves it.
No Docker engine, cluster or kustomize binary is needed.
"""

from __future__ import annotations

import importlib
import importlib.util
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
GATEWAY_CONFIG = ROOT / "deploy" / "gateway.nginx.conf"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus.yml"
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATIONS = ["base", "overlays/dev", "overlays/prod"]
K8S_VERSION = "1.31"

# Platform workload -> (the service package whose Dockerfile builds its image, kind in k8s).
PLATFORM = {
    "incidents": ("incidents", "Deployment"),
    "changes": ("changes", "Deployment"),
    "sla-api": ("sla", "Deployment"),
    "sla-worker": ("sla", "StatefulSet"),
    "notify": ("notify", "Deployment"),
    "console": ("console", "Deployment"),
}
# The web console is served behind the same routing but has no /api/v1 routes of its own.
CONSOLE = "console"
CONSOLE_PATH = "/console"
APIS = [name for name, (_, kind) in PLATFORM.items() if kind == "Deployment" and name != CONSOLE]
SLA_WORKER_MODULE = "services.sla.processor.worker"
SLA_DATA_DIR = "/var/lib/itsm-sla"

SECRET_KEY = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|CREDENTIAL", re.IGNORECASE)
# `${VAR}` or `${VAR:?message}` / `${VAR?message}`; a `:-default` would embed a literal.
ENV_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:?\?[^}]*)?\}$")
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet"}
# Custom resources kubernetes-validate has no schema for: Strimzi's KafkaUser and KafkaTopic
# (prod), checked against their own schema and the platform's access table in
# tests/contract/test_kafka_access.py.
CUSTOM_API_GROUPS = ("kafka.strimzi.io/",)
CLUSTER_SCOPED = {"Namespace"}

Doc = dict[str, Any]


def _api_prefixes(package: str) -> set[str]:
    """The `/api/v1/<resource>` prefixes of every route the service serves."""
    module = importlib.import_module(f"services.{package}.main")
    paths = {route.path for router in module.routers for route in router.routes}
    # Each service's audit log is `/api/v1/audit/<service>`: routed one by one.
    prefixes = {
        "/".join(path.split("/")[: 5 if path.startswith("/api/v1/audit/") else 4]) for path in paths
    }
    assert prefixes and all(p.startswith("/api/v1/") for p in prefixes), prefixes
    return prefixes


@pytest.fixture(scope="module")
def api_prefixes() -> dict[str, set[str]]:
    return {name: _api_prefixes(PLATFORM[name][0]) for name in APIS}


def _check_entry_point(command: list[str]) -> None:
    """`python -m <module> …` or `uvicorn <module>:<factory> …` names code that exists."""
    if command[:2] == ["python", "-m"]:
        assert importlib.util.find_spec(command[2]) is not None, command
    elif command[0] == "uvicorn":
        module, _, attribute = command[1].partition(":")
        assert callable(getattr(importlib.import_module(module), attribute)), command
    else:
        raise AssertionError(f"unexpected entry point {command}")


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


def _platform_services(compose: Doc) -> dict[str, Doc]:
    return {name: s for name, s in compose["services"].items() if "build" in s}


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


def test_compose_runs_every_platform_service(compose: Doc) -> None:
    platform = _platform_services(compose)
    assert set(platform) == set(PLATFORM)
    for name, service in platform.items():
        package = PLATFORM[name][0]
        assert service["build"]["dockerfile"] == f"services/{package}/Dockerfile", name
        assert service["image"] == f"itsm-{package}:dev", name
        assert _environment(service)["OTEL_SERVICE_NAME"] == f"itsm-{name}", name
        dockerfile = (ROOT / service["build"]["dockerfile"]).read_text()
        _check_entry_point(service.get("command") or _dockerfile_cmd(dockerfile))


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
    for name in PLATFORM:
        if "kafka" not in services[name].get("depends_on", {}):
            problems.append(f"{name}: does not wait for Kafka")
    assert not problems, "\n".join(problems)


def test_every_platform_service_has_a_healthcheck_and_is_hardened(compose: Doc) -> None:
    problems = []
    for name, service in _platform_services(compose).items():
        check = service.get("healthcheck") or {}
        if check.get("disable") or not check.get("test") or check["test"] == ["NONE"]:
            problems.append(f"{name}: no healthcheck")
        if service.get("restart") != "unless-stopped":
            problems.append(f"{name}: restart policy is not unless-stopped")
        if service.get("read_only") is not True or "user" in service:
            problems.append(f"{name}: not read-only, or not the image's non-root user")
        if service.get("cap_drop") != ["ALL"]:
            problems.append(f"{name}: capabilities are not dropped")
        if "no-new-privileges:true" not in service.get("security_opt", []):
            problems.append(f"{name}: no-new-privileges is not set")
    assert not problems, "\n".join(problems)


def test_compose_api_healthchecks_ask_readyz(compose: Doc) -> None:
    for name in APIS:
        service = compose["services"][name]
        assert "http://127.0.0.1:8000/readyz" in " ".join(service["healthcheck"]["test"]), name
        assert service["ports"] and service["ports"][0].endswith(":8000"), name


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
    kafka = _environment(services["kafka"])
    advertised = kafka["KAFKA_ADVERTISED_LISTENERS"] or ""
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    mongo_command = services["mongodb"]["command"]
    replica_set = mongo_command[mongo_command.index("--replSet") + 1]
    mongo_check = " ".join(services["mongodb"]["healthcheck"]["test"])
    assert f"_id: '{replica_set}'" in mongo_check
    assert "host: 'mongodb:27017'" in mongo_check
    assert _environment(services["jaeger"])["COLLECTOR_OTLP_ENABLED"] == "true"

    for name in PLATFORM:
        env = _environment(services[name])
        assert f"PLAINTEXT://{env['ITSM_KAFKA_BOOTSTRAP']}" in advertised, name
        assert f"replicaSet={replica_set}" in (env["ITSM_MONGO_URL"] or ""), name
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318", name
        assert env["ITSM_AUTH_MODE"] == "dev", name
        assert env["ITSM_DEV_SIGNING_KEY"] == "${ITSM_DEV_SIGNING_KEY:?set ITSM_DEV_SIGNING_KEY}"
        # Links in notify's messages go through the gateway, which routes like the Ingress.
        gateway_port = services["gateway"]["ports"][0].split(":")[0]
        assert env["ITSM_PUBLIC_BASE_URL"] == f"http://localhost:{gateway_port}", name


def test_compose_sla_worker_runs_faust_on_rocksdb_with_a_volume(compose: Doc) -> None:
    worker = compose["services"]["sla-worker"]
    env = _environment(worker)
    command = worker["command"]
    assert command[:4] == ["python", "-m", SLA_WORKER_MODULE, "worker"]
    assert "--web-bind=127.0.0.1" in command  # Faust's web (tables!) never leaves the container
    assert env["ITSM_SLA_STORE"] == "rocksdb://"
    assert env["ITSM_SLA_DATA_DIR"] == SLA_DATA_DIR
    assert env["ITSM_SLA_WEB_ENABLED"] == "true"
    assert _named_volume(worker, SLA_DATA_DIR) in compose["volumes"]
    check = " ".join(worker["healthcheck"]["test"])
    assert f"http://127.0.0.1:{env['ITSM_SLA_WEB_PORT']}/" in check
    assert "ports" not in worker  # metrics reach Prometheus inside the compose network
    assert env["ITSM_SLA_METRICS_PORT"] != env["ITSM_SLA_WEB_PORT"]
    sla_api = compose["services"]["sla-api"]
    assert worker["image"] == sla_api["image"] and worker["build"] == sla_api["build"]


def _named_volume(service: Doc, target: str) -> str:
    for volume in service.get("volumes", []):
        source, _, rest = str(volume).partition(":")
        if rest.split(":")[0] == target:
            assert not source.startswith((".", "/")), f"{target} is a bind mount"
            return source
    raise AssertionError(f"nothing mounted at {target}")


def test_compose_notify_mails_to_mailpit(compose: Doc) -> None:
    services = compose["services"]
    notify = services["notify"]
    env = _environment(notify)
    assert env["ITSM_NOTIFY_SMTP_HOST"] == "mailpit"
    assert env["ITSM_NOTIFY_SMTP_PORT"] == "1025"  # Mailpit's SMTP port
    assert env["ITSM_NOTIFY_SMTP_SECURITY"] == "plain"
    assert ENV_REFERENCE.match(env["ITSM_NOTIFY_ACK_LINK_KEY"] or "")
    assert notify["depends_on"]["mailpit"] == {"condition": "service_healthy"}
    assert services["mailpit"]["image"].startswith("axllent/mailpit:")


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


def test_prometheus_scrapes_every_platform_service(compose: Doc) -> None:
    """One job per service (the `job` label the dashboard filters on), the APIs on their HTTP
    port and the SLA worker on its metrics port."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {
        job["job_name"]: {t for group in job["static_configs"] for t in group["targets"]}
        for job in config["scrape_configs"]
    }
    worker_port = _environment(compose["services"]["sla-worker"])["ITSM_SLA_METRICS_PORT"]
    expected = {name: {f"{name}:8000"} for name in [*APIS, CONSOLE]} | {
        "sla-worker": {f"sla-worker:{worker_port}"}
    }
    assert {name: jobs.get(name) for name in PLATFORM} == expected
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics"
        # A target label must not collide with a metric label (`service` on HTTP metrics).
        assert all("labels" not in group for group in job["static_configs"]), job["job_name"]
    for target in set().union(*jobs.values()):
        assert target.split(":")[0] in compose["services"], target


def test_compose_grafana_provisions_the_dashboard_on_prometheus(compose: Doc) -> None:
    grafana = compose["services"]["grafana"]
    mounts = {
        source: target for source, target, *_ in (str(v).split(":") for v in grafana["volumes"])
    }
    assert mounts["./deploy/grafana/itsm-platform.json"].endswith("/itsm-platform.json")
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert datasource["type"] == "prometheus"
    prometheus_port = compose["services"]["prometheus"]["ports"][0].split(":")[-1]
    assert datasource["url"] == f"http://prometheus:{prometheus_port}"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "itsm.yml").read_text())[
        "providers"
    ]
    dashboard_dir = mounts["./deploy/grafana/itsm-platform.json"].rsplit("/", 1)[0]
    assert provider["options"]["path"] == dashboard_dir
    assert grafana["depends_on"] == {"prometheus": {"condition": "service_healthy"}}


def _gateway_routes() -> dict[str, str]:
    text = GATEWAY_CONFIG.read_text()
    upstreams = dict(re.findall(r"upstream ([\w-]+) \{ server ([\w-]+):8000; \}", text))
    routes = re.findall(r"location (/api/\S+|/console) \{ proxy_pass http://([\w-]+); \}", text)
    return {path: upstreams[upstream] for path, upstream in routes}


def test_compose_gateway_routes_like_the_ingress(
    compose: Doc, api_prefixes: dict[str, set[str]]
) -> None:
    routes = _gateway_routes()
    assert routes == _ingress_routes(render(K8S / "base"))
    expected = {prefix: name for name, prefixes in api_prefixes.items() for prefix in prefixes}
    assert routes == expected | {CONSOLE_PATH: CONSOLE}
    gateway = compose["services"]["gateway"]
    assert set(gateway["depends_on"]) == {*APIS, CONSOLE}
    assert "/healthz" in " ".join(gateway["healthcheck"]["test"])


# --------------------------------------------------------------------------- Dockerfiles


def _dockerfile_cmd(text: str) -> list[str]:
    (cmd,) = re.findall(r"^CMD (\[.*?\])$", text.replace("\\\n", ""), re.MULTILINE | re.DOTALL)
    command = yaml.safe_load(cmd)
    assert isinstance(command, list)
    return command


@pytest.mark.parametrize("package", sorted({package for package, _ in PLATFORM.values()}))
def test_dockerfiles_are_slim_multi_stage_non_root(package: str) -> None:
    text = (ROOT / "services" / package / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM python:3\.11-slim", text, re.MULTILINE)) == 2
    assert re.search(r"^USER 10001$", text, re.MULTILINE)
    assert re.search(r"^EXPOSE 8000$", text, re.MULTILINE)
    assert re.search(r"^HEALTHCHECK .*\n?.*/livez", text, re.MULTILINE)
    assert "--no-cache-dir" in text
    command = _dockerfile_cmd(text)
    assert command[:4] == ["uvicorn", f"services.{package}.main:create_app", "--factory", "--host"]
    _check_entry_point(command)
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    for needed in ("pyproject.toml", "README.md", "shared", "services"):
        assert needed not in ignored, f".dockerignore excludes {needed}, which the build copies"


def test_sla_image_prepares_the_worker_data_dir() -> None:
    text = (ROOT / "services" / "sla" / "Dockerfile").read_text()
    assert f"install -d -o 10001 -g 10001 -m 0750 {SLA_DATA_DIR}" in text
    assert f"python -m {SLA_WORKER_MODULE} worker" in text  # documented beside the API's CMD


# --------------------------------------------------------------------------- kustomize


@pytest.fixture(scope="module", params=KUSTOMIZATIONS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Doc]]:
    return request.param, render(K8S / request.param)


def _by_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc["kind"] == kind]


def _one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind}/{name}"
    return found[0]


def _container(workload: Doc) -> Doc:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def _env(container: Doc) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", [])}


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


def _ports(rules: list[Doc]) -> set[int]:
    return {port["port"] for rule in rules for port in rule.get("ports", [])}


def _ingress_routes(docs: list[Doc]) -> dict[str, str]:
    (ingress,) = _by_kind(docs, "Ingress")
    routes = {}
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            assert path["pathType"] == "Prefix"
            assert path["path"] not in routes, f"{path['path']} routed twice"
            routes[path["path"]] = path["backend"]["service"]["name"]
    return routes


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
        if doc["apiVersion"].startswith(CUSTOM_API_GROUPS):
            continue
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


def test_every_platform_service_is_deployed(rendered: tuple[str, list[Doc]]) -> None:
    name, docs = rendered
    for workload_name, (package, kind) in PLATFORM.items():
        workload = _one(docs, kind, workload_name)
        container = _container(workload)
        image, _, _ = split_image(container["image"])
        assert image.rsplit("/", 1)[-1] == f"itsm-{package}", f"{name}: {container['image']}"
        assert _env(container)["OTEL_SERVICE_NAME"] == f"itsm-{workload_name}"
        _check_entry_point(
            container.get("command") or ["uvicorn", f"services.{package}.main:create_app"]
        )
        _one(docs, "Service", workload_name)
        _one(docs, "PodDisruptionBudget", workload_name)
        _one(docs, "NetworkPolicy", workload_name)
        if kind == "Deployment":
            hpa = _one(docs, "HorizontalPodAutoscaler", workload_name)
            assert hpa["spec"]["scaleTargetRef"]["name"] == workload_name


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
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{name}: {doc['kind']}/{doc['metadata']['name']}: token automounted")
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
            if doc["metadata"]["name"] in PLATFORM:
                if context.get("readOnlyRootFilesystem") is not True:
                    problems.append(f"{ident}: root filesystem is writable")
                if not pod.get("topologySpreadConstraints"):
                    problems.append(f"{ident}: replicas are not spread")
                if pod["securityContext"].get("runAsUser") != 10001:
                    problems.append(f"{ident}: not the image's user 10001")
            _, tag, digest = split_image(container["image"])
            # The base leaves the platform images' tags to the overlays.
            if name != "base" and not digest and tag in (None, "latest"):
                problems.append(f"{ident}: image {container['image']} is not pinned")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("api", APIS)
def test_apis_probe_livez_and_readyz_and_read_config_and_secrets(
    rendered: tuple[str, list[Doc]], api: str
) -> None:
    _, docs = rendered
    container = _container(_one(docs, "Deployment", api))
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["startupProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    env_from = container["envFrom"]
    assert env_from[0] == {"configMapRef": {"name": "itsm-config"}}
    assert {"secretRef": {"name": "itsm-secrets"}} in env_from[1:]
    # Only notify sees notify's Secret (ack-link key, SMTP credentials).
    notify_secret = {"secretRef": {"name": "itsm-notify-secrets"}} in env_from
    assert notify_secret == (api == "notify")


def test_sla_worker_is_a_statefulset_on_rocksdb(rendered: tuple[str, list[Doc]]) -> None:
    name, docs = rendered
    worker = _one(docs, "StatefulSet", "sla-worker")
    spec = worker["spec"]
    assert spec["replicas"] == (1 if name == "overlays/dev" else 2)
    assert spec["podManagementPolicy"] == "Parallel"
    governing = _one(docs, "Service", spec["serviceName"])
    assert governing["spec"]["clusterIP"] == "None"
    container = _container(worker)
    assert container["command"][:4] == ["python", "-m", SLA_WORKER_MODULE, "worker"]
    assert "--web-bind=127.0.0.1" in container["command"]
    env = _env(container)
    # The only port: Prometheus metrics (Faust's web server stays on loopback).
    assert container["ports"] == [
        {"name": "metrics", "containerPort": int(env["ITSM_SLA_METRICS_PORT"]), "protocol": "TCP"}
    ]
    assert [p["targetPort"] for p in governing["spec"]["ports"]] == ["metrics"]
    assert env["ITSM_SLA_STORE"] == "rocksdb://"
    assert env["ITSM_SLA_WEB_ENABLED"] == "true"
    (claim,) = spec["volumeClaimTemplates"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts[env["ITSM_SLA_DATA_DIR"]] == claim["metadata"]["name"]
    assert env["ITSM_SLA_DATA_DIR"] == SLA_DATA_DIR
    assert spec["template"]["spec"]["securityContext"]["fsGroup"] == 10001  # volume writable
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        command = container[probe]["exec"]["command"]
        assert f"http://127.0.0.1:{env['ITSM_SLA_WEB_PORT']}/" in " ".join(command), probe
    pdb = _one(docs, "PodDisruptionBudget", "sla-worker")
    assert pdb["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": {"app.kubernetes.io/name": "sla-worker"}},
    }
    ingress = _one(docs, "NetworkPolicy", "sla-worker")["spec"]["ingress"]
    assert _ports(ingress) == {int(env["ITSM_SLA_METRICS_PORT"])}


def test_references_resolve_and_no_secret_is_committed(rendered: tuple[str, list[Doc]]) -> None:
    name, docs = rendered
    assert not _by_kind(docs, "Secret"), f"{name}: Secrets are created out of band"
    config_maps = {doc["metadata"]["name"]: doc for doc in _by_kind(docs, "ConfigMap")}
    workloads = {(d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"] in WORKLOAD_KINDS}
    services = {doc["metadata"]["name"]: doc for doc in _by_kind(docs, "Service")}
    problems = []
    for config in config_maps.values():
        for key in config.get("data", {}):
            if SECRET_KEY.search(key) and not key.endswith("_FILE"):  # a path is no secret
                problems.append(f"ConfigMap/{config['metadata']['name']}: {key} is a secret")
    for (kind, workload_name), doc in workloads.items():
        pod = doc["spec"]["template"]["spec"]
        claims = {c["metadata"]["name"] for c in doc["spec"].get("volumeClaimTemplates", [])}
        volumes = {v["name"] for v in pod.get("volumes", [])} | claims
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef")
                if ref and ref["name"] not in config_maps:
                    problems.append(f"{kind}/{workload_name}: ConfigMap {ref['name']} missing")
            for key in _env(container):
                if SECRET_KEY.search(key) and not key.endswith("_FILE"):
                    problems.append(f"{kind}/{workload_name}: {key} is a literal env value")
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in volumes:
                    problems.append(f"{kind}/{workload_name}: volume {mount['name']} missing")
    for doc in services.values():
        if not _selects(doc["spec"].get("selector", {}), docs):
            problems.append(f"Service/{doc['metadata']['name']} selects no pods")
    for doc in _by_kind(docs, "PodDisruptionBudget") + _by_kind(docs, "NetworkPolicy"):
        selector = doc["spec"].get("selector") or doc["spec"].get("podSelector") or {}
        if doc["metadata"]["name"] == "default-deny":
            continue  # the empty selector: every pod in the namespace
        if not _selects(selector.get("matchLabels", {}), docs):
            problems.append(f"{doc['kind']}/{doc['metadata']['name']} selects no pods")
    for doc in _by_kind(docs, "HorizontalPodAutoscaler"):
        target = doc["spec"]["scaleTargetRef"]
        if (target["kind"], target["name"]) not in workloads:
            problems.append(f"HPA/{doc['metadata']['name']}: target {target} missing")
    for doc in _by_kind(docs, "Ingress"):
        for rule in doc["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                ports = services.get(backend["name"], {}).get("spec", {}).get("ports", [])
                if backend["port"]["name"] not in {p["name"] for p in ports}:
                    problems.append(f"Ingress {path['path']}: no Service port {backend}")
    for doc in docs:
        namespace = doc["metadata"].get("namespace")
        if doc["kind"] not in CLUSTER_SCOPED and namespace != "itsm":
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: namespace {namespace}")
    assert not problems, "\n".join(problems)


def test_disruption_budgets_leave_room_to_evict(rendered: tuple[str, list[Doc]]) -> None:
    name, docs = rendered
    for pdb in _by_kind(docs, "PodDisruptionBudget"):
        workload_name = pdb["metadata"]["name"]
        (workload,) = [
            d
            for d in docs
            if d["kind"] in WORKLOAD_KINDS and d["metadata"]["name"] == workload_name
        ]
        replicas = [workload["spec"]["replicas"]]
        hpas = [
            h
            for h in _by_kind(docs, "HorizontalPodAutoscaler")
            if h["metadata"]["name"] == workload_name
        ]
        replicas += [hpa["spec"]["minReplicas"] for hpa in hpas]
        min_available = pdb["spec"].get("minAvailable")
        if isinstance(min_available, int):
            assert min(replicas) > min_available, f"{name}: {workload_name}'s PDB blocks drains"
        else:
            assert pdb["spec"]["maxUnavailable"] >= 1, f"{name}: {workload_name}"
    for hpa in _by_kind(docs, "HorizontalPodAutoscaler"):
        metric = hpa["spec"]["metrics"][0]["resource"]
        assert metric["name"] == "cpu"
        assert metric["target"] == {"type": "Utilization", "averageUtilization": 70}
        assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]


def test_network_policies_deny_by_default_and_allow_what_is_needed(
    rendered: tuple[str, list[Doc]],
) -> None:
    _, docs = rendered
    deny = _one(docs, "NetworkPolicy", "default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    platform_egress = {9092, 27017, 53, 4318}
    expected = {
        "incidents": ({8000}, platform_egress),
        "changes": ({8000}, platform_egress),
        "sla-api": ({8000}, platform_egress),
        "notify": ({8000}, platform_egress | {25, 465, 587, 443}),
        "sla-worker": ({9464}, {9092, 53, 4318}),  # ingress: Prometheus metrics only
        "console": ({8000}, {53, 4318}),  # the browser, not the pod, calls the APIs
    }
    for name, (ingress, egress) in expected.items():
        spec = _one(docs, "NetworkPolicy", name)["spec"]
        assert set(spec["policyTypes"]) == {"Ingress", "Egress"}, name
        assert _ports(spec.get("ingress", [])) == ingress, name
        assert _ports(spec["egress"]) == egress, name
    # Every pod is selected by a policy of its own besides the default deny.
    labels = {labels["app.kubernetes.io/name"] for labels in _pod_labels(docs)}
    selected = {
        policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
        for policy in _by_kind(docs, "NetworkPolicy")
        if policy["metadata"]["name"] != "default-deny"
    }
    assert labels <= selected


def test_every_platform_pod_announces_its_metrics_port(rendered: tuple[str, list[Doc]]) -> None:
    """prometheus.io/* annotations for annotation-based discovery: the APIs' HTTP port, the
    SLA worker's metrics port, each one a port the container declares."""
    _, docs = rendered
    for name, (_, kind) in PLATFORM.items():
        workload = _one(docs, kind, name)
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        ports = {p["containerPort"] for p in _container(workload)["ports"]}
        assert annotations["prometheus.io/scrape"] == "true", name
        assert annotations["prometheus.io/path"] == "/metrics", name
        assert int(annotations["prometheus.io/port"]) in ports, name


def test_ingress_routes_every_api_path_to_its_service(
    rendered: tuple[str, list[Doc]], api_prefixes: dict[str, set[str]]
) -> None:
    name, docs = rendered
    expected = {prefix: api for api, prefixes in api_prefixes.items() for prefix in prefixes}
    assert _ingress_routes(docs) == expected | {CONSOLE_PATH: CONSOLE}, name
    assert {"/api/v1/incidents", "/api/v1/changes", "/api/v1/sla", "/api/v1/kpis"} <= set(expected)
    assert "/api/v1/notify" in expected


def test_dev_overlay_runs_kafka_mongodb_and_mailpit_in_cluster() -> None:
    docs = render(K8S / "overlays" / "dev")
    for deployment in _by_kind(docs, "Deployment"):
        assert deployment["spec"]["replicas"] == 1, deployment["metadata"]["name"]
    images = {
        doc["metadata"]["name"]: _container(doc)["image"]
        for doc in docs
        if doc["kind"] in WORKLOAD_KINDS
    }
    assert images["kafka"] == "apache/kafka:4.4.0"
    assert images["mongodb"] == "mongo:8.0"
    assert images["mailpit"].startswith("axllent/mailpit:v")
    for workload_name, (package, _) in PLATFORM.items():
        assert images[workload_name] == f"itsm-{package}:dev"
    services = {doc["metadata"]["name"]: doc for doc in _by_kind(docs, "Service")}
    assert {"kafka", "mongodb", "mailpit", *PLATFORM} <= set(services)
    (config,) = _by_kind(docs, "ConfigMap")
    data = config["data"]
    assert data["ITSM_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert "mongodb:27017/?replicaSet=rs0" in data["ITSM_MONGO_URL"]
    assert data["ITSM_AUTH_MODE"] == "dev"
    smtp_ports = {p["port"] for p in services[data["ITSM_NOTIFY_SMTP_HOST"]]["spec"]["ports"]}
    assert int(data["ITSM_NOTIFY_SMTP_PORT"]) in smtp_ports
    assert data["ITSM_NOTIFY_SMTP_SECURITY"] == "plain"
    to_mailpit = _one(docs, "NetworkPolicy", "notify-to-mailpit")["spec"]
    assert _ports(to_mailpit["egress"]) == {int(data["ITSM_NOTIFY_SMTP_PORT"])}


def test_prod_overlay_pins_images_and_keeps_stateful_services_external() -> None:
    docs = render(K8S / "overlays" / "prod")
    stateful = {doc["metadata"]["name"] for doc in _by_kind(docs, "StatefulSet")}
    assert stateful == {"sla-worker"}, "Kafka/MongoDB are external in prod"
    for doc in docs:
        if doc["kind"] not in WORKLOAD_KINDS:
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            image, tag, _ = split_image(container["image"])
            assert "/" in image, f"{container['image']} has no registry"
            assert tag and re.fullmatch(r"\d+\.\d+\.\d+", tag), f"{container['image']} not pinned"
    (config,) = _by_kind(docs, "ConfigMap")
    assert config["data"]["ITSM_KAFKA_BOOTSTRAP"].endswith(".kafka.svc:9092")
    assert config["data"]["ITSM_TOPIC_REPLICATION_FACTOR"] == "3"
    assert config["data"]["ITSM_AUTH_MODE"] == "oidc"
    (ingress,) = _by_kind(docs, "Ingress")
    ((rule),) = ingress["spec"]["rules"]
    (tls,) = ingress["spec"]["tls"]
    assert tls["hosts"] == [rule["host"]] and tls["secretName"] == "itsm-tls"
    assert config["data"]["ITSM_PUBLIC_BASE_URL"] == f"https://{rule['host']}"
    assert _ingress_routes(docs) == _ingress_routes(render(K8S / "base"))


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
