"""The platform's Prometheus metrics, each from the code that updates it: request histograms by
route template, the outbox backlog measured by the relay's scan, consumer lag series that follow
the assignment, SLA timers and alerts, notification outcomes and dead letters."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import TopicPartition
from prometheus_client import REGISTRY

from services.notify import handlers
from services.notify.channels import Outcome
from services.sla.domain import new_state
from services.sla.processor.catalog import default_catalog
from services.sla.processor.metrics import (
    count_alerts,
    faust_consumer_lags,
    track_open_timers,
    track_prepared_alerts,
)
from services.sla.processor.prepared import AlertSchedule, PreparedAlerts
from services.sla.processor.wakeups import WakeupIndex
from shared.bus.memory import InMemoryBus
from shared.contracts.envelope import sequenced
from shared.contracts.incidents import FieldChange, IncidentUpdated
from shared.contracts.sla import SlaMet, SlaWarning
from shared.contracts.topics import Topic
from shared.http.app import create_service_app
from shared.metrics import ConsumerLag
from shared.store.memory import InMemoryDatabase
from shared.store.relay import OutboxRelay, outbox_backlog
from shared.store.repository import outbox_entry
from tests.support.apps import asgi_client
from tests.support.notify import breach, sla_fact
from tests.unit.test_notify_service import Harness as NotifyHarness
from tests.unit.test_notify_service import harness as notify_harness  # noqa: F401 -- a fixture

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
T0 = datetime(2026, 3, 16, 10, 0, tzinfo=UTC)  # the notify harness's clock


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- HTTP -----------------------------------------------------------------------------------------


async def test_requests_are_timed_by_service_method_route_template_and_status() -> None:
    app = create_service_app(title="t", service="metrics-test")

    @app.get("/things/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    labels = {"service": "metrics-test", "method": "GET"}
    found = {**labels, "route": "/things/{thing_id}", "status": "200"}
    missing = {**labels, "route": "unmatched", "status": "404"}
    before_found = sample("itsm_http_request_duration_seconds_count", **found)
    before_missing = sample("itsm_http_request_duration_seconds_count", **missing)
    async with asgi_client(app) as client:
        for thing_id in ("a1", "b2", "c3"):
            assert (await client.get(f"/things/{thing_id}")).status_code == 200
        assert (await client.get("/nowhere/at/all")).status_code == 404

    assert sample("itsm_http_request_duration_seconds_count", **found) == before_found + 3
    assert sample("itsm_http_request_duration_seconds_count", **missing) == before_missing + 1
    assert sample("itsm_http_requests_total", **found) >= 3
    exposed = {
        s.labels.get("route")
        for family in REGISTRY.collect()
        if family.name == "itsm_http_request_duration_seconds"
        for s in family.samples
        if s.labels.get("service") == "metrics-test"
    }
    assert exposed == {"/things/{thing_id}", "unmatched"}  # never a raw path with an id


# -- outbox ---------------------------------------------------------------------------------------


def pending(aggregate: str, at: datetime) -> dict[str, Any]:
    event = IncidentUpdated(
        incident_id=aggregate, actor="t", status="new",
        changes={"value": FieldChange(before=0, after=1)},
    )  # fmt: skip
    (envelope,) = sequenced(aggregate, 0, [event], source="/tests", time=at)
    return outbox_entry(envelope)


def test_the_backlog_is_the_events_held_and_the_age_of_the_oldest() -> None:
    documents = [
        {"_id": "a", "outbox": [pending("a", NOW - timedelta(seconds=30))]},
        # BSON dates come back naive: read as UTC
        {"_id": "b", "outbox": [{**pending("b", NOW), "time": datetime(2026, 12, 1, 8, 58)}]},
        {"_id": "c", "outbox": []},
    ]
    assert outbox_backlog(documents, NOW) == (2, 120.0)
    assert outbox_backlog([], NOW) == (0, 0.0)
    # An event stamped a little ahead of this clock is not a negative age.
    assert outbox_backlog([{"outbox": [pending("d", NOW + timedelta(seconds=1))]}], NOW) == (1, 0)


async def test_each_scan_sets_the_backlog_gauges_of_its_collection() -> None:
    database = InMemoryDatabase()
    collection = database["metrics_docs"]
    written = datetime.now(UTC) - timedelta(minutes=10)
    for name in ("a", "b", "c"):  # written by a process whose relay died before publishing
        await collection.insert_one({"_id": name, "outbox": [pending(name, written)]})
    bus = InMemoryBus()
    relay = OutboxRelay(bus, [collection])

    await relay.publish_pass(scan=True)  # measures what it found, then publishes it

    assert sample("itsm_outbox_pending_events", collection="metrics_docs") == 3
    assert sample("itsm_outbox_oldest_pending_age_seconds", collection="metrics_docs") >= 600
    assert len(bus.records(Topic.INCIDENTS)) == 3

    await relay.remove_published()
    await relay.publish_pass(scan=True)
    assert sample("itsm_outbox_pending_events", collection="metrics_docs") == 0
    assert sample("itsm_outbox_oldest_pending_age_seconds", collection="metrics_docs") == 0


# -- consumer lag ---------------------------------------------------------------------------------


def lag(group: str, topic: str, partition: int) -> float | None:
    return REGISTRY.get_sample_value(
        "itsm_consumer_lag", {"group": group, "topic": topic, "partition": str(partition)}
    )


def test_a_lag_report_replaces_the_partitions_of_the_last_one() -> None:
    consumer = ConsumerLag("lag-test")
    consumer.report({("t", 0): 5, ("t", 1): 0, ("u", 0): -2})
    assert (lag("lag-test", "t", 0), lag("lag-test", "t", 1)) == (5, 0)
    assert lag("lag-test", "u", 0) == 0  # a fetch older than the last commit: not negative

    consumer.report({("t", 1): 7})  # partitions 0 of t and u moved to another member
    assert lag("lag-test", "t", 0) is None and lag("lag-test", "u", 0) is None
    assert lag("lag-test", "t", 1) == 7

    consumer.clear()
    assert lag("lag-test", "t", 1) is None


class FaustConsumer:
    """What the lag measure reads of Faust's consumer."""

    def __init__(self, highwaters: dict[TopicPartition, int | None]) -> None:
        self.highwaters = highwaters
        self._committed_offset: dict[TopicPartition, int | None] = {}

    def assignment(self) -> set[TopicPartition]:
        return set(self.highwaters)

    def highwater(self, tp: TopicPartition) -> int | None:
        if tp.partition == 9:
            raise AssertionError("Partition is not assigned")
        return self.highwaters[tp]


