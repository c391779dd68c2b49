"""Live fan-out for the server-sent event streams.

Each API replica tails the SLA and KPI topics with its own consumer (no consumer group: every
replica sees every record, starting at the end when it starts) and hands each event to a
`LiveHub`, which copies it into the bounded queue of every connected client that wants it. A
client whose queue is full is dropped (its stream ends with a `dropped` event): a slow reader
never holds up the consumer or the other clients.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge

from shared.background import BackgroundTask
from shared.bus.limits import FetchLimits
from shared.bus.memory import InMemoryBus
from shared.bus.processing import SourcePosition
from shared.contracts.codec import KafkaRecord, UndecodableRecord, decode
from shared.contracts.envelope import Envelope
from shared.ids import uuid7

log = structlog.get_logger(__name__)

CLIENTS = Gauge("itsm_sla_stream_clients", "Connected server-sent event clients", ["stream"])
DROPPED = Counter(
    "itsm_sla_stream_dropped_clients_total", "Clients dropped for reading too slowly", ["stream"]
)
Wants = Callable[[Envelope], bool]
OnEvent = Callable[[str, Envelope], None]
# How often a tail looks again for topics that did not exist yet (e.g. created later).
TOPIC_RETRY_SECONDS = 5.0
START_WAIT_SECONDS = 10.0


class LiveClient:
    def __init__(self, wants: Wants, queue_size: int) -> None:
        self.wants = wants
        self.queue: asyncio.Queue[Envelope] = asyncio.Queue(maxsize=queue_size)
        self.dropped = False
        self._wake = asyncio.Event()

    def offer(self, envelope: Envelope) -> bool:
        """Queue an event without waiting; False when the queue is full."""
        try:
            self.queue.put_nowait(envelope)
        except asyncio.QueueFull:
            return False
        self._wake.set()
        return True

    def drop(self) -> None:
        self.dropped = True
        self._wake.set()

    async def next(self, heartbeat: float) -> Envelope | None:
        """The next event for this client; None when none came within `heartbeat` seconds (time
        for a heartbeat) or, at once, when the client is dropped."""
        while not self.dropped:
            if not self.queue.empty():
                return self.queue.get_nowait()
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), heartbeat)
            except TimeoutError:
                return None
        return None


class LiveHub:
    def __init__(self, stream: str, queue_size: int) -> None:
        self.stream = stream
        self.queue_size = queue_size
        self._clients: set[LiveClient] = set()

    @property
    def clients(self) -> int:
        return len(self._clients)

    def connect(self, wants: Wants) -> LiveClient:
        client = LiveClient(wants, self.queue_size)
        self._clients.add(client)
        CLIENTS.labels(self.stream).set(len(self._clients))
        return client

    def disconnect(self, client: LiveClient) -> None:
        self._clients.discard(client)
        CLIENTS.labels(self.stream).set(len(self._clients))

    def publish(self, envelope: Envelope) -> None:
        for client in list(self._clients):
            if not client.wants(envelope):
                continue
            if not client.offer(envelope):
                client.drop()
                self.disconnect(client)
                DROPPED.labels(self.stream).inc()
                log.warning("sla.stream.client_dropped", stream=self.stream)

    def close(self) -> None:
        """Drop every client, so open streams end (at shutdown)."""
        for client in list(self._clients):
            client.drop()
            self.disconnect(client)


class Tail(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def decoded(record: KafkaRecord, topic: str) -> Envelope | None:
    """The event of a tailed record; None for one that cannot be decoded (the materialising
    consumer dead-letters those; the live stream only skips them)."""
    try:
        return decode(record)
    except UndecodableRecord as exc:
        log.info("sla.stream.undecodable_skipped", topic=topic, reason=exc.reason)
        return None


class KafkaTail:
    """Every partition of `topics`, from their end at start-up, without a consumer group."""

    def __init__(
        self,
        bootstrap_servers: str,
        topics: Sequence[str],
        on_event: OnEvent,
        *,
        client_id: str,
        security: Mapping[str, Any] | None = None,
        fetch: FetchLimits | None = None,
    ) -> None:
        self._topics = list(topics)
        self._on_event = on_event
        self._fetch = fetch or FetchLimits()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            **self._fetch.consumer_kwargs(),  # the service bus's bounds (shared/bus/limits.py)
            **(security or {}),  # the service bus's (shared/bus/security.py)
        )
        self._assigned: set[TopicPartition] = set()
        self._worker = BackgroundTask(f"{client_id}-tail")

    async def start(self) -> None:
        await self._consumer.start()
        # Topics created a moment ago may take a few metadata rounds to show their partitions.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_WAIT_SECONDS
        await self._assign_new_partitions()
        while not self._all_assigned() and loop.time() < deadline:
            await asyncio.sleep(0.2)
            await self._assign_new_partitions()
        self._worker.start(self._run())

    def _all_assigned(self) -> bool:
        return {tp.topic for tp in self._assigned} >= set(self._topics)

    async def _assign_new_partitions(self) -> None:
        await self._consumer._client.force_metadata_update()
        found = {
            TopicPartition(topic, partition)
            for topic in self._topics
            for partition in self._consumer.partitions_for_topic(topic) or ()
        }
        new = found - self._assigned
        if not new:
            return
        # assign() replaces the assignment and forgets positions: keep the ones we had.
        kept = {tp: await self._consumer.position(tp) for tp in self._assigned}
        self._consumer.assign(sorted(found))
        for tp, offset in kept.items():
            self._consumer.seek(tp, offset)
        await self._consumer.seek_to_end(*new)
        for tp in new:  # resolve the end now, so nothing published after start-up is missed
            await self._consumer.position(tp)
        self._assigned = found

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_look = loop.time() + TOPIC_RETRY_SECONDS
        while True:
            try:
                if loop.time() >= next_look:
                    next_look = loop.time() + TOPIC_RETRY_SECONDS
                    if not self._all_assigned():
                        await self._assign_new_partitions()
                if not self._assigned:
                    await asyncio.sleep(0.5)
                    continue
                batches = await self._consumer.getmany(
                    timeout_ms=500, max_records=self._fetch.max_records
                )
            except KafkaError as exc:
                log.warning("sla.stream.fetch_failed", error=str(exc))
                await asyncio.sleep(0.5)
                continue
            for tp, messages in batches.items():
                for message in messages:
                    record = KafkaRecord(message.key, message.value, tuple(message.headers))
                    envelope = decoded(record, tp.topic)
                    if envelope is not None:
                        self._on_event(tp.topic, envelope)

    async def stop(self) -> None:
        await self._worker.stop()
        await self._consumer.stop()


class MemoryTail:
    """The same on the in-memory bus (embedded mode): records already on the topics when it
    starts are skipped."""

    def __init__(self, bus: InMemoryBus, topics: Sequence[str], on_event: OnEvent) -> None:
        self._bus = bus
        self._topics = list(topics)
        self._on_event = on_event
        self._history: dict[str, set[KafkaRecord]] = {}
        self._subscription: Any = None

    async def start(self) -> None:
        self._history = {topic: set(self._bus.records(topic)) for topic in self._topics}
        self._subscription = self._bus.subscribe_records(
            f"sla-live-{uuid7()}", self._topics, self._handle
        )

    async def _handle(self, record: KafkaRecord, position: SourcePosition) -> None:
        history = self._history[position.topic]
        if record in history:
            history.discard(record)
            return
        envelope = decoded(record, position.topic)
        if envelope is not None:
            self._on_event(position.topic, envelope)

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.stop()
            self._subscription = None
