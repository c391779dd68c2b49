"""End to end on the real local Kafka broker: a worker process sees an incident's whole life
(created, assigned, replied, resolved, rated) and a change completion, and the KPI snapshots it
publishes on `itsm.sla.kpis.v1` summarize to the expected figures.

As in test_breach_on_real_broker.py, the worker has its own app id (consumer group, changelog,
due topic; deleted afterwards), starts at the end of the shared topics, and the test only reads
the partials of its own dims (a service name unique to the run). It also prints how long the snapshots took.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from services.sla.domain.kpi_partials import KpiPartial, summarize
from shared.contracts.topics import Topic
from shared.ids import uuid7
from tests.faust.test_breach_on_real_broker import (
    Incidents,
    delete_topics_of,
    partition_count,
    wait_until_ready,
    worker,
)
from tests.faust.test_kpis import change_completed, lifecycle
from tests.support.kafka import ensure_platform_topics, tail
from tests.support.sla_workers import latest_partials

pytestmark = [pytest.mark.infra, pytest.mark.timeout(90)]
M = timedelta(minutes=1)


@pytest.fixture
def bootstrap() -> str:
    return os.environ.get("ITSM_KAFKA_BOOTSTRAP", "127.0.0.1:9092")


async def test_an_incident_lifecycle_and_a_change_reach_the_kpi_topic(
    bootstrap: str, tmp_path: Path
) -> None:
    await ensure_platform_topics(bootstrap)
    run = uuid7().replace("-", "")[-12:]
    app_id, service = f"itsm-sla-kpi-test-{run}", f"svc-{run}"
    env = {
        **os.environ,
        "ITSM_KAFKA_BOOTSTRAP": bootstrap,
        "ITSM_SLA_APP_ID": app_id,
        "ITSM_SLA_AUTO_OFFSET_RESET": "latest",
        "ITSM_SLA_TOPIC_PARTITIONS": str(await partition_count(bootstrap, Topic.INCIDENTS)),
        "ITSM_SLA_KPI_PUBLISH_INTERVAL": "0.2",
        # Others' events on the shared topic move the partitions' event-time clocks to now:
        # a grace of 2 h keeps this run's 40-minute-old events in their window.
        "ITSM_SLA_KPI_GRACE": "7200",
        "ITSM_SLA_DATA_DIR": str(tmp_path / "data"),
        "ITSM_LOG_JSON": "false",
    }
    log = tmp_path / "worker.log"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    now = datetime.now(UTC)

    def mine(records: list[Any]) -> list[KpiPartial]:
        return latest_partials(records, service)

    def complete(records: list[Any]) -> bool:
        hourly = [p for p in mine(records) if p.granularity == "hour"]
        summary = summarize(hourly)
        return summary.csat_count == 1 and summary.changes_completed == 1

    try:
        async with (
            tail(bootstrap, Topic.SLA) as sla,
            tail(bootstrap, Topic.SLA_KPIS) as kpis,
            worker(env, log) as proc,
        ):
            await wait_until_ready(sla, Incidents(producer), proc, run, log)
            # The lifecycle in event time, ending now: 5 min to respond, 30 to resolve.
            for rec in lifecycle(f"KPI-{run}", start=now - 40 * M, service=service):
                await producer.send_and_wait(
                    Topic.INCIDENTS, rec.value, key=rec.key, headers=list(rec.headers)
                )
            change = change_completed(f"CHG-{run}", "successful", now, service=service)
            await producer.send_and_wait(
                Topic.CHANGES, change.value, key=change.key, headers=list(change.headers)
            )
            sent = time.monotonic()
            await kpis.collect(complete, timeout=30.0, what="the run's KPI snapshots")
            took = time.monotonic() - sent
    finally:
        await producer.stop()
        await delete_topics_of(bootstrap, app_id)

    summary = summarize(p for p in mine(kpis.records) if p.granularity == "hour")
    print(f"\nsnapshots complete {took:.2f}s after the last event; {json.dumps(summary.to_dict())}")
    assert (summary.opened, summary.resolved, summary.backlog) == (1, 1, 0)
    assert summary.first_response_mean == 300.0
    assert summary.mttr_mean == 1800.0
    assert (summary.csat_average, summary.fcr_percent) == (5.0, 100.0)
    assert (summary.sla_met, summary.sla_compliance_percent) == (2, 100.0)
    assert (summary.changes_completed, summary.change_success_percent) == (1, 100.0)
    assert summary.late_events == 0
