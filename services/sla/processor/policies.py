"""The live policy catalog of a worker: the built-in catalog plus every policy and calendar
version on the compacted policies topic.

Every worker reads the whole topic (a plain consumer assigned every partition, no consumer
group, no committed offsets) — each one measures every ticket it owns, so each needs every
policy. A Faust GlobalTable would do the same, but on faust-streaming 0.15.3 global tables are
known to misbehave (recovery and standby handling), and this needs none of a table's machinery.

`PolicyFeed` is a dependency of the Faust app added before Faust's own services, so it starts
first: it reads the topic up to its end before the app consumes a single incident event (a
restarted worker never measures with a partial catalog), then follows it and swaps the
processor's catalog for a new immutable one after each batch of versions. The next event a
worker processes after a version arrives uses it — no restart.

Records that cannot be read are logged and skipped, not dead-lettered: every worker re-reads
the topic at every start, so a dead letter would be written again by every worker each time.
The API validates versions with the same contract before publishing them.
"""

from __future__ import annotations

from typing import Any

import faust
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from pydantic import ValidationError

from services.sla.policies.catalog import ManagedCatalog, PolicyLog
from services.sla.processor.handling import SlaProcessor
from services.sla.processor.settings import SlaSettings
from shared.bus.kafka import KafkaBus
from shared.bus.limits import REQUEST_TIMEOUT_MS, fetch_limits
from shared.bus.security import kafka_client_kwargs
from shared.bus.topics import platform_topics
from shared.contracts.codec import KafkaRecord, UndecodableRecord, decode
from shared.contracts.registry import UnknownEventType
from shared.contracts.topics import Topic

log = structlog.get_logger(__name__)

FETCH_TIMEOUT_MS = 500


class PolicyFeed(faust.Service):
    def __init__(
        self,
        settings: SlaSettings,
        processor: SlaProcessor,
        *,
        topic: str = Topic.SLA_POLICIES,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.processor = processor
        self.topic = str(topic)
        self.versions = PolicyLog(processor.catalog)  # the processor starts with the defaults
        self.skipped = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._security = kafka_client_kwargs(settings)

    @property
    def catalog(self) -> ManagedCatalog:
        return self.versions.catalog()

    async def on_start(self) -> None:
        await self._ensure_topic()
        count = await self._inspect_topic()
        consumer = self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            client_id=f"{self.settings.app_id}-policies",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **fetch_limits(self.settings).consumer_kwargs(),
            **self._security,
        )
        await consumer.start()
        partitions = [TopicPartition(self.topic, p) for p in range(count)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            self._read(await consumer.getmany(timeout_ms=FETCH_TIMEOUT_MS))
        self._swap()
        log.info("sla.policies.loaded", versions=len(self.versions), skipped=self.skipped)

    @faust.Service.task
    async def _follow(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while not self.should_stop:
            if self._read(await consumer.getmany(timeout_ms=FETCH_TIMEOUT_MS)):
                self._swap()

    async def on_stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def _ensure_topic(self) -> None:
        specs = [s for s in platform_topics(self.settings.topic_partitions) if s.name == self.topic]
        if specs:  # a test's own topic is created by the test
            bus = KafkaBus(
                self.settings.kafka_bootstrap,
                client_id=f"{self.settings.app_id}-policies",
                replication_factor=self.settings.topic_replication_factor,
                security=self._security,
            )
            await bus.ensure_topics(specs)

    async def _inspect_topic(self) -> int:
        """The topic's partition count; complains when it is not compacted (created by hand, or
        before it was declared so): it would delete old versions after its retention, and a
        worker started after that would measure without them."""
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.settings.kafka_bootstrap,
            client_id=f"{self.settings.app_id}-policies",
            request_timeout_ms=REQUEST_TIMEOUT_MS,
            **self._security,
        )
        await admin.start()
        try:
            [described] = await admin.describe_topics([self.topic])
            [answer] = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, self.topic)]
            )
        finally:
            await admin.close()
        [(*_, entries)] = answer.resources
        policy = dict((e[0], e[1]) for e in entries).get("cleanup.policy", "")
        if "compact" not in policy:
            log.error(
                "sla.policies.not_compacted",
                topic=self.topic,
                cleanup_policy=policy,
                fix="kafka-configs --alter --add-config cleanup.policy=compact",
            )
        if not described["partitions"]:
            raise RuntimeError(f"topic {self.topic} has no partitions (error {described})")
        return len(described["partitions"])

    def _read(self, batches: dict[TopicPartition, list[Any]]) -> int:
        """Record each version; how many there were."""
        read = 0
        for records in batches.values():
            for message in records:
                record = KafkaRecord(message.key, message.value, tuple(message.headers))
                try:
                    envelope = decode(record)
                    read += self.versions.add(envelope.type, envelope.data)
                except (UndecodableRecord, UnknownEventType, ValidationError, ValueError) as exc:
                    self.skipped += 1
                    log.error(
                        "sla.policies.unreadable",
                        partition=message.partition,
                        offset=message.offset,
                        key=(message.key or b"").decode(errors="replace"),
                        error=str(exc)[:400],
                    )
        return read

    def _swap(self) -> None:
        # One immutable catalog replaces the other between two events: an event is measured
        # against the catalog before or after a version, never a mix.
        self.processor.catalog = self.catalog
        log.info("sla.policies.catalog", versions=len(self.versions))
