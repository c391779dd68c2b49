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
    InvalidProducerEpoch,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    TopicAlreadyExistsError,
    UnknownProducerId,
)

from shared.background import BackgroundTask
from shared.bus.limits import REQUEST_TIMEOUT_MS, FetchLimits
from shared.bus.port import Handler, TopicSpec
from shared.bus.processing import RecordProcessor, RetryPolicy, SourcePosition
from shared.contracts.codec import KafkaRecord, encode
from shared.contracts.envelope import Envelope
from shared.metrics import ConsumerLag
from shared.telemetry import producer_span

log = structlog.get_logger(__name__)

# Errors after which an idempotent producer sends nothing more: aiokafka's sender stops and every
# later send fails with the same error (seen after a broker restart lost the producer's state:
# the relay failed with OutOfOrderSequenceNumber for good). A new producer gets a new id.
BROKEN_PRODUCER = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    InvalidProducerEpoch,
    ProducerFenced,
)


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
        fetch: FetchLimits | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self._fetch = fetch or FetchLimits()
        self.client_id = client_id
        self._linger_ms = linger_ms
        self._request_timeout_ms = request_timeout_ms
        self._retry = retry
        self._security = dict(security or {})  # shared/bus/security.py: kafka_client_kwargs
        self._start_timeout = start_timeout
        self._replication_factor = replication_factor
        self._producer: AIOKafkaProducer | None = None
        self._replacing = asyncio.Lock()
        self._subscriptions: list[KafkaSubscription] = []

    async def start(self) -> None:
        """Connect the producer, retrying while the broker is not yet reachable."""
        self._producer = await self._connect()

    async def _connect(self) -> AIOKafkaProducer:
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
            return producer

    async def _replace_broken(self, broken: AIOKafkaProducer, error: Exception) -> None:
        """Swap a producer that can send no more for a new one; the caller's send still fails
        (its records were not written), and its retry goes out on the new producer."""
        async with self._replacing:
            current = self._producer
            if current is not broken:
                return  # a concurrent publisher replaced it already
            log.warning("kafka.producer.replaced", error=repr(error))
            self._producer = await self._connect()
        try:
            await current.stop()
        except KafkaError as exc:  # its batches have failed already; nothing left to flush
            log.info("kafka.producer.stop_failed", error=repr(exc))

    async def stop(self) -> None:
        for sub in list(self._subscriptions):
            await sub.stop()
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    @property
    def security(self) -> dict[str, Any]:
        """The aiokafka security arguments of this bus, for other clients of the same service."""
        return dict(self._security)

    @property
    def fetch(self) -> FetchLimits:
        """The consumer bounds of this bus, for other consumers of the same service."""
        return self._fetch

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("KafkaBus.start() was not awaited")
        return self._producer

    async def ensure_topics(self, topics: Sequence[TopicSpec]) -> None:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers,
            client_id=f"{self.client_id}-admin",
            request_timeout_ms=REQUEST_TIMEOUT_MS,
            **self._security,
        )
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [t for t in topics if t.name not in existing]
            refused: dict[str, int] = {}
            for spec in missing:
                try:
                    response = await admin.create_topics(
                        [
                            NewTopic(
                                spec.name,
                                num_partitions=spec.partitions,
                                replication_factor=self._replication_factor,
                                topic_configs=dict(spec.config),
                            )
                        ]
                    )
                except TopicAlreadyExistsError:
                    continue  # another service created it concurrently
                code = _created(spec, response)
                if code:
                    refused[spec.name] = code
            if refused:
                # On a secured cluster a service may neither see nor create the topics it does
                # not use (least privilege: the operator creates them, e.g. Strimzi KafkaTopic
                # resources): a warning, not a failure of the service.
                log.warning("kafka.topic.not_created", topics=sorted(refused), error_codes=refused)
        finally:
            await admin.close()

    async def publish(self, topic: str, envelopes: Sequence[Envelope]) -> None:
        producer = self.producer
        try:
            pending = []
            for envelope in envelopes:  # queued in order, each inside its own publish span
                with producer_span(topic, envelope) as traceparent:
                    record = encode(envelope.with_traceparent(traceparent))
                    pending.append(await self._send(producer, topic, record))
            if pending:
                await asyncio.gather(*pending)
        except BROKEN_PRODUCER as exc:
            await self._replace_broken(producer, exc)
            raise

    async def publish_record(self, topic: str, record: KafkaRecord) -> None:
        producer = self.producer
        try:
            await (await self._send(producer, topic, record))
        except BROKEN_PRODUCER as exc:
            await self._replace_broken(producer, exc)
            raise

    @staticmethod
    async def _send(
        producer: AIOKafkaProducer, topic: str, record: KafkaRecord
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = await producer.send(
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
            **self._fetch.consumer_kwargs(),  # records per fetch, fetch bytes, request timeout
            **self._security,
        )
        await consumer.start()
        processor = RecordProcessor(group, handler, self.publish_record, self._retry)
        subscription = KafkaSubscription(consumer, processor, self._fetch.max_records)
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


def _created(spec: TopicSpec, response: Any) -> int:
    """The broker's answer for this topic: 0 when created (or created concurrently by another
    service), else its error code (29: not authorized)."""
    errors = [tuple(entry)[:2] for entry in getattr(response, "topic_errors", ())]
    code = next((int(c) for name, c in errors if name == spec.name), 0)
    if code == 0:
        log.info("kafka.topic.created", topic=spec.name, partitions=spec.partitions)
    return 0 if code == _TOPIC_ALREADY_EXISTS else code


_TOPIC_ALREADY_EXISTS = 36


class KafkaSubscription:
    def __init__(
        self, consumer: AIOKafkaConsumer, processor: RecordProcessor, max_records: int = 500
    ) -> None:
        self._consumer = consumer
        self._max_records = max_records
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
                batches = await self._consumer.getmany(
                    timeout_ms=500, max_records=self._max_records
                )
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
