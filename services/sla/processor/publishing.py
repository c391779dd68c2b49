"""Where the processor's records go: SLA facts, due records and dead letters.

`RecordSink` is the seam between the processing logic and Faust: `FaustSink` sends through the
app's declared topics and waits for the broker's acknowledgement; the agent tests put a
recording sink in its place (Faust's test context has no broker).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from services.sla.domain import SlaState
from shared.contracts.codec import KafkaRecord, encode
from shared.contracts.envelope import Envelope
from shared.contracts.sla import SlaEvent

SOURCE = "/itsm/sla"
_FACT_IDS = uuid.UUID("9d3c2b7e-2f6a-4c1e-8b0d-5a7e6f1c3d29")  # this platform's SLA facts
Header = tuple[str, bytes]


class RecordSink(Protocol):
    async def send(self, topic: str, record: KafkaRecord, partition: int | None = None) -> None:
        """Publish one record and return once the broker acknowledged it."""

    async def send_many(
        self, topic: str, records: Sequence[tuple[KafkaRecord, int | None]]
    ) -> None:
        """Publish records (each with its partition, or None for the key's) and return once
        every one is acknowledged."""


class QueueingSink(RecordSink, Protocol):
    """A sink that can also queue records without waiting (the wake-up timer uses it when the
    sink has it; otherwise it waits with `send_many`)."""

    async def start_many(
        self, topic: str, records: Sequence[tuple[KafkaRecord, int | None]]
    ) -> list[Awaitable[Any]]:
        """Queue records on the producer; their delivery futures."""


class FaustSink:
    """Sends through Faust topics (the app's producer: acks=all). `producer` gives the aiokafka
    producer under the app's, for `queue_batch`."""

    def __init__(
        self, topics: Mapping[str, Any], producer: Callable[[], Any] | None = None
    ) -> None:
        self._topics = dict(topics)
        self._producer = producer

    async def _start(self, topic: str, record: KafkaRecord, partition: int | None) -> Any:
        channel = self._topics[topic]
        # topic.send queues the record on the producer and returns the delivery future.
        return await channel.send(
            key=record.key, value=record.value, headers=list(record.headers), partition=partition
        )

    async def send(self, topic: str, record: KafkaRecord, partition: int | None = None) -> None:
        await (await self._start(topic, record, partition))

    async def send_many(
        self, topic: str, records: Sequence[tuple[KafkaRecord, int | None]]
    ) -> None:
        pending = await self.start_many(topic, records)
        if pending:
            await asyncio.gather(*pending)

    async def start_many(
        self, topic: str, records: Sequence[tuple[KafkaRecord, int | None]]
    ) -> list[Awaitable[Any]]:
        return [await self._start(topic, record, partition) for record, partition in records]

    async def queue_batch(
        self, topic: str, records: Sequence[tuple[KafkaRecord, int | None]]
    ) -> list[Awaitable[Any]]:
        """Queue records in whole batches, one chain per partition, on the app's aiokafka
        producer (the same client, so its flush before a commit covers them): the firing of
        prepared alerts (prepared.py). A tenth of the cost of a send through a Faust topic,
        which wraps each record in a message, a span and a partition lookup. Returns one
        delivery per partition."""
        if self._producer is None:
            return await self.start_many(topic, records)
        producer = self._producer()  # the aiokafka client
        await producer.partitions_for(topic)  # the metadata the partitioner needs
        by_partition: dict[int, list[KafkaRecord]] = {}
        for record, partition in records:
            if partition is None:  # the key's partition, as a send through the topic picks it
                partition = producer._partition(topic, None, None, None, record.key, None)
            by_partition.setdefault(partition, []).append(record)
        return [
            asyncio.ensure_future(_send_batches(producer, topic, partition, batch))
            for partition, batch in by_partition.items()
        ]


async def _send_batches(
    producer: Any, topic: str, partition: int, records: list[KafkaRecord]
) -> None:
    """Append `records` to as many of the producer's batches as they need, submit each, and
    return once all are delivered (aiokafka submits a partition's batches one after another)."""
    deliveries = []
    batch = producer.create_batch()
    for record in records:
        headers = list(record.headers)
        if batch.append(key=record.key, value=record.value, timestamp=None, headers=headers):
            continue
        deliveries.append(await producer.send_batch(batch, topic, partition=partition))
        batch = producer.create_batch()
        if not batch.append(key=record.key, value=record.value, timestamp=None, headers=headers):
            raise ValueError(f"a record of {len(record.value)} bytes exceeds a producer batch")
    deliveries.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*deliveries)


def fact_envelopes(
    state: SlaState, facts: Sequence[SlaEvent], *, traceparent: str | None = None
) -> list[Envelope]:
    """The facts as CloudEvents numbered by the SLA state's counter: `state` is the state after
    them, so they are `state.version - len(facts) + 1 … state.version`, in order. Replaying the
    same input from the same stored state numbers them the same, so consumers drop repeats;
    and each fact's id is its ticket and number (`fact_id`), so a repeat is the same event to a
    consumer that goes by id too (notify keys its escalations by the breach's id: a breach sent
    again after a crash, with a new id, paged twice in the fault run)."""
    first = state.version - len(facts) + 1
    return [
        Envelope(
            id=fact_id(state.ticket_id, first + i),
            type=fact.event_type,
            source=SOURCE,
            subject=state.ticket_id,
            sequence=first + i,
            data=fact.model_dump(mode="json"),
            time=fact.occurred_at,
            traceparent=traceparent,
        )
        for i, fact in enumerate(facts)
    ]


def fact_id(ticket_id: str, sequence: int) -> str:
    """The id of a ticket's `sequence`-th SLA fact: the same each time that fact is sent."""
    return str(uuid.uuid5(_FACT_IDS, f"{ticket_id}\n{sequence}"))


def fact_records(envelopes: Sequence[Envelope]) -> list[tuple[KafkaRecord, int | None]]:
    return [(encode(envelope), None) for envelope in envelopes]


def normalise_headers(raw: Any) -> tuple[Header, ...]:
    """Kafka headers as (name, bytes) pairs, from aiokafka's tuples or a test's dict."""
    if not raw:
        return ()
    items = raw.items() if isinstance(raw, Mapping) else raw
    return tuple(
        (str(k), v if isinstance(v, bytes) else str(v).encode()) for k, v in items if v is not None
    )
