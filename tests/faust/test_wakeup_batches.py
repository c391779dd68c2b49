"""The wake-up timer under load, in Faust's test contexts: a burst of due tickets drains in
bounded batches (one due record per partition and tick), the timer never waits for the
producer's acknowledgements, and the due agent publishes a whole record's alerts at once and
counts each ticket in the KPIs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from services.sla.processor import SlaComponents, SlaSettings, create_app
from shared.contracts.codec import KafkaRecord
from shared.contracts.topics import Topic
from tests.faust.conftest import T0, Clock, Harness, RecordingSink
from tests.faust.events import created, record

M = timedelta(minutes=1)
S = timedelta(seconds=1)
BATCH = 10


@dataclass
class QueueingSink(RecordingSink):
    """Like the broker: `start_many` queues and hands back delivery futures that the test
    resolves (or fails) when it likes; `send_many` calls are counted."""

    deliveries: list[asyncio.Future[None]] = field(default_factory=list)
    send_many_calls: list[int] = field(default_factory=list)

    async def start_many(
        self, topic: str, records: Sequence[tuple[KafkaRecord, int | None]]
    ) -> list[asyncio.Future[None]]:
        futures = []
        for queued, partition in records:
            await self.send(topic, queued, partition)
            futures.append(asyncio.get_running_loop().create_future())
        self.deliveries += futures
        return futures

    async def send_many(
        self, topic: str, records: Sequence[tuple[KafkaRecord, int | None]]
    ) -> None:
        self.send_many_calls.append(len(records))
        await super().send_many(topic, records)


@pytest.fixture
async def loaded() -> AsyncIterator[Harness]:
    sink, clock = QueueingSink(), Clock()
    settings = SlaSettings(
        app_id="sla-wakeup-batch-tests", kafka_bootstrap="127.0.0.1:1", due_batch=BATCH
    )
    app = create_app(settings, sink=sink, clock=clock)
    sla: SlaComponents = app.sla
    async with sla.incident_agent.test_context() as incidents, sla.due_agent.test_context() as due:
        yield Harness(app, sla, sink, clock, incidents, due)


async def open_tickets(harness: Harness, count: int) -> list[str]:
    """`count` P1 tickets opened at T0 over partitions 0-2: their first responses breach at
    T0 + 15 min, all in the same instant."""
    tickets = [f"INC-{i}" for i in range(count)]
    for i, ticket in enumerate(tickets):
        await harness.put(record(created(ticket, T0), 1, T0), partition=i % 3)
    return tickets


def sink_of(harness: Harness) -> QueueingSink:
    assert isinstance(harness.sink, QueueingSink)
    return harness.sink


async def test_a_burst_drains_in_bounded_batches_one_record_per_partition(
    loaded: Harness,
) -> None:
    tickets = await open_tickets(loaded, 25)
    loaded.clock.now = T0 + 16 * M  # every 50/75/90 % warning and the breach are due

    breached: list[str] = []
    for expected in (BATCH, BATCH, 5):
        before = len(loaded.sink.on(loaded.sla.processor.due_topic))
        results = await loaded.tick()
        sent = loaded.sink.on(loaded.sla.processor.due_topic)[before:]
        partitions = [s.partition for s in sent]
        assert len(partitions) == len(set(partitions))  # one record per partition and tick
        assert sum(len(json.loads(s.record.value)["tickets"]) for s in sent) == expected
        breached += [
            f.subject for h in results for f in h.facts if f.type == "itsm.sla.breached.v1"
        ]

    assert sorted(breached) == sorted(tickets)  # 10 + 10 + 5: all of them, each once
    assert await loaded.tick() == []  # nothing left due


async def test_the_timer_does_not_send_more_until_the_last_batch_is_applied(
    loaded: Harness,
) -> None:
    await open_tickets(loaded, 25)
    loaded.clock.now = T0 + 16 * M
    processor = loaded.sla.processor

    assert await processor.send_due() == BATCH
    assert await processor.send_due() == 0  # BATCH sent, none answered yet: no more

    loaded.clock.advance(seconds=processor.tick_retry.total_seconds())
    # Unanswered after tick_retry: the same tickets go again (the records may be lost).
    assert await processor.send_due() == BATCH


async def test_the_timer_returns_without_waiting_for_acknowledgements(
    loaded: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    await open_tickets(loaded, 3)
    loaded.clock.now = T0 + 16 * M
    processor, sink = loaded.sla.processor, sink_of(loaded)

    # Nothing ever acknowledges: the tick still returns at once.
    sent = await asyncio.wait_for(processor.send_due(), timeout=1.0)
    assert sent == 3 and len(sink.deliveries) == 3
    assert not any(d.done() for d in sink.deliveries)

    # The next tick finds one delivery failed: the tickets come round after tick_retry.
    sink.deliveries[0].set_exception(RuntimeError("broker gone"))
    loaded.clock.advance(seconds=processor.tick_retry.total_seconds())
    assert await processor.send_due() == 3
    assert processor._due_sends == sink.deliveries[1:]  # the failed one was dropped


async def test_a_due_record_publishes_all_its_tickets_facts_in_one_batch(
    loaded: Harness,
) -> None:
    tickets = await open_tickets(loaded, 6)
    sink = sink_of(loaded)
    fact_batches_before = len(sink.send_many_calls)
    loaded.clock.now = T0 + 16 * M

    results = await loaded.tick()

    assert len(results) == 3  # one record per partition, two tickets each
    assert all(h.outcome == "applied" for h in results)
    # One send (and one wait for acknowledgements) per due record, not per ticket.
    calls = sink.send_many_calls[fact_batches_before:]
    assert len(calls) == 3 and sum(calls) == sum(len(h.facts) for h in results)
    breaches = [f.subject for h in results for f in h.facts if f.type == "itsm.sla.breached.v1"]
    assert sorted(breaches) == sorted(tickets)
    for ticket in tickets:  # each state stored with its new wake-up (the resolution's 50 %)
        wakeup = loaded.sla.index.get(ticket)
        assert wakeup is not None and wakeup.at == T0 + 120 * M


async def test_every_ticket_of_a_due_record_counts_in_the_kpis() -> None:
    sink, clock = RecordingSink(), Clock()
    settings = SlaSettings(app_id="sla-wakeup-batch-kpis", kafka_bootstrap="127.0.0.1:1")
    app = create_app(settings, sink=sink, clock=clock)
    sla: SlaComponents = app.sla
    async with sla.incident_agent.test_context() as incidents, sla.due_agent.test_context() as due:
        harness = Harness(app, sla, sink, clock, incidents, due)
        for ticket in ("INC-1", "INC-2", "INC-3"):
            await harness.put(record(created(ticket, T0), 1, T0), partition=1)
        clock.now = T0 + 16 * M
        [result] = await harness.tick()  # one record, three tickets
        assert sum(f.type == "itsm.sla.breached.v1" for f in result.facts) == 3

        assert sla.kpi_publisher is not None
        await sla.kpi_publisher.publish()
    from tests.faust.test_kpis import Kpis

    view: Any = Kpis(sla, sink, clock, None, None, None)
    assert view.summary().breaches == 3  # one plan per ticket: none taken for a redelivery
    assert sink.on(Topic.SLA_KPIS)
