"""The Kubernetes manifests give every service its own Kafka principal with least-privilege ACLs.

The prod overlay's Strimzi resources (deploy/k8s/overlays/prod/kafka-access.yaml) are checked,
offline, against a schema of the fields they use (kubernetes-validate has none for custom
resources) and against the platform's access table, shared/bus/topics.py `KAFKA_ACCESS`, which
the secured local broker's ACLs are made from too (tests/integration/test_kafka_security.py
shows a real broker enforcing them). Nothing here repeats the table: the expectations are derived
from it, from the topic list and from the services' own settings.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from services.notify.main import NotifySettings
from services.sla.main import SlaApiSettings
from services.sla.processor.settings import SlaSettings
from services.sla.processor.topics import due_topic_name
from shared.bus.topics import KAFKA_ACCESS, SHARED_WRITES, platform_topics, topic_owners
from shared.contracts.topics import Topic
from tests.support.kustomize import render

ROOT = Path(__file__).resolve().parents[2]
PROD = ROOT / "deploy" / "k8s" / "overlays" / "prod"
STRIMZI = "kafka.strimzi.io/v1beta2"
WORKLOADS = {"Deployment", "StatefulSet"}
# What a literal topic ACL grants, in Strimzi's operation names (Read and Write need Describe).
OPERATIONS = ["Read", "Write", "Create", "Delete", "Alter", "Describe", "ClusterAction",
              "AlterConfigs", "DescribeConfigs", "IdempotentWrite", "All"]  # fmt: skip
WRITING = {"Write", "All"}

Doc = dict[str, Any]

# The subset of Strimzi's v1beta2 CRDs these manifests use (additionalProperties forbidden, so
# a misspelt field fails here as kubernetes-validate's strict mode would for built-in kinds).
_METADATA = {
    "type": "object",
    "required": ["name", "namespace", "labels"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
        "namespace": {"type": "string"},
        "labels": {
            "type": "object",
            "required": ["strimzi.io/cluster"],
            "additionalProperties": {"type": "string"},
        },
    },
    "additionalProperties": False,
}
KAFKA_USER = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": STRIMZI},
        "kind": {"const": "KafkaUser"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "required": ["authentication", "authorization"],
            "additionalProperties": False,
            "properties": {
                "authentication": {
                    "type": "object",
                    "properties": {"type": {"enum": ["scram-sha-512", "tls", "tls-external"]}},
                    "required": ["type"],
                    "additionalProperties": False,
                },
                "authorization": {
                    "type": "object",
                    "required": ["type", "acls"],
                    "additionalProperties": False,
                    "properties": {
                        "type": {"const": "simple"},
                        "acls": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["resource", "operations"],
                                "additionalProperties": False,
                                "properties": {
                                    "resource": {
                                        "type": "object",
                                        "required": ["type", "name", "patternType"],
                                        "additionalProperties": False,
                                        "properties": {
                                            "type": {"enum": ["topic", "group"]},
                                            "name": {"type": "string", "minLength": 1},
                                            "patternType": {"enum": ["literal", "prefix"]},
                                        },
                                    },
                                    "operations": {
                                        "type": "array",
                                        "minItems": 1,
                                        "uniqueItems": True,
                                        "items": {"enum": OPERATIONS},
                                    },
                                    "host": {"type": "string"},
                                    "type": {"enum": ["allow", "deny"]},
                                },
                            },
                        },
                    },
                },
            },
        },
    },
    "additionalProperties": False,
}
KAFKA_TOPIC = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": STRIMZI},
        "kind": {"const": "KafkaTopic"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "required": ["partitions", "replicas", "config"],
            "additionalProperties": False,
            "properties": {
                "partitions": {"type": "integer", "minimum": 1},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 32767},
                "config": {"type": "object", "additionalProperties": {"type": "string"}},
                "topicName": {"type": "string"},
            },
        },
    },
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def docs() -> list[Doc]:
    return render(PROD)


def _kind(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _grants(user: Doc) -> set[tuple[str, str, str, str]]:
    """(resource type, name, pattern type, operation) for every operation an ACL allows."""
    return {
        (acl["resource"]["type"], acl["resource"]["name"], acl["resource"]["patternType"], op)
        for acl in user["spec"]["authorization"]["acls"]
        if acl.get("type", "allow") == "allow"
        for op in acl["operations"]
    }


def _expected_grants(principal: str) -> set[tuple[str, str, str, str]]:
    access = next(a for a in KAFKA_ACCESS if a.principal == principal)
    grants = set()
    for topic in access.writes:
        grants |= {("topic", str(topic), "literal", op) for op in ("Write", "Describe")}
    for topic in access.reads:
        grants |= {("topic", str(topic), "literal", op) for op in ("Read", "Describe")}
    grants |= {("topic", str(topic), "literal", "DescribeConfigs") for topic in access.configs}
    if access.internal_prefix:
        grants.add(("topic", access.internal_prefix, "prefix", "All"))
    if access.group_prefix:
        grants.add(("group", access.group_prefix, "prefix", "Read"))
    return grants


def _matches(name: str, pattern: str, topic: str) -> bool:
    return topic == name if pattern == "literal" else topic.startswith(name)


def test_strimzi_resources_match_their_schema(docs: list[Doc]) -> None:
    custom = [d for d in docs if d["apiVersion"].startswith("kafka.strimzi.io/")]
    assert {d["kind"] for d in custom} == {"KafkaUser", "KafkaTopic"}
    for doc in custom:
        schema = KAFKA_USER if doc["kind"] == "KafkaUser" else KAFKA_TOPIC
        jsonschema.validate(doc, schema)
        assert doc["metadata"]["labels"]["strimzi.io/cluster"] == "itsm"
        assert doc["metadata"]["namespace"] == "itsm"


def test_the_schema_catches_a_misspelt_field() -> None:
    user = {
        "apiVersion": STRIMZI, "kind": "KafkaUser",
        "metadata": {"name": "x", "namespace": "itsm", "labels": {"strimzi.io/cluster": "itsm"}},
        "spec": {"authentication": {"type": "scram-sha-512"},
                 "authorization": {"type": "simple", "acls": [
                     {"resource": {"type": "topic", "name": "t", "patternType": "literal"},
                      "operation": ["Write"]}]}},
    }  # fmt: skip
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(user, KAFKA_USER)


def test_every_principal_is_a_scram_user_with_exactly_its_acls(docs: list[Doc]) -> None:
    users = _kind(docs, "KafkaUser")
    assert set(users) == {a.principal for a in KAFKA_ACCESS}
    for principal, user in users.items():
        assert user["spec"]["authentication"]["type"] == "scram-sha-512", principal
        assert _grants(user) == _expected_grants(principal), principal


def test_each_service_writes_only_its_own_topics(docs: list[Doc]) -> None:
    """Read from the manifests, independently of the table: every platform topic but the two
    shared entry points has exactly one writer; nobody holds a cluster-wide, wildcard or
    prefix grant that reaches a platform topic."""
    users = _kind(docs, "KafkaUser")
    topics = [str(t) for t in Topic]
    writers: dict[str, set[str]] = {t: set() for t in topics}
    for principal, user in users.items():
        for kind, name, pattern, operation in _grants(user):
            assert name != "*", f"{principal}: wildcard {kind} ACL"
            if kind == "topic" and pattern == "prefix":
                reached = [t for t in topics if _matches(name, pattern, t)]
                assert not reached, f"{principal}: prefix {name!r} reaches {reached}"
            if kind == "topic" and operation in WRITING:
                writers.update({t: writers[t] | {principal} for t in topics if t == name})
    for topic, principals in writers.items():
        if topic in SHARED_WRITES:
            assert principals, topic
        else:
            assert len(principals) == 1, f"{topic} is written by {sorted(principals)}"
    assert writers == {t: p for t, p in topic_owners().items()}
    for topic in SHARED_WRITES:  # the shared entry points: who may write them, and why
        assert writers[topic] <= {a.principal for a in KAFKA_ACCESS}


def test_group_and_internal_prefixes_cover_what_the_services_use() -> None:
    """The prefixes granted are the ones the services' settings produce by default."""
    prefix = {a.principal: a for a in KAFKA_ACCESS}
    worker = SlaSettings()
    assert worker.app_id.startswith(prefix["sla-worker"].group_prefix)
    internal = prefix["sla-worker"].internal_prefix
    assert internal and due_topic_name(worker.app_id).startswith(internal)
    assert f"{worker.app_id}-sla-state-changelog".startswith(internal)
    for group in ("timers", "kpis"):
        assert f"{SlaApiSettings().consumer_group}-{group}".startswith(
            prefix["sla-api"].group_prefix
        )
    for group in ("incidents", "sla"):
        assert f"{NotifySettings().consumer_group}-{group}".startswith(
            prefix["notify"].group_prefix
        )
    for name in ("incidents-alert-intake", "incidents-cascade"):  # services/incidents/main.py
        assert name.startswith(prefix["incidents"].group_prefix)
    for name in ("changes-cicd-intake", "changes-incident-correlation"):
        assert name.startswith(prefix["changes"].group_prefix)
    source = {
        "incidents": (ROOT / "services/incidents/main.py").read_text(),
        "changes": (ROOT / "services/changes/main.py").read_text(),
    }
    assert '"incidents-alert-intake"' in source["incidents"]
    assert '"incidents-cascade"' in source["incidents"]
    assert '"changes-cicd-intake"' in source["changes"]
    assert '"changes-incident-correlation"' in source["changes"]


