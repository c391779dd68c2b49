"""Prometheus metrics that several parts of the platform update, and their helpers.

A metric used by one module only is defined there (HTTP in shared/http/app.py, the outbox in
shared/store/relay.py, SLA timers in services/sla/processor/metrics.py, notifications in
services/notify/sender.py). Every name starts with `itsm_`; docs/operations.md#metrics lists them
all with what to alert on. APIs serve them on `/metrics` (shared/http/health.py); the SLA worker,
which has no API, on its own port (`serve_metrics`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from prometheus_client import Counter, Gauge, start_http_server

CONSUMER_LAG = Gauge(
    "itsm_consumer_lag",
    "Records of a partition not yet processed by the consumer group: the partition's high "
    "watermark at the last fetch minus the group's next offset",
    ["group", "topic", "partition"],
)
DEAD_LETTERED = Counter(
    "itsm_dead_lettered_records_total",
    "Records routed to the dead-letter topic",
    ["source_topic", "group"],
)

TopicPartitionKey = tuple[str, int]  # (topic, partition)


class ConsumerLag:
    """The lag series of one consumer. Each report replaces the partitions it covers: a
    partition that moved to another member loses its series instead of freezing at its last
    value (the new owner reports it)."""

    def __init__(self, group: str) -> None:
        self.group = group
        self._reported: set[TopicPartitionKey] = set()

    def report(self, lags: Mapping[TopicPartitionKey, int]) -> None:
        for (topic, partition), lag in lags.items():
            # Below zero only in the instant between a fetch and a newer commit.
            CONSUMER_LAG.labels(self.group, topic, str(partition)).set(max(lag, 0))
        for topic, partition in self._reported - set(lags):
            with contextlib.suppress(KeyError):
                CONSUMER_LAG.remove(self.group, topic, str(partition))
        self._reported = set(lags)

    def clear(self) -> None:
        self.report({})


def serve_metrics(port: int, host: str) -> None:
    """Serve the process's metrics at http://host:port/metrics from a daemon thread, for a
    process without an HTTP API of its own (the SLA worker)."""
    start_http_server(port, addr=host)
