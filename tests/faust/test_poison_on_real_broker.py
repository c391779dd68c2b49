"""Poison records on the real broker: a worker process dead-letters what it cannot read (not a
CloudEvent, a payload that breaks its contract, an incident event version it does not know) with
the original bytes and the dlq-* headers, and goes on with the next record of the partition."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.bus.port import DeadLetterHeaders
from shared.contracts.codec import KafkaRecord
from shared.contracts.topics import Topic
from tests.faust.events import created, record
from tests.support.kafka import ensure_platform_topics, tail
from tests.support.sla_workers import (
    SlaWorker,
    decoded,
    facts_of,
    incident_feed,
    partition_count,
    run_id,
    sla_workers,
    wait_until_answering,
    worker_env,
)

pytestmark = [pytest.mark.infra, pytest.mark.timeout(60)]


@pytest.fixture
def bootstrap() -> str:
    return os.environ.get("ITSM_KAFKA_BOOTSTRAP", "127.0.0.1:9092")


def poison_records(ticket_id: str, at: datetime) -> dict[str, KafkaRecord]:
    valid = record(created(ticket_id, at), 1, at)
    key = ticket_id.encode()
    invalid_payload = KafkaRecord(
        key, json.dumps({"incident_id": ticket_id}).encode(), valid.headers
    )
    future_version = KafkaRecord(
        key,
        valid.value,
        tuple(
            (name, b"itsm.incident.created.v99" if name == "ce_type" else value)
            for name, value in valid.headers
        ),
    )
    return {
        "not a CloudEvent": KafkaRecord(key, b"\x00\xffnot a cloudevent", ()),
        "invalid itsm.incident.created.v1 data": invalid_payload,
        "itsm.incident.created.v99": future_version,
    }


async def test_poison_records_are_dead_lettered_and_the_next_record_is_processed(
    bootstrap: str, tmp_path: Path
) -> None:
    await ensure_platform_topics(bootstrap)
    run = run_id()
    app_id = f"itsm-sla-poison-{run}"
    partitions = await partition_count(bootstrap, Topic.INCIDENTS)
    ticket = f"SLA-{run}"
    opened = datetime.now(UTC)
    poison = poison_records(ticket, opened)
    env = worker_env(
        bootstrap, app_id, partitions=partitions, targets={}, data_dir=tmp_path / "data"
    )

    async with (
        incident_feed(bootstrap) as feed,
        tail(bootstrap, Topic.SLA) as sla,
        tail(bootstrap, Topic.DEAD_LETTER) as dead,
        sla_workers(bootstrap, app_id) as workers,
    ):
        worker = SlaWorker("w", env, tmp_path / "worker.log")
        workers.append(worker)
        await worker.start()
        await wait_until_answering(sla, feed, workers, f"probe-{run}", partitions)

        offsets: dict[str, tuple[int, int]] = {}
        for reason, rec in poison.items():
            meta = await feed.producer.send_and_wait(
                Topic.INCIDENTS, rec.value, key=rec.key, headers=list(rec.headers)
            )
            offsets[reason] = (meta.partition, meta.offset)
        partition = await feed.create(ticket, opened)  # right behind them: same key, partition

        def mine(records: list[Any]) -> list[Any]:
            return [r for r in records if r.key == ticket.encode()]

        await dead.collect(lambda rs: len(mine(rs)) >= len(poison), what="the dead letters")
        await sla.collect(lambda _: len(facts_of(sla, ticket)) >= 2, what="the SLA facts")
        worker.check_alive()

    assert {p for p, _ in offsets.values()} == {partition}  # one partition, in this order
    letters = mine(dead.records)
    assert len(letters) == len(poison)
    for (reason, sent), letter in zip(poison.items(), letters, strict=True):
        headers = dict(letter.headers)
        assert letter.value == sent.value  # the original bytes
        assert headers[DeadLetterHeaders.TOPIC] == Topic.INCIDENTS.encode()
        assert headers[DeadLetterHeaders.PARTITION] == str(partition).encode()
        assert headers[DeadLetterHeaders.OFFSET] == str(offsets[reason][1]).encode()
        assert headers[DeadLetterHeaders.GROUP] == app_id.encode()
        assert reason in headers[DeadLetterHeaders.ERROR].decode(), headers
        assert all(headers[name] == value for name, value in sent.headers)  # original headers
    facts = decoded(facts_of(sla, ticket))
    assert [(f.type, f.data["metric"], f.sequence) for f in facts] == [
        ("itsm.sla.started.v1", "first_response", 1),
        ("itsm.sla.started.v1", "resolution", 2),
    ]
