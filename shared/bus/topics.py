"""The platform's topics as created at start-up."""

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