def test_the_sla_workers_lag_is_the_high_watermark_minus_the_committed_offset() -> None:
    incidents, changelog = str(Topic.INCIDENTS), "itsm-sla-sla-state-changelog"
    consumer = FaustConsumer({
        TopicPartition(incidents, 0): 120, TopicPartition(incidents, 1): 40,
        TopicPartition(incidents, 2): None,  # not fetched yet
        TopicPartition(incidents, 9): 1,  # revoked while measured
        TopicPartition(changelog, 0): 99,  # not a source of the agents
    })  # fmt: skip
    consumer._committed_offset[TopicPartition(incidents, 0)] = 100
    consumer._committed_offset[TopicPartition(incidents, 1)] = None  # never committed

    lags = faust_consumer_lags(consumer, {incidents})

    assert lags == {(incidents, 0): 20, (incidents, 1): 40}


# -- SLA ------------------------------------------------------------------------------------------


def alerts(alert: str, metric: str, priority: str) -> float:
    return sample("itsm_sla_alerts_total", alert=alert, metric=metric, priority=priority)


def test_warnings_and_breaches_are_counted_by_metric_kind_and_priority() -> None:
    before = {
        key: alerts(*key)
        for key in [
            ("warning", "first_response", "P1"), ("breach", "resolution", "P2"),
            ("breach", "ola", "P2"), ("breach", "met", "P2"),
        ]
    }  # fmt: skip
    count_alerts([
        sla_fact(SlaWarning, "INC1", NOW, metric="first_response", priority="P1", threshold=50),
        sla_fact(SlaWarning, "INC1", NOW, metric="first_response", priority="P1", threshold=75),
        breach("INC2", NOW),  # resolution, P2
        breach("INC2", NOW, metric="ola:network"),
        sla_fact(SlaMet, "INC3", NOW),  # not an alert
    ])  # fmt: skip

    after = {key: alerts(*key) - value for key, value in before.items()}
    assert after == {
        ("warning", "first_response", "P1"): 2, ("breach", "resolution", "P2"): 1,
        ("breach", "ola", "P2"): 1, ("breach", "met", "P2"): 0,
    }  # fmt: skip
    assert (
        REGISTRY.get_sample_value(
            "itsm_sla_alerts_total", {"alert": "breach", "metric": "ola:network", "priority": "P2"}
        )
        is None
    )  # one series per metric kind, not per group


