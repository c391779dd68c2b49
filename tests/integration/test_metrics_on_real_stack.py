"""Prometheus metrics from real processes on the real stack (Kafka, FerretDB): an incidents app
over HTTP (request histograms by route template, the outbox gauges its relay's scan sets), a
Kafka consumer's lag per partition, and an SLA worker subprocess's own metrics port (open
timers, warnings and breaches, consumer lag, dead letters)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from services.incidents import handlers
from services.incidents.domain import OpenIncident, Policy
from services.incidents.handlers import Incidents
from services.incidents.main import create_app
from services.incidents.store import GroupRepository, IncidentRepository
from shared.bus.kafka import KafkaBus
from shared.bus.port import TopicSpec
from shared.contracts.envelope import Envelope
from shared.contracts.topics import Topic
from shared.store.counters import next_number
from shared.store.relay import OUTBOX_OLDEST_AGE, OUTBOX_PENDING
from tests.integration.test_incidents_on_real_stack import incidents_settings
from tests.support.apps import free_port, http_server
from tests.support.kafka import ensure_platform_topics, tail
from tests.support.polling import eventually
from tests.support.sla_workers import (
    SlaWorker,
    incident_feed,
    partition_count,
    run_id,
    sla_workers,
    wait_until_answering,
    worker_env,
)

pytestmark = pytest.mark.infra
Auth = Callable[..., dict[str, str]]
Labels = dict[str, str]


class Scrape:
    """One /metrics page, parsed."""

    def __init__(self, text: str) -> None:
        self.samples = [
            (sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]

    def value(self, name: str, **labels: str) -> float | None:
        for sample_name, sample_labels, value in self.samples:
            if sample_name == name and labels.items() <= sample_labels.items():
                return value
        return None

    def series(self, name: str) -> list[Labels]:
        return [labels for sample_name, labels, _ in self.samples if sample_name == name]


async def scrape(client: httpx.AsyncClient) -> Scrape:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    return Scrape(response.text)


# -- an API: requests and the outbox --------------------------------------------------------------


async def write_without_a_relay(database: object, count: int, at: datetime) -> None:
    """Incidents written by a process that died before its relay published them."""
    incidents = Incidents(
        repo=IncidentRepository(database),
        groups=GroupRepository(database),
        next_number=lambda: next_number(database, "incident"),
        policy=Policy(),
    )
    for i in range(count):
        command = OpenIncident(title=f"disk full {i}", requester="mon", impact=2, urgency=2)
        await handlers.record(incidents, command, now=at)


async def test_an_incidents_app_exposes_request_histograms_and_outbox_gauges(
    signing_key: str, mongo_url: str, kafka_bootstrap: str, mongo_db: object, auth: Auth
) -> None:
    written = datetime.now(UTC) - timedelta(minutes=10)
    await write_without_a_relay(mongo_db, 5, written)
    for gauge in (OUTBOX_PENDING, OUTBOX_OLDEST_AGE):  # only this app's scan may set them
        with contextlib.suppress(KeyError):
            gauge.remove("incidents")
    settings = incidents_settings(signing_key, mongo_url, kafka_bootstrap, mongo_db.name)
    app = create_app(settings.model_copy(update={"relay_poll_interval": 3.0}))

    async with http_server(app) as client:
        # The start-up scan finds the stranded events, measures them, then publishes them.
        found = await eventually(
            lambda: scrape(client),
            until=lambda s: (
                (s.value("itsm_outbox_pending_events", collection="incidents") or 0) >= 5
            ),
            what="the start-up scan's backlog",
        )
        assert found.value("itsm_outbox_oldest_pending_age_seconds", collection="incidents") >= 600

        created = await client.post(
            "/api/v1/incidents",
            json={"title": "VPN drops", "impact": 2, "urgency": 1},
            headers=auth("alice", "requester"),
        )
        assert created.status_code == 201, created.text
        incident_id = created.json()["id"]
        assert (
            await client.get(f"/api/v1/incidents/{incident_id}", headers=auth("alice", "requester"))
        ).status_code == 200
        missing = await client.get("/api/v1/incidents/INC-nope", headers=auth("alice", "requester"))
        assert missing.status_code == 404

        # Relayed and removed: the next scan finds the outboxes empty.
        drained = await eventually(
            lambda: scrape(client),
            until=lambda s: s.value("itsm_outbox_pending_events", collection="incidents") == 0,
            what="an empty outbox at a later scan",
        )

    assert drained.value("itsm_outbox_oldest_pending_age_seconds", collection="incidents") == 0
    timed = {"service": "incidents"}
    post = {**timed, "method": "POST", "route": "/api/v1/incidents", "status": "201"}
    get = {**timed, "method": "GET", "route": "/api/v1/incidents/{incident_id}"}
    assert (drained.value("itsm_http_request_duration_seconds_count", **post) or 0) >= 1
    assert (
        drained.value("itsm_http_request_duration_seconds_count", **get, status="200") or 0
    ) >= 1
    assert (
        drained.value("itsm_http_request_duration_seconds_count", **get, status="404") or 0
    ) >= 1
    assert (drained.value("itsm_http_requests_total", **post) or 0) >= 1
    routes = {
        labels["route"]
        for labels in drained.series("itsm_http_request_duration_seconds_bucket")
        if labels["service"] == "incidents"
    }
    assert not any(incident_id in route or "INC-nope" in route for route in routes), routes
    assert drained.value("itsm_outbox_published_total", collection="incidents") >= 6


# -- a Kafka consumer's lag -------------------------------------------------------------------------


def lag(group: str, topic: str) -> float | None:
    return REGISTRY.get_sample_value(
        "itsm_consumer_lag", {"group": group, "topic": topic, "partition": "0"}
    )


async def test_a_kafka_consumer_reports_its_lag_per_partition(
    kafka_bus: KafkaBus, unique: str
) -> None:
    topic, group = f"test.metrics-lag.{unique}", f"metrics-lag-{unique}"
    await kafka_bus.ensure_topics([TopicSpec(topic, 1)])
    now = datetime.now(UTC)
    await kafka_bus.publish(topic, [
        Envelope(type="itsm.test.happened.v1", source="/tests", subject=f"k{i}", sequence=1,
                 data={"n": i}, time=now)
        for i in range(1200)
    ])  # fmt: skip
    seen_lag: list[float | None] = []

    async def handler(envelope: Envelope) -> None:
        seen_lag.append(lag(group, topic))  # as reported after the previous batch

    subscription = await kafka_bus.subscribe(group, [topic], handler)
    try:
        await eventually(
            lambda: _value(subscription.processed), until=lambda n: n == 1200, what="every record"
        )
        # A fetch returns at most 500 records: after the first batches, some were still ahead.
        assert max(v for v in seen_lag if v is not None) > 0
        assert all(v is None or 0 <= v < 1200 for v in seen_lag)
        await eventually(lambda: _value(lag(group, topic)), until=lambda v: v == 0, what="lag 0")
        page = Scrape(generate_latest(REGISTRY).decode())  # what /metrics serves
        assert {"group": group, "topic": topic, "partition": "0"} in page.series(
            "itsm_consumer_lag"
        )
    finally:
        await subscription.stop()
    assert lag(group, topic) is None  # a stopped consumer reports no partition


async def _value(value: object) -> object:
    return value


# -- the SLA worker's own metrics port --------------------------------------------------------------


@pytest.mark.timeout(150)
async def test_an_sla_worker_serves_open_timers_alerts_lag_and_dead_letters(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    await ensure_platform_topics(kafka_bootstrap)
    run = run_id()
    app_id = f"itsm-sla-metrics-{run}"
    partitions = await partition_count(kafka_bootstrap, Topic.INCIDENTS)
    port = free_port()
    env = worker_env(
        kafka_bootstrap, app_id, partitions=partitions,
        targets={"P1": {"first_response": 2}}, data_dir=tmp_path / "data",
    )  # fmt: skip
    env |= {
        "ITSM_SLA_METRICS_PORT": str(port),
        "ITSM_SLA_METRICS_HOST": "127.0.0.1",
        "ITSM_SLA_METRICS_INTERVAL": "0.5",
    }
    incidents = str(Topic.INCIDENTS)
    async with (
        sla_workers(kafka_bootstrap, app_id) as workers,
        tail(kafka_bootstrap, Topic.SLA) as sla,
        incident_feed(kafka_bootstrap) as feed,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client,
    ):
        worker = SlaWorker("metrics", env, tmp_path / "worker.log")
        workers.append(worker)
        await worker.start()
        await wait_until_answering(sla, feed, workers, f"probe-{run}", partitions)

        def metric(name: str, **labels: str) -> Callable[[Scrape], float]:
            return lambda s: s.value(name, **labels) or 0.0

        open_timers = metric("itsm_sla_open_timers")
        breaches = metric("itsm_sla_alerts_total", alert="breach", metric="first_response", priority="P1")  # fmt: skip
        warnings = metric("itsm_sla_alerts_total", alert="warning", metric="first_response", priority="P1")  # fmt: skip
        dead = metric("itsm_dead_lettered_records_total", source_topic=incidents, group=app_id)

        async def page() -> Scrape:
            worker.check_alive()
            return await scrape(client)

        before = await page()
        tickets = [f"MET-{run}-{i}" for i in range(3)]
        for ticket in tickets:
            await feed.create(ticket, datetime.now(UTC), "P1")
        opened = await eventually(
            page, until=lambda s: open_timers(s) >= open_timers(before) + 3, what="3 more open timers"
        )  # fmt: skip
        breached = await eventually(
            page, until=lambda s: breaches(s) >= breaches(before) + 3, timeout=20, what="3 breaches"
        )  # fmt: skip
        assert warnings(breached) >= warnings(before) + 3  # 50 %, 75 %, 90 % came first
        assert open_timers(breached) >= open_timers(opened)  # resolution clocks still run

        for ticket in tickets:  # every clock stops: nothing left to fall due
            await feed.resolve(ticket, datetime.now(UTC))
        await eventually(
            page, until=lambda s: open_timers(s) <= open_timers(breached) - 3, what="timers closed"
        )  # fmt: skip

        poison = await feed.producer.send_and_wait(
            Topic.INCIDENTS, b"\x00not a cloudevent", key=f"MET-{run}-poison".encode()
        )
        last = await eventually(
            page, until=lambda s: dead(s) >= dead(before) + 1, what="the dead letter counted"
        )
        lagging = {
            int(labels["partition"])
            for labels in last.series("itsm_consumer_lag")
            if labels["group"] == app_id and labels["topic"] == incidents
        }
        assert lagging == set(range(partitions))  # the only worker owns every partition
        assert last.value("itsm_consumer_lag", group=app_id, topic=incidents) is not None
        assert poison.partition in lagging
