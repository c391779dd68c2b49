"""On the real local Kafka broker: KPI plans the worker held in memory (kpis.py) are not lost
when it is killed with SIGKILL.

A worker that never flushes on its own (a batch larger than the run, no KPI timer run within it)
applies five incidents' lives, interleaved kind by kind, so each partition's last plans (the
ratings) are held when it dies. A change completion (not held) is the marker: once the group's
commit has passed it, a commit round came after every incident record was processed. Then the
group's commits on the incident partitions must still be below the run's last records, and a
restarted worker, reading them again, publishes snapshots with every rating counted, and then
commits past them.
"""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from services.sla.domain.kpi_partials import KpiPartial, summarize
from shared.contracts.topics import Topic
from tests.faust.events import created, record
from tests.faust.test_breach_on_real_broker import (
    Incidents,
    facts_of,
    wait_until_ready,
    worker,
)
from tests.faust.test_kpis import change_completed, lifecycle
from tests.support.kafka import ensure_platform_topics, tail
from tests.support.polling import eventually
from tests.support.sla_workers import (
    committed_offsets,
    delete_topics_of,
    latest_partials,
    partition_count,
    run_id,
    worker_env,
)

pytestmark = [pytest.mark.infra, pytest.mark.timeout(150)]
M = timedelta(minutes=1)
TICKETS = 5


@pytest.fixture
def bootstrap() -> str:
    return os.environ.get("ITSM_KAFKA_BOOTSTRAP", "127.0.0.1:9092")


async def test_held_kpi_plans_survive_a_kill_9(bootstrap: str, tmp_path: Path) -> None:
    await ensure_platform_topics(bootstrap)
    run = run_id()
    app_id, service = f"itsm-sla-kpi-kill-{run}", f"svc-{run}"
    partitions = await partition_count(bootstrap, Topic.INCIDENTS)
    env = {
        **worker_env(bootstrap, app_id, partitions=partitions, targets={}, data_dir=tmp_path / "d"),
        "ITSM_SLA_KPI_GRACE": "7200",  # others' events move the clocks to now (see the KPI test)
    }
    holding = {**env, "ITSM_SLA_KPI_BATCH": "100000", "ITSM_SLA_KPI_PUBLISH_INTERVAL": "60"}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    now = datetime.now(UTC)
    lives = [
        lifecycle(f"KILL-{run}-{n}", start=now - 40 * M, service=service) for n in range(TICKETS)
    ]
    last_offsets: dict[int, int] = {}

    def mine(records: list[Any]) -> list[KpiPartial]:
        return latest_partials(records, service)

    def all_rated(records: list[Any]) -> bool:
        summary = summarize(p for p in mine(records) if p.granularity == "hour")
        return summary.csat_count == TICKETS and summary.changes_completed == 1

    try:
        async with tail(bootstrap, Topic.SLA) as sla, tail(bootstrap, Topic.SLA_KPIS) as kpis:
            async with worker(holding, tmp_path / "a.log") as first:
                await wait_until_ready(sla, Incidents(producer), first, run, tmp_path / "a.log")
                for kind in range(len(lives[0])):  # created for all, then assigned, ...
                    for life in lives:
                        rec = life[kind]
                        meta = await producer.send_and_wait(
                            Topic.INCIDENTS, rec.value, key=rec.key, headers=list(rec.headers)
                        )
                        last_offsets[meta.partition] = meta.offset
                # A probe ticket behind the run's records in each of their partitions: its
                # facts mean every record before it there was processed.
                for partition in last_offsets:
                    probe = record(created(f"after-{run}-{partition}", now, priority="P3"), 1, now)
                    await producer.send_and_wait(
                        Topic.INCIDENTS, probe.value, key=probe.key, headers=list(probe.headers),
                        partition=partition,
                    )  # fmt: skip
                await sla.collect(
                    lambda _: (
                        {k.decode() for k in (r.key for r in facts_of(sla, f"after-{run}"))}
                        == {f"after-{run}-{p}" for p in last_offsets}
                    ),
                    timeout=30.0,
                    what="the probes behind the ratings",
                )
                change = change_completed(f"CHG-{run}", "successful", now, service=service)
                marker = await producer.send_and_wait(
                    Topic.CHANGES, change.value, key=change.key, headers=list(change.headers)
                )
                marker_tp = TopicPartition(str(Topic.CHANGES), marker.partition)

                async def offsets() -> dict[TopicPartition, int]:
                    return await committed_offsets(bootstrap, app_id)

                commits = await eventually(
                    offsets,
                    until=lambda c: c.get(marker_tp, -1) > marker.offset,
                    timeout=30.0,
                    interval=0.2,
                    what="a commit past the change completion",
                )
                first.send_signal(signal.SIGKILL)
                await first.wait()
            held = {
                p: commits.get(TopicPartition(str(Topic.INCIDENTS), p), 0) for p in last_offsets
            }
            assert all(held[p] <= last for p, last in last_offsets.items()), (held, last_offsets)
            # The ratings were applied (the worker answered every resolution before them) but
            # their KPI plans only held: the restarted worker reads them again.
            async with worker(env, tmp_path / "b.log"):
                await kpis.collect(all_rated, timeout=60.0, what="every rating in the KPIs")
                # Flushed, the restarted worker commits past them: the run's partitions are
                # quiet now, so a commit stuck below a record applied during the seek to the
                # committed offsets (fetching.seek_all_to_committed) would stay there.
                await eventually(
                    offsets,
                    until=lambda c: all(
                        c.get(TopicPartition(str(Topic.INCIDENTS), p), 0) > last
                        for p, last in last_offsets.items()
                    ),
                    timeout=30.0,
                    interval=0.2,
                    what="commits past the run's records",
                )
    finally:
        await producer.stop()
        await delete_topics_of(bootstrap, app_id)

    summary = summarize(p for p in mine(kpis.records) if p.granularity == "hour")
    assert (summary.opened, summary.resolved, summary.backlog) == (TICKETS, TICKETS, 0)
    assert (summary.csat_count, summary.csat_average) == (TICKETS, 5.0)
    assert summary.changes_completed == 1
