"""The SLA processor's metrics: open timers, warnings and breaches published, and (for a Faust
worker) the consumer lag of its source partitions. The worker serves them on its own port
(`ITSM_SLA_METRICS_PORT`, see worker.py); embedded, the platform's `/metrics` shows them."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from prometheus_client import Counter, Gauge

from services.sla.processor.prepared import AlertSchedule
from services.sla.processor.wakeups import WakeupIndex
from shared.contracts.envelope import Envelope
from shared.contracts.sla import SlaBreached, SlaWarning
from shared.metrics import TopicPartitionKey

OPEN_TIMERS = Gauge(
    "itsm_sla_open_timers",
    "Tickets this worker times whose SLA clock runs toward a warning or breach still ahead "
    "(one per ticket: its wake-up index entry)",
)
PREPARED_ALERTS = Gauge(
    "itsm_sla_prepared_alerts",
    "Tickets whose next alerts this worker has prepared ahead of their instant (prepared), or "
    "sent and not yet stored (fired)",
    ["state"],
)
ALERTS = Counter(
    "itsm_sla_alerts_total",
    "SLA warnings and breaches published (at least once: a replay after a crash repeats some)",
    ["alert", "metric", "priority"],
)
_ALERT_KINDS = {SlaWarning.event_type: "warning", SlaBreached.event_type: "breach"}


def track_open_timers(index: WakeupIndex) -> None:
    """Read at each scrape: the index is in memory, rebuilt after every rebalance, so the
    figure follows the partitions this worker owns. (The last processor built in a process
    is the one reported.)"""
    OPEN_TIMERS.set_function(lambda: len(index))


def track_prepared_alerts(alerts: AlertSchedule) -> None:
    """Read at each scrape, like the open timers (the last processor built is reported)."""
    PREPARED_ALERTS.labels("prepared").set_function(lambda: len(alerts))
    PREPARED_ALERTS.labels("fired").set_function(alerts.fired_count)


def count_alerts(facts: Iterable[Envelope]) -> None:
    """Count the warnings and breaches among published facts. `ola:<group>` metrics count as
    `ola`: one series per metric kind, not per assignment group."""
    for fact in facts:
        kind = _ALERT_KINDS.get(fact.type)
        if kind is None:
            continue
        metric = str(fact.data.get("metric", ""))
        metric = "ola" if metric.startswith("ola:") else metric
        ALERTS.labels(kind, metric, str(fact.data.get("priority", ""))).inc()


def faust_consumer_lags(consumer: Any, topics: Collection[str]) -> dict[TopicPartitionKey, int]:
    """The lag of each assigned partition of `topics` (the agents' sources): the high watermark
    of the last fetch minus the committed offset, as `kafka-consumer-groups` reports it. Faust
    commits what its agents processed every `broker_commit_interval` (2.8 s)."""
    # Faust's own record of the offsets it committed (no public accessor); a partition never
    # committed is at None, which counts from offset 0.
    committed = getattr(consumer, "_committed_offset", {})
    lags: dict[TopicPartitionKey, int] = {}
    for tp in consumer.assignment():
        if tp.topic not in topics:
            continue
        try:
            highwater = consumer.highwater(tp)
        except AssertionError:  # revoked meanwhile
            continue
        if highwater is not None:
            lags[(tp.topic, tp.partition)] = highwater - (committed.get(tp) or 0)
    return lags
