"""Kafka adapter of the bus port (aiokafka): idempotent producer with acks=all, consumer groups
with manual commits after processing, topics created at start-up."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    TopicAlreadyExistsError,
)

from shared.background import BackgroundTask
from shared.bus.port import Handler, TopicSpec
from shared.bus.processing import RecordProcessor, RetryPolicy, SourcePosition
from shared.contracts.codec import KafkaRecord, encode
from shared.contracts.envelope import Envelope
from shared.metrics import ConsumerLag
from shared.telemetry import producer_span

log = structlog.get_logger(__name__)


class KafkaBus:
    def __init__(
        self,
        bootstrap_servers: str,
        client_id: str,
        *,
        linger_ms: int = 5,
        request_timeout_ms: int = 15_000,
        retry: RetryPolicy | None = None,
        security: dict[str, Any] | None = None,
        start_timeout: float = 60.0,
        replication_factor: int = 1,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id
        self._linger_ms = linger_ms
        self._request_timeout_ms = request_timeout_ms
        self._retry = retry
        self._security = security or {}
        self._start_timeout = start_timeout
        self._replication_factor = replication_factor
        self._producer: AIOKafkaProducer | None = None
        self._subscriptions: list[KafkaSubscription] = []

    async def start(self) -> None:
        """Connect the producer, retrying while the broker is not yet reachable."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._start_timeout
        delay = 0.2
        while True:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap_servers,
                client_id=self.client_id,
                enable_idempotence=True,
                acks="all",
                linger_ms=self._linger_ms,
                request_timeout_ms=self._request_timeout_ms,
                **self._security,
            )
            try:
                await producer.start()
            except KafkaError as exc:
                await producer.stop()
                if loop.time() > deadline:
                    raise
                log.warning("kafka.producer.retry", error=str(exc), delay=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._producer = producer
            return

    async def stop(self) -> None:
        for sub in list(self._subscriptions):
            await sub.stop()
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("KafkaBus.start() was not awaited")
        return self._producer

    async def ensure_topics(self, topics: Sequence[TopicSpec]) -> None:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers,
            client_id=f"{self.client_id}-admin",
            **self._security,
        )
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [t for t in topics if t.name not in existing]
            for spec in missing:
                try:
                    await admin.create_topics(
                        [
                            NewTopic(
                                spec.name,
                                num_partitions=spec.partitions,
                                replication_factor=self._replication_factor,
                                topic_configs=dict(spec.config),
                            )
                        ]
                    )
                    log.info("kafka.topic.created", topic=spec.name, partitions=spec.partitions)
                except TopicAlreadyExistsError:
                    pass  # another service created it concurrently
        finally:
            await admin.close()

    async def publish(self, topic: str, envelopes: Sequence[Envelope]) -> None:
        pending = []
        for envelope in envelopes:  # queued in order, each inside its own publish span
            with producer_span(topic, envelope) as traceparent:
                record = encode(envelope.with_traceparent(traceparent))
                pending.append(await self._send(topic, record))
        if pending:
            await asyncio.gather(*pending)

    async def publish_record(self, topic: str, record: KafkaRecord) -> None:
        await (await self._send(topic, record))

    async def _send(self, topic: str, record: KafkaRecord) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = await self.producer.send(
            topic, value=record.value, key=record.key, headers=list(record.headers)
        )
        return future

    async def subscribe(
        self, group: str, topics: Sequence[str], handler: Handler
    ) -> KafkaSubscription:
        consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=self.bootstrap_servers,
            client_id=f"{self.client_id}-{group}",
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=500,
            request_timeout_ms=max(self._request_timeout_ms, 40_000),
            **self._security,
        )
        await consumer.start()
        processor = RecordProcessor(group, handler, self.publish_record, self._retry)
        subscription = KafkaSubscription(consumer, processor)
        subscription.start()
        self._subscriptions.append(subscription)
        return subscription

    async def ping(self) -> bool:
        if self._producer is None:
            return False
        try:
            await asyncio.wait_for(self._producer.client.fetch_all_metadata(), timeout=3.0)
        except (TimeoutError, KafkaError, OSError):
            return False
        return True


class KafkaSubscription:
    def __init__(self, consumer: AIOKafkaConsumer, processor: RecordProcessor) -> None:
        self._consumer = consumer
        self._processor = processor
        self._worker = BackgroundTask(f"consume:{processor.group}")
        self._lag = ConsumerLag(processor.group)

    @property
    def processed(self) -> int:
        return self._processor.processed

    def start(self) -> None:
        self._worker.start(self._run())

    async def _run(self) -> None:
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=500, max_records=500)
            except KafkaError as exc:
                log.warning("kafka.consumer.fetch_failed", error=str(exc))
                await asyncio.sleep(0.5)
                continue
            # Partitions are independent: process them concurrently, each in offset order.
            await asyncio.gather(*(self._drain(tp, records) for tp, records in batches.items()))
            await self._report_lag()

    async def _report_lag(self) -> None:
        """Per assigned partition, once the fetched records are processed: the high watermark
        of the last fetch minus the position (the next offset to process). Both are in the
        consumer's memory: no broker round trip."""
        lags = {}
        for tp in self._consumer.assignment():
            try:
                highwater = self._consumer.highwater(tp)
                if highwater is None:
                    continue  # not fetched since it was assigned
                position = await self._consumer.position(tp)
            except (AssertionError, IllegalStateError):
                continue  # revoked meanwhile
            lags[(tp.topic, tp.partition)] = highwater - position
        self._lag.report(lags)

    async def _drain(self, tp: TopicPartition, records: list[Any]) -> None:
        for message in records:
            await self._processor.process(
                KafkaRecord(message.key, message.value, tuple(message.headers)),
                SourcePosition(tp.topic, tp.partition, message.offset),
            )
        try:
            await self._consumer.commit({tp: records[-1].offset + 1})
        except (CommitFailedError, KafkaError) as exc:
            # Partition moved to another member mid-batch: it re-reads from the last commit
            # and the sequence check makes the replay harmless.
            log.warning("kafka.consumer.commit_failed", partition=str(tp), error=str(exc))

    async def stop(self) -> None:
        await self._worker.stop()
        await self._consumer.stop()
        self._lag.clear()
