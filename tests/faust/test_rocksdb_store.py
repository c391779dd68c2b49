"""The production table store, `ITSM_SLA_STORE=rocksdb://` (faust-streaming's RocksDB driver on
`rocksdict`), with a real worker process on the real broker: the state is written to disk under
the data dir, and a restarted worker finds it there — even with the changelog emptied — and
measures a ticket created before the restart on its original clock."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from rocksdict import AccessType, Options, Rdict

from services.sla.processor.app import TABLE
from services.sla.processor.catalog import default_catalog
from services.sla.processor.codec import from_table_value
from services.sla.processor.targets import TargetRefs
from shared.contracts.topics import Topic
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

pytestmark = [pytest.mark.infra, pytest.mark.timeout(90)]


@pytest.fixture
def bootstrap() -> str:
    return os.environ.get("ITSM_KAFKA_BOOTSTRAP", "127.0.0.1:9092")


def read_on_disk(data_dir: Path, partition: int, key: str) -> Any:
    """The table value of `key` in the RocksDB database of `partition`, read straight from disk
    (Faust keeps one database per table partition: `<data dir>/v1/tables/sla-state-<p>.db`)."""
    [path] = data_dir.glob(f"v*/tables/{TABLE}-{partition}.db")
    db = Rdict(str(path), options=Options(raw_mode=True), access_type=AccessType.read_only())
    try:
        raw = db.get(json.dumps(key).encode())
    finally:
        db.close()
    return None if raw is None else json.loads(raw)


async def empty_the_changelog(bootstrap: str, app_id: str) -> int:
    """Delete every record of the table's changelog, so that what a restarted worker knows can
    only come from its disk. (A compacted topic refuses record deletion: the test switches the
    changelog to `delete` first.) Returns how many records were deleted."""
    topic = f"{app_id}-{TABLE}-changelog"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        [described] = await admin.describe_topics([topic])
        tps = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"cleanup.policy": "delete"})]
        )
        await admin.delete_records({tp: RecordsToDelete(ends[tp]) for tp in tps})
        assert await consumer.beginning_offsets(tps) == ends
    finally:
        await consumer.stop()
        await admin.close()
    return sum(ends[tp] - starts[tp] for tp in tps)


async def test_rocksdb_keeps_the_table_on_disk_across_a_restart(
    bootstrap: str, tmp_path: Path
) -> None:
    await ensure_platform_topics(bootstrap)
    run = run_id()
    app_id = f"itsm-sla-rocksdb-{run}"
    partitions = await partition_count(bootstrap, Topic.INCIDENTS)
    ticket = f"SLA-{run}"
    opened = datetime.now(UTC).replace(microsecond=0)
    data_dir = tmp_path / "data"
    env = worker_env(
        bootstrap, app_id, partitions=partitions, targets={}, data_dir=data_dir,
        store="rocksdb://",
    )  # fmt: skip

    async with (
        incident_feed(bootstrap) as feed,
        tail(bootstrap, Topic.SLA) as sla,
        sla_workers(bootstrap, app_id) as workers,
    ):
        worker = SlaWorker("w", env, tmp_path / "worker.log")
        workers.append(worker)
        await worker.start()
        await wait_until_answering(sla, feed, workers, f"probe-{run}-1", partitions)
        partition = await feed.create(ticket, opened)
        await sla.collect(lambda _: len(facts_of(sla, ticket)) == 2, what="the started facts")
        await worker.stop()

        on_disk = read_on_disk(data_dir, partition, ticket)
        assert on_disk is not None, "the ticket's state is not in the RocksDB database"
        # The worker ran on the default catalog: its timers' targets are references into it.
        assert from_table_value(on_disk, TargetRefs(default_catalog())).applied_sequence == 1
        assert await empty_the_changelog(bootstrap, app_id) > 0

        await worker.start()
        await wait_until_answering(sla, feed, workers, f"probe-{run}-2", partitions)
        await feed.resolve(ticket, opened + timedelta(minutes=5))
        await sla.collect(lambda _: len(facts_of(sla, ticket)) >= 4, what="the outcomes")

    found = decoded(facts_of(sla, ticket))
    # Measured on the clock stored before the restart: the state came from the disk.
    assert [(f.sequence, f.type, f.data["metric"], f.data["elapsed_seconds"]) for f in found] == [
        (1, "itsm.sla.started.v1", "first_response", 0),
        (2, "itsm.sla.started.v1", "resolution", 0),
        (3, "itsm.sla.met.v1", "first_response", 300),
        (4, "itsm.sla.met.v1", "resolution", 300),
    ]
