"""A producer the broker has refused for good is replaced, and nothing is lost.

After a broker restart lost a producer's state, the broker answered the incidents relay's sends
with OutOfOrderSequenceNumber; aiokafka's idempotent producer stops at that error, so every later
send failed too and the relay never published again (found by the fault run). Here the broker
is made to refuse the same way: the producer's next sequence number for the partition is moved
past the one the broker expects."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import OutOfOrderSequenceNumber

from shared.bus.kafka import KafkaBus
from shared.bus.port import TopicSpec
from shared.contracts import Envelope
from shared.contracts.codec import KafkaRecord, decode
from tests.support.kafka import tail

pytestmark = pytest.mark.infra


def event(n: int) -> Envelope:
    return Envelope(
        type="itsm.test.happened.v1",
        source="/tests",
        subject="ticket-1",
        sequence=n,
        data={"n": n},
        time=datetime(2026, 12, 5, tzinfo=UTC),
    )


async def test_a_producer_refused_out_of_sequence_is_replaced_and_the_retry_is_published(
    kafka_bus: KafkaBus, kafka_bootstrap: str, unique: str
) -> None:
    bus = kafka_bus
    topic = f"test.{unique}.producer"
    await bus.ensure_topics([TopicSpec(topic, 1)])
    async with tail(kafka_bootstrap, topic) as records:
        await bus.publish(topic, [event(1)])
        refused = bus.producer
        # What a broker that lost the producer's state sees: a sequence it did not expect.
        refused._txn_manager.increment_sequence_number(TopicPartition(topic, 0), 5)

        with pytest.raises(OutOfOrderSequenceNumber):
            await bus.publish(topic, [event(2)])
        assert bus.producer is not refused, "the refused producer is still in use"

        await bus.publish(topic, [event(2)])  # the caller's retry (the relay's next round)
        await bus.publish(topic, [event(3)])
        got = await records.collect(lambda rs: len(rs) >= 3, what="three records")
    sequences = [decode(KafkaRecord(r.key, r.value, tuple(r.headers))).sequence for r in got]
    assert sequences == [1, 2, 3]  # the refused send wrote nothing; its retry went out once