def test_open_timers_follow_the_wakeup_index() -> None:
    index = WakeupIndex()
    track_open_timers(index)
    index.schedule("INC1", 0, NOW)
    index.schedule("INC2", 1, NOW)
    assert sample("itsm_sla_open_timers") == 2
    index.schedule("INC1", 0, None)  # every clock stopped: nothing can fall due
    assert sample("itsm_sla_open_timers") == 1


def prepared_alerts(ticket_id: str, at: datetime) -> PreparedAlerts:
    return PreparedAlerts(
        ticket_id, 0, at, new_state(ticket_id), [], [], [], None, "", default_catalog()
    )


async def test_prepared_and_fired_alerts_are_counted_apart() -> None:
    alerts = AlertSchedule()
    track_prepared_alerts(alerts)
    alerts.add(prepared_alerts("INC1", NOW))
    alerts.add(prepared_alerts("INC2", NOW + timedelta(minutes=1)))
    assert sample("itsm_sla_prepared_alerts", state="prepared") == 2
    [due] = alerts.take_due(NOW)
    alerts.mark_fired(due, asyncio.get_running_loop().create_future())
    assert sample("itsm_sla_prepared_alerts", state="prepared") == 1
    assert sample("itsm_sla_prepared_alerts", state="fired") == 1
    alerts.discard(due.ticket_id)  # its state was stored
    assert sample("itsm_sla_prepared_alerts", state="fired") == 0


# -- notify ---------------------------------------------------------------------------------------


def notifications(outcome: str) -> float:
    return sample("itsm_notifications_total", channel="email", outcome=outcome)


async def test_deliveries_are_counted_by_channel_and_outcome(
    notify_harness: NotifyHarness,  # noqa: F811
) -> None:
    harness = notify_harness
    before = {o: notifications(o) for o in ("sent", "retrying", "failed")}
    dead_before = sample(
        "itsm_dead_lettered_records_total", source_topic="", group="notify-delivery"
    )
    harness.mail.script = [Outcome.TRANSIENT]
    await handlers.on_sla_event(harness.notify, breach("INC1", T0), now=T0)
    await harness.worker.run_once()
    await harness.advance(T0 + timedelta(seconds=10))
    harness.mail.script = [Outcome.PERMANENT]
    await handlers.on_sla_event(harness.notify, breach("INC2", T0), now=T0 + timedelta(seconds=10))
    await harness.worker.run_once()

    counted = {o: notifications(o) - before[o] for o in before}
    assert counted == {"sent": 1, "retrying": 1, "failed": 1}
    assert len(harness.dead_letters) == 1
    dead_after = sample(
        "itsm_dead_lettered_records_total", source_topic="", group="notify-delivery"
    )
    assert dead_after == dead_before + 1