def test_every_workload_connects_as_its_own_principal(docs: list[Doc]) -> None:
    users = _kind(docs, "KafkaUser")
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"]
    data = config["data"]
    assert data["ITSM_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert data["ITSM_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert "ITSM_KAFKA_SASL_PASSWORD" not in data  # only ever a mounted file
    # The workloads that talk to Kafka: those their NetworkPolicy lets out to the broker's port.
    kafka_port = int(data["ITSM_KAFKA_BOOTSTRAP"].rsplit(":", 1)[1])
    clients = {
        policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
        for policy in docs
        if policy["kind"] == "NetworkPolicy"
        and any(
            port.get("port") == kafka_port
            for rule in policy["spec"].get("egress", [])
            for port in rule.get("ports", [])
        )
    }
    workloads = [d for d in docs if d["kind"] in WORKLOADS and d["metadata"]["name"] in clients]
    assert len(workloads) == len(clients), clients
    seen = set()
    for workload in workloads:
        name = workload["metadata"]["name"]
        pod = workload["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        principal = env["ITSM_KAFKA_SASL_USERNAME"]
        assert principal in users, f"{name}: no KafkaUser {principal}"
        assert principal == name, f"{name} connects as {principal}"
        seen.add(principal)
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        for setting, secret in (
            ("ITSM_KAFKA_SASL_PASSWORD_FILE", principal),  # the User Operator's Secret
            ("ITSM_KAFKA_SSL_CAFILE", "itsm-kafka-cluster-ca"),
        ):
            path = Path(data[setting])
            mount = mounts[str(path.parent)]
            assert mount.get("readOnly") is True, f"{name}: {mount}"
            source = volumes[mount["name"]]["secret"]
            assert source["secretName"] == secret, f"{name}: {setting} from {source}"
            assert [i["path"] for i in source["items"]] == [path.name], f"{name}: {source}"
            if setting == "ITSM_KAFKA_SASL_PASSWORD_FILE":  # the CA certificate is public
                assert source["defaultMode"] & 0o007 == 0, f"{name}: password readable by all"
    # The ingest producer is for systems outside the platform; every service has a workload.
    assert seen == set(users) - {"ingest-producer"}


def test_topics_are_declared_as_the_services_create_them(docs: list[Doc]) -> None:
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"]
    partitions = int(config["data"]["ITSM_TOPIC_PARTITIONS"])
    replicas = int(config["data"]["ITSM_TOPIC_REPLICATION_FACTOR"])
    declared = _kind(docs, "KafkaTopic")
    expected = {spec.name: spec for spec in platform_topics(partitions)}
    assert set(declared) == set(expected)
    for name, topic in declared.items():
        spec = topic["spec"]
        assert (spec["partitions"], spec["replicas"]) == (partitions, replicas), name
        config_ = dict(spec["config"])
        assert int(config_.pop("min.insync.replicas")) == replicas - 1, name
        assert config_ == dict(expected[name].config), name


KAFKA_CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient", "KafkaBus"}


def test_every_kafka_client_of_the_platform_takes_the_security_settings() -> None:
    """Each aiokafka client (and bus) the services and the shared library open is handed the
    security arguments (`**security` / `security=`), so none connects in plaintext on a secured
    cluster; a new client without them fails here."""
    missing, found = [], 0
    for path in sorted([*ROOT.glob("services/**/*.py"), *ROOT.glob("shared/**/*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name not in KAFKA_CLIENTS:
                continue
            found += 1
            if not any(k.arg is None or k.arg == "security" for k in node.keywords):
                missing.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert found >= 8, found  # the scan sees the clients (bus, SLA worker, SLA API, offsets)
    assert not missing, missing
