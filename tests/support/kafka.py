"""Reading what landed on a real Kafka topic, from the moment a test starts watching."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from shared.bus.kafka import KafkaBus
from shared.bus.topics import platform_topics
from shared.contracts.topics import Topic
from shared.settings import ServiceSettings
from tests.support.polling import eventually


class TopicTail:
    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer
        self.records: list[Any] = []

    async def _poll(self) -> list[Any]:
        batches = await self._consumer.getmany(timeout_ms=200)
        for records in batches.values():
            self.records.extend(records)
        return self.records

    async def collect(
        self, until: Callable[[list[Any]], bool], *, timeout: float = 30.0, what: str = "records"
    ) -> list[Any]:
        return await eventually(self._poll, until=until, timeout=timeout, interval=0, what=what)


async def ensure_platform_topics(bootstrap: str) -> None:
    bus = KafkaBus(bootstrap, client_id="tests-topics", start_timeout=15)
    await bus.start()
    try:
        await bus.ensure_topics(platform_topics(ServiceSettings().topic_partitions))
    finally:
        await bus.stop()


@asynccontextmanager
async def tail(
    bootstrap: str, topic: str, *, from_beginning: bool = False
) -> AsyncIterator[TopicTail]:
    """Assign every partition of `topic` at its current end, so only new records are seen (or,
    `from_beginning`, at its start: everything the topic holds)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            if topic in set(Topic):  # a fresh broker: create the platform's topics, as services do
                await ensure_platform_topics(bootstrap)
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        assert partitions, f"topic {topic} does not exist"
        assignment = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assignment)
        if from_beginning:
            await consumer.seek_to_beginning(*assignment)
        else:
            await consumer.seek_to_end(*assignment)
        for tp in assignment:  # resolve the end offsets now, before the test produces
            await consumer.position(tp)
        yield TopicTail(consumer)
    finally:
        await consumer.stop()


async def group_lag(bootstrap: str, group: str, topic: str) -> int:
    """Records of `topic` that consumer group `group` has not committed yet (all of a partition
    it has no offset for)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        await consumer._client.force_metadata_update()  # partitions_for_topic reads the cache
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        assert partitions, f"topic {topic} does not exist"
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
        await admin.close()
    done = {tp: meta.offset for tp, meta in committed.items()}
    return sum(end - max(done.get(tp, 0), 0) for tp, end in ends.items())
