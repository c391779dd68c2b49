"""Fixtures for the SLA processor's Faust tests: an app with a recording sink and a fake clock,
driven through Faust's agent test contexts (no broker)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.sla.processor import SlaComponents, SlaSettings, create_app
from shared.contracts.codec import KafkaRecord, decode
from shared.contracts.envelope import Envelope
from shared.contracts.topics import Topic

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@dataclass
class Sent:
    topic: str
    record: KafkaRecord
    partition: int | None


@dataclass
class RecordingSink:
    """Stands in for the broker: remembers every record the processor publishes."""

    sent: list[Sent] = field(default_factory=list)

    async def send(self, topic: str, record: KafkaRecord, partition: int | None = None) -> None:
        self.sent.append(Sent(topic, record, partition))

    async def send_many(
        self, topic: str, records: Sequence[tuple[KafkaRecord, int | None]]
    ) -> None:
        for record, partition in records:
            await self.send(topic, record, partition)

    def on(self, topic: str) -> list[Sent]:
        return [s for s in self.sent if s.topic == topic]

    def facts(self) -> list[Envelope]:
        return [decode(s.record) for s in self.on(Topic.SLA)]


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@dataclass
class Harness:
    app: Any
    sla: SlaComponents
    sink: RecordingSink
    clock: Clock
    incidents: Any  # the incident agent's test context
    due: Any  # the due agent's test context

    async def put(self, record: KafkaRecord, partition: int = 0) -> Any:
        event = await self.incidents.put(
            record.value, key=record.key, headers=list(record.headers), partition=partition
        )
        return self.incidents.results[self.incidents.processed_offset - 1], event

    async def tick(self) -> list[Any]:
        """Run the wake-up timer once, then the firing of prepared alerts (as the worker's loop
        would at the clock's instant), and feed what they sent to the due agent."""
        results = await self._feed_due(self.sla.processor.send_due)
        return results + await self._feed_due(self.sla.processor.fire_prepared)

    async def _feed_due(self, send: Any) -> list[Any]:
        before = len(self.sink.on(self.sla.processor.due_topic))
        await send()
        results = []
        for sent in self.sink.on(self.sla.processor.due_topic)[before:]:
            assert sent.partition is not None
            await self.due.put(sent.record.value, key=sent.record.key, partition=sent.partition)
            results.append(self.due.results[self.due.processed_offset - 1])
        return results


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    sink, clock = RecordingSink(), Clock()
    settings = SlaSettings(app_id="sla-agent-tests", kafka_bootstrap="127.0.0.1:1")
    app = create_app(settings, sink=sink, clock=clock)
    sla: SlaComponents = app.sla
    async with sla.incident_agent.test_context() as incidents, sla.due_agent.test_context() as due:
        yield Harness(app, sla, sink, clock, incidents, due)
