"""The platform's topics as created at start-up, and who may write and read them."""

from dataclasses import dataclass

from shared.bus.port import TopicSpec
from shared.contracts.topics import Topic

_THIRTY_DAYS_MS = str(30 * 24 * 3600 * 1000)
# Every SLA policy/calendar version has its own key: compaction keeps them all, for replays.
_CONFIG: dict[Topic, tuple[tuple[str, str], ...]] = {
    Topic.SLA_POLICIES: (("cleanup.policy", "compact"),),
    Topic.SLA_KPIS: (("cleanup.policy", "compact"),),  # the latest snapshot per KPI partial
}


def platform_topics(partitions: int) -> list[TopicSpec]:
    """Every topic the platform uses. Event topics share one partition count so aggregates keyed
    by id co-partition; the dead-letter topic keeps its records for 30 days for replay."""
    specs = [
        TopicSpec(str(t), partitions, _CONFIG.get(t, ()))
        for t in Topic
        if t is not Topic.DEAD_LETTER
    ]
    specs.append(
        TopicSpec(str(Topic.DEAD_LETTER), partitions, (("retention.ms", _THIRTY_DAYS_MS),))
    )
    return specs


# --- Who may do what on the bus (least privilege; docs/security.md, "Kafka security") --------
# Every deployable has its own principal (a SCRAM user or the CN of its client certificate).
# Each writes only the topics it owns, plus the two shared entry points: the dead-letter topic
# (every consumer sets aside what it cannot read) and the ingest topic (external producers, and
# incidents' Alertmanager webhook, which publishes the alerts it receives there). It reads what
# it consumes and joins only consumer groups under its own prefix. The Kubernetes KafkaUser
# resources (deploy/k8s/overlays/prod/kafka-users.yaml) and the secured local broker's ACLs
# (devtools/localstack/secure.py) are checked against / derived from this table.

SHARED_WRITES = frozenset({str(Topic.DEAD_LETTER), str(Topic.INGEST)})


@dataclass(frozen=True)
class KafkaAccess:
    principal: str
    writes: tuple[str, ...]  # topics it produces to
    reads: tuple[str, ...]  # topics it consumes
    group_prefix: str  # consumer groups it may join (prefix)
    # Topics it creates and owns by name prefix: the SLA worker's changelog and due topics.
    internal_prefix: str | None = None
    configs: tuple[str, ...] = ()  # topics whose configuration it reads (DescribeConfigs)


KAFKA_ACCESS: tuple[KafkaAccess, ...] = (
    KafkaAccess(
        "incidents",
        writes=(Topic.INCIDENTS, Topic.INGEST, Topic.DEAD_LETTER),
        reads=(Topic.INGEST, Topic.INCIDENTS),
        group_prefix="incidents-",
    ),
    KafkaAccess(
        "changes",
        writes=(Topic.CHANGES, Topic.DEAD_LETTER),
        reads=(Topic.INGEST, Topic.INCIDENTS),
        group_prefix="changes-",
    ),
    KafkaAccess(
        "sla-worker",
        writes=(Topic.SLA, Topic.SLA_KPIS, Topic.DEAD_LETTER),
        reads=(Topic.INCIDENTS, Topic.CHANGES, Topic.SLA_POLICIES),
        group_prefix="itsm-sla",  # the Faust app id (ITSM_SLA_APP_ID)
        internal_prefix="itsm-sla-",  # <app id>-sla-state-changelog, <app id>-sla-due
        configs=(Topic.SLA_POLICIES,),  # the policy feed checks that it is compacted
    ),
    KafkaAccess(
        "sla-api",
        writes=(Topic.SLA_POLICIES, Topic.DEAD_LETTER),
        reads=(Topic.SLA, Topic.SLA_KPIS, Topic.INCIDENTS),  # incidents: who works which ticket
        group_prefix="sla-api-",
    ),
    KafkaAccess(
        "notify",
        writes=(Topic.NOTIFY, Topic.DEAD_LETTER),
        reads=(Topic.INCIDENTS, Topic.SLA),
        group_prefix="notify-",
    ),
    # External systems (monitoring, CI/CD, chat-ops) publish CloudEvents to the ingest topic.
    KafkaAccess("ingest-producer", writes=(Topic.INGEST,), reads=(), group_prefix=""),
)


def kafka_access(principal: str) -> KafkaAccess:
    for access in KAFKA_ACCESS:
        if access.principal == principal:
            return access
    raise KeyError(principal)


def topic_owners() -> dict[str, set[str]]:
    """Topic -> the principals that write it."""
    owners: dict[str, set[str]] = {str(t): set() for t in Topic}
    for access in KAFKA_ACCESS:
        for topic in access.writes:
            owners[str(topic)].add(access.principal)
    return owners
