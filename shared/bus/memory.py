"""In-memory adapter of the bus port for unit tests and the embedded run mode.

Records are stored encoded, exactly as on Kafka, and go through the same RecordProcessor, so
decoding, dead-lettering and retry behave as they do against the broker. Per-key ordering comes
from a stable hash of the key to a partition; committed offsets survive a consumer's restart.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence

from shared.background import BackgroundTask
from shared.bus.port import Handler, TopicSpec
from shared.bus.processing import RecordProcessor, RetryPolicy, SourcePosition
from shared.contracts.codec import KafkaRecord, encode
from shared.contracts.envelope import Envelope
from shared.telemetry import producer_span

# Takes one raw record and returns once it is applied (or dead-lettered): then it is committed.
RecordHandler = Callable[[KafkaRecord, SourcePosition], Awaitable[None]]


class InMemoryBus:
    def __init__(self, default_partitions: int = 3, retry: RetryPolicy | None = None) -> None:
        self._default_partitions = default_partitions
        self._retry = retry
        self._log: dict[str, list[list[KafkaRecord]]] = {}
        self._committed: dict[tuple[str, str, int], int] = defaultdict(int)
        self._active_groups: set[str] = set()
        self._changed = asyncio.Event()
        self._subscriptions: list[InMemorySubscription] = []

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        for sub in list(self._subscriptions):
            await sub.stop()

    async def ensure_topics(self, topics: Sequence[TopicSpec]) -> None:
        for spec in topics:
            self._log.setdefault(spec.name, [[] for _ in range(spec.partitions)])

    def _partitions(self, topic: str) -> list[list[KafkaRecord]]:
        return self._log.setdefault(topic, [[] for _ in range(self._default_partitions)])

    def records(self, topic: str) -> list[KafkaRecord]:
        """Everything on a topic (all partitions), for tests and the embedded console."""
        return [r for partition in self._partitions(topic) for r in partition]

    async def publish(self, topic: str, envelopes: Sequence[Envelope]) -> None:
        for envelope in envelopes:
            with producer_span(topic, envelope) as traceparent:
                await self.publish_record(topic, encode(envelope.with_traceparent(traceparent)))

    async def publish_record(
        self, topic: str, record: KafkaRecord, partition: int | None = None
    ) -> None:
        """Append to `partition`, or to the key's partition (a stable hash) when None."""
        partitions = self._partitions(topic)
        if partition is None:
            partition = zlib.crc32(record.key) % len(partitions) if record.key else 0
        partitions[partition].append(record)
        self._changed.set()

    async def subscribe(
        self, group: str, topics: Sequence[str], handler: Handler
    ) -> InMemorySubscription:
        processor = RecordProcessor(group, handler, self.publish_record, self._retry)
        return self.subscribe_records(group, topics, processor.process, lambda: processor.processed)

    def subscribe_records(
        self,
        group: str,
        topics: Sequence[str],
        handle: RecordHandler,
        processed: Callable[[], int] | None = None,
    ) -> InMemorySubscription:
        """Consume raw records, for consumers that do their own decoding (the embedded SLA
        processor runs the Faust agents' record handlers this way)."""
        if group in self._active_groups:
            raise RuntimeError(f"consumer group {group!r} already has an active member")
        self._active_groups.add(group)
        subscription = InMemorySubscription(self, group, list(topics), handle, processed)
        subscription.start()
        self._subscriptions.append(subscription)
        return subscription

    async def ping(self) -> bool:
        return True

    async def _next_batch(
        self, group: str, topics: list[str]
    ) -> list[tuple[SourcePosition, KafkaRecord]]:
        while True:
            self._changed.clear()
            batch: list[tuple[SourcePosition, KafkaRecord]] = []
            for topic in topics:
                for p, records in enumerate(self._partitions(topic)):
                    offset = self._committed[(group, topic, p)]
                    batch.extend(
                        (SourcePosition(topic, p, offset + i), r)
                        for i, r in enumerate(records[offset:])
                    )
            if batch:
                return batch
            await self._changed.wait()

    def _commit(self, group: str, position: SourcePosition) -> None:
        self._committed[(group, position.topic, position.partition)] = position.offset + 1

    def _release(self, subscription: InMemorySubscription) -> None:
        self._active_groups.discard(subscription.group)
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)


class InMemorySubscription:
    def __init__(
        self,
        bus: InMemoryBus,
        group: str,
        topics: list[str],
        handle: RecordHandler,
        processed: Callable[[], int] | None = None,
    ) -> None:
        self._bus = bus
        self.group = group
        self._topics = topics
        self._handle = handle
        self._handled = 0
        self._processed = processed or (lambda: self._handled)
        self._worker = BackgroundTask(f"consume:{group}")

    @property
    def processed(self) -> int:
        return self._processed()

    def start(self) -> None:
        self._worker.start(self._run())

    async def _run(self) -> None:
        while True:
            for position, record in await self._bus._next_batch(self.group, self._topics):
                await self._handle(record, position)
                self._handled += 1
                self._bus._commit(self.group, position)

    async def stop(self) -> None:
        await self._worker.stop()
        self._bus._release(self)
