"""The SLA processor in embedded mode: the Faust agents' record handlers on the in-memory bus,
driven by an asyncio tick instead of Faust's timer.

Everything the processor decides is the same code as in a Faust worker (`SlaProcessor`,
`KpiRecorder`, `KpiPublisher`, `PolicyLog`): incident and change events are consumed raw from the
bus, a tick sends due records to the due topic, the due consumer applies the alerts, the facts go
to the SLA topic, a second tick publishes KPI snapshots, and policy versions from the policies
topic replace the catalog. Only the adapters differ: a dict instead of the changelog-backed
table, the in-memory bus instead of Kafka. State lives as long as the process, like everything
else in embedded mode.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog

from services.sla.domain import PolicyCatalog
from services.sla.policies.catalog import PolicyLog
from services.sla.processor.catalog import default_catalog
from services.sla.processor.handling import Clock, SlaProcessor
from services.sla.processor.kpis import KpiPublisher, KpiRecorder
from services.sla.processor.settings import SlaSettings
from services.sla.processor.topics import due_topic_name
from services.sla.processor.wakeups import WakeupIndex
from shared.background import BackgroundTask
from shared.bus.memory import InMemoryBus, InMemorySubscription
from shared.bus.port import TopicSpec
from shared.bus.processing import SourcePosition
from shared.contracts.codec import KafkaRecord, UndecodableRecord, decode
from shared.contracts.registry import UnknownEventType
from shared.contracts.topics import Topic
from shared.runtime import Runtime, ServiceUnit
from shared.settings import ServiceSettings

log = structlog.get_logger(__name__)


class BusSink:
    """The processor's record sink on the in-memory bus. The bus places a record by its key, the
    same for the incident and due topics, so a due record lands in its ticket's partition."""

    def __init__(self, bus: InMemoryBus) -> None:
        self._bus = bus

    async def send(self, topic: str, record: KafkaRecord, partition: int | None = None) -> None:
        await self._bus.publish_record(topic, record, partition)

    async def send_many(
        self, topic: str, records: Sequence[tuple[KafkaRecord, int | None]]
    ) -> None:
        for record, partition in records:
            await self._bus.publish_record(topic, record, partition)


@dataclass
class EmbeddedSla:
    """The running processor: `start()` subscribes and starts the ticks, `stop()` ends them."""

    processor: SlaProcessor
    kpi_publisher: KpiPublisher
    policies: PolicyLog
    bus: InMemoryBus
    settings: SlaSettings
    subscriptions: list[InMemorySubscription] = field(default_factory=list)
    ticks: list[BackgroundTask] = field(default_factory=list)

    async def start(self) -> None:
        group = self.settings.app_id
        subscribe = self.bus.subscribe_records
        self.subscriptions = [
            # Policies first, like PolicyFeed: the catalog is current before any incident event.
            subscribe(f"{group}-policies", [str(Topic.SLA_POLICIES)], self._on_policy),
            subscribe(f"{group}-incidents", [str(Topic.INCIDENTS)], self._on_incident),
            subscribe(f"{group}-changes", [str(Topic.CHANGES)], self._on_change),
            subscribe(f"{group}-due", [self.processor.due_topic], self._on_due),
        ]
        self.ticks = [
            _every(self.settings.tick_interval, "sla-wakeups", self.processor.send_due),
            _every(self.settings.kpi_publish_interval, "sla-kpis", self.kpi_publisher.publish),
        ]

    async def stop(self) -> None:
        for tick in self.ticks:
            await tick.stop()
        for subscription in self.subscriptions:
            await subscription.stop()
        self.ticks, self.subscriptions = [], []

    async def _on_policy(self, record: KafkaRecord, position: SourcePosition) -> None:
        try:
            envelope = decode(record)
            if self.policies.add(envelope.type, envelope.data):
                self.processor.catalog = self.policies.catalog()
        except (UndecodableRecord, UnknownEventType, ValueError) as exc:
            log.error("sla.policies.unreadable", offset=position.offset, error=str(exc)[:400])

    async def _on_incident(self, record: KafkaRecord, position: SourcePosition) -> None:
        await self.processor.on_incident_record(record, position)

    async def _on_change(self, record: KafkaRecord, position: SourcePosition) -> None:
        await self.processor.on_change_record(record, position)

    async def _on_due(self, record: KafkaRecord, position: SourcePosition) -> None:
        await self.processor.on_due_record(record.value, position)


def _every(interval: float, name: str, job: Callable[[], Awaitable[object]]) -> BackgroundTask:
    """Faust's `app.timer` on asyncio: `job` every `interval` seconds, failures logged."""

    async def run() -> None:
        while True:
            try:
                await job()
            except Exception:  # what was not sent comes round again on a later tick
                log.exception("sla.tick.failed", tick=name)
            await asyncio.sleep(interval)

    task = BackgroundTask(name)
    task.start(run())
    return task


async def embedded_sla(
    bus: InMemoryBus,
    clock: Clock,
    settings: SlaSettings | None = None,
    *,
    catalog: PolicyCatalog | None = None,
) -> EmbeddedSla:
    """The SLA processor wired to `bus` (its topics created), not yet started."""
    settings = settings or SlaSettings()
    due = due_topic_name(settings.app_id)
    await bus.ensure_topics([TopicSpec(due, settings.topic_partitions)])
    table: dict[str, Any] = {}
    kpis = KpiRecorder(table, grace=timedelta(seconds=settings.kpi_grace))
    policies = PolicyLog(catalog or default_catalog(settings.targets))
    sink = BusSink(bus)
    processor = SlaProcessor(
        table=table,
        sink=sink,
        catalog=policies.catalog(),
        index=WakeupIndex(),
        group=settings.app_id,
        sla_topic=str(Topic.SLA),
        due_topic=due,
        dead_letter_topic=str(Topic.DEAD_LETTER),
        clock=clock,
        tick_retry=timedelta(seconds=settings.tick_retry),
        kpis=kpis,
    )
    publisher = KpiPublisher(
        kpis, sink, kpi_topic=str(Topic.SLA_KPIS), due_topic=due,
        retention=timedelta(seconds=settings.kpi_retention), clock=clock,
    )  # fmt: skip
    return EmbeddedSla(processor, publisher, policies, bus, settings)


async def build(settings: ServiceSettings, runtime: Runtime) -> ServiceUnit:
    """The processor as a unit of the embedded platform (`launcher.embedded`), on its bus and
    clock. Settings come from `ITSM_SLA_*` like a Faust worker's."""
    if not isinstance(runtime.bus, InMemoryBus):
        raise TypeError("the embedded SLA processor runs on the in-memory bus only")
    runner = await embedded_sla(runtime.bus, runtime.clock, SlaSettings())
    return ServiceUnit(name="sla-processor", state={}, start=runner.start, stop=runner.stop)
