"""End to end on the real local Kafka broker: a worker process (`python -m
services.sla.processor.worker`) with a 2-second P1 first-response target sees a created
incident, and its breach reaches the SLA topic shortly after the deadline; so do the breaches of
a burst of tickets opened at the same instant (prepared ahead and sent in one batch per
partition, services/sla/processor/prepared.py), each once, on its ticket's partition.

The platform topics are shared with whoever else uses the broker, so the worker gets its own
Faust app id (its own consumer group, table changelog and due topic, deleted afterwards), starts
at the end of the incident topic, and the test only looks at its own ticket ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from shared.contracts.codec import decode
from shared.contracts.topics import Topic
from shared.ids import uuid7
from tests.faust.events import created, record
from tests.support.kafka import TopicTail, ensure_platform_topics, tail
from tests.support.sla_workers import delete_topics_of, partition_count

pytestmark = [pytest.mark.infra, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]
TARGET = timedelta(seconds=2)
BURST = 200


@pytest.fixture
def bootstrap() -> str:
    return os.environ.get("ITSM_KAFKA_BOOTSTRAP", "127.0.0.1:9092")


@contextlib.asynccontextmanager
async def worker(env: dict[str, str], log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.sla.processor.worker", "worker", "--loglevel=info",
            cwd=ROOT, env=env, stdout=out, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            yield proc
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)  # Faust's graceful stop: leaves the group
                try:
                    await asyncio.wait_for(proc.wait(), 15)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


class Incidents:
    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer

    async def create(self, ticket_id: str, at: datetime, priority: Any = "P1") -> None:
        rec = record(created(ticket_id, at, priority=priority), 1, at)
        await self.producer.send_and_wait(
            Topic.INCIDENTS, rec.value, key=rec.key, headers=list(rec.headers)
        )


def log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


def facts_of(sla: TopicTail, prefix: str) -> list[Any]:
    return [r for r in sla.records if (r.key or b"").decode().startswith(prefix)]


async def wait_until_ready(
    sla: TopicTail, incidents: Incidents, proc: Any, run: str, log: Path
) -> float:
    """Until the worker answers: it starts at the end of the topic once it has its partitions,
    so probe tickets are created until one's started facts come back."""
    started = time.monotonic()
    for n in range(30):
        if proc.returncode is not None:
            pytest.fail(f"the worker exited ({proc.returncode}):\n{log_tail(log)}")
        await incidents.create(f"probe-{run}-{n}", datetime.now(UTC), priority="P3")
        with contextlib.suppress(AssertionError):
            await sla.collect(lambda _: bool(facts_of(sla, f"probe-{run}")), timeout=1.0)
            return time.monotonic() - started
    pytest.fail(f"the worker never answered a probe:\n{log_tail(log)}")


async def test_a_first_response_breach_reaches_the_sla_topic_soon_after_the_deadline(
    bootstrap: str, tmp_path: Path
) -> None:
    await ensure_platform_topics(bootstrap)  # on a fresh broker this test may run first
    run = uuid7().replace("-", "")[-12:]
    app_id = f"itsm-sla-test-{run}"
    env = {
        **os.environ,
        "ITSM_KAFKA_BOOTSTRAP": bootstrap,
        "ITSM_SLA_APP_ID": app_id,
        "ITSM_SLA_AUTO_OFFSET_RESET": "latest",
        "ITSM_SLA_TARGETS": json.dumps({"P1": {"first_response": TARGET.total_seconds()}}),
        "ITSM_SLA_TOPIC_PARTITIONS": str(await partition_count(bootstrap, Topic.INCIDENTS)),
        "ITSM_SLA_DATA_DIR": str(tmp_path / "data"),
        "ITSM_LOG_JSON": "false",
    }
    log = tmp_path / "worker.log"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        async with tail(bootstrap, Topic.SLA) as sla, worker(env, log) as proc:
            incidents = Incidents(producer)
            ready_after = await wait_until_ready(sla, incidents, proc, run, log)

            ticket = f"SLA-{run}"
            opened = datetime.now(UTC)
            await incidents.create(ticket, opened)
            deadline = opened + TARGET
            burst = [f"BURST-{run}-{n}" for n in range(BURST)]
            for other in burst:  # all due at the same instant as `ticket`
                await incidents.create(other, opened)

            def breached(records: list[Any]) -> bool:
                return any(
                    dict(r.headers).get("ce_type") == b"itsm.sla.breached.v1"
                    for r in facts_of(sla, ticket)
                )

            def burst_breached(records: list[Any]) -> bool:
                return len(breaches_of(sla, f"BURST-{run}-")) >= BURST

            await sla.collect(breached, timeout=15.0, what=f"the breach of {ticket}")
            seen = datetime.now(UTC)
            await sla.collect(burst_breached, timeout=15.0, what="the burst's breaches")
    finally:
        await producer.stop()
        await delete_topics_of(bootstrap, app_id)

    facts = [decode(r) for r in facts_of(sla, ticket)]
    types = [f.type.removeprefix("itsm.sla.").removesuffix(".v1") for f in facts]
    [breach] = [f for f in facts if f.type == "itsm.sla.breached.v1"]
    [breach_record] = [r for r in facts_of(sla, ticket) if decode(r).id == breach.id]
    produced = datetime.fromtimestamp(breach_record.timestamp / 1000, UTC)
    print(
        f"\nworker answered after {ready_after:.2f}s; facts {types}"
        f"\nbreach of a {TARGET.total_seconds():.0f}s first-response target: "
        f"published {(produced - deadline).total_seconds():+.3f}s and seen by a consumer "
        f"{(seen - deadline).total_seconds():+.3f}s after the deadline"
    )
    assert types[:2] == ["started", "started"] and types.count("breached") == 1
    assert breach.data["metric"] == "first_response"
    assert breach.time == deadline  # stamped with the deadline itself
    assert [f.sequence for f in facts] == list(range(1, len(facts) + 1))
    assert timedelta(0) <= produced - deadline < timedelta(seconds=2)

    burst_breaches = breaches_of(sla, f"BURST-{run}-")
    assert sorted(r.key.decode() for r in burst_breaches) == sorted(burst)  # each once
    started_on = {r.key: r.partition for r in facts_of(sla, f"BURST-{run}-")}
    for r in burst_breaches:
        assert r.partition == started_on[r.key]  # the ticket's partition, as its other facts
        assert decode(r).time == deadline
        assert r.timestamp / 1000 >= deadline.timestamp()  # not before its deadline


def breaches_of(sla: TopicTail, prefix: str) -> list[Any]:
    return [
        r
        for r in facts_of(sla, prefix)
        if dict(r.headers).get("ce_type") == b"itsm.sla.breached.v1"
    ]
