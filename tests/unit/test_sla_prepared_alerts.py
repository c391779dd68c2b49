"""Alerts prepared before their instant and fired at it (services/sla/processor/prepared.py), on
a dict table with a recording sink (no Faust, no broker):

- a ticket due within `prepare_ahead` is prepared by a prepare record and sent at its instant
  by the firing, and the due record the firing queues stores its state: one fact, once;
- a state stored in between (an incident event) drops the preparation;
- an incident event after the firing and before the store numbers its facts after the alerts,
  and the alerts count in the KPIs once;
- a crash after the firing sends the same alert again with the same sequence and id;
- a failed send leaves the state unstored and the due path sends the alert again, and a failed
  batch nobody looks at any more (its tickets revoked) is still reported;
- a ticket being applied at its instant, or prepared under replaced policies, falls back to
  the due path; revoked partitions forget their entries.
"""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from services.sla.domain import next_wakeup
from services.sla.domain.kpi_partials import KpiPartial
from services.sla.processor.catalog import default_catalog
from services.sla.processor.codec import Due, StateFormatError, from_table_value
from services.sla.processor.handling import Handled, SlaProcessor
from services.sla.processor.kpis import PARTIAL_PREFIX, KpiRecorder
from services.sla.processor.wakeups import WakeupIndex
from shared.bus.processing import SourcePosition
from shared.contracts.codec import KafkaRecord
from shared.contracts.envelope import Envelope
from shared.contracts.topics import Topic
from tests.faust.conftest import RecordingSink
from tests.faust.events import created, record, replied
from tests.support.polling import eventually

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
M, S = timedelta(minutes=1), timedelta(seconds=1)
INCIDENTS, DUE, SLA = str(Topic.INCIDENTS), "sla-due", str(Topic.SLA)
PARTITION = 2
AHEAD = 10 * S
BREACH = "itsm.sla.breached.v1"


@dataclass
class FailingSink(RecordingSink):
    """Fails the next `failures` sends of SLA facts (the broker did not acknowledge them)."""

    failures: int = 0
    attempts: list[int] = field(default_factory=list)

    async def send_many(
        self, topic: str, records: Sequence[tuple[KafkaRecord, int | None]]
    ) -> None:
        if topic == SLA and self.failures:
            self.failures -= 1
            self.attempts.append(len(records))
            raise KafkaTimeoutError()
        await super().send_many(topic, records)


@dataclass
class Worker:
    """One SLA processor with a settable clock; due records it sends are applied in order."""

    table: dict[str, Any]
    sink: RecordingSink = field(default_factory=RecordingSink)
    now: datetime = T0
    applied_due: int = 0  # due records of the sink applied so far (their offsets)
    incident_offset: int = 0

    def __post_init__(self) -> None:
        self.proc = SlaProcessor(
            table=self.table, sink=self.sink, catalog=default_catalog(), index=WakeupIndex(),
            group="sla-tests", sla_topic=SLA, due_topic=DUE, dead_letter_topic="dlq",
            clock=lambda: self.now, kpis=KpiRecorder(self.table), prepare_ahead=AHEAD,
        )  # fmt: skip

    async def incident(self, rec: KafkaRecord) -> Handled:
        position = SourcePosition(INCIDENTS, PARTITION, self.incident_offset)
        self.incident_offset += 1
        return await self.proc.on_incident_record(rec, position)

    def due_sent(self) -> list[Due]:
        return [Due.from_doc(json.loads(s.record.value)) for s in self.sink.on(DUE)]

    async def deliver_due(self) -> list[Handled]:
        """Apply the due records sent since the last call (the due agent)."""
        results = []
        for sent in self.sink.on(DUE)[self.applied_due :]:
            assert sent.partition == PARTITION  # the state's partition
            position = SourcePosition(DUE, PARTITION, self.applied_due)
            self.applied_due += 1
            results.append(await self.proc.on_due_record(sent.record.value, position))
        return results

    async def fire(self) -> int:
        """The firing loop's round at `now`, until the broker has what it sent."""
        fired = await self.proc.fire_prepared()
        if deliveries := self.proc.alerts.deliveries():
            await asyncio.wait(deliveries)
        return fired

    async def tick(self) -> list[Handled]:
        await self.proc.send_due()
        return await self.deliver_due()

    def facts(self, type_name: str | None = None) -> list[Envelope]:
        return [f for f in self.sink.facts() if type_name is None or f.type == type_name]

    def state(self, ticket_id: str) -> Any:
        return from_table_value(self.table[ticket_id], self.proc.targets)


def breaches_counted(table: dict[str, Any]) -> int:
    """Breaches in the KPI partials, each counted in an hour and a day partial."""
    partials = [
        KpiPartial.from_document(v) for k, v in table.items() if k.startswith(PARTIAL_PREFIX)
    ]
    total = sum(p.figures.breaches for p in partials)
    assert total % 2 == 0
    return total // 2


async def breach_prepared(worker: Worker, ticket_id: str = "INC-1") -> datetime:
    """Open a P1 ticket at T0, fire its warnings through the due path, and prepare its
    first-response breach (15 minutes) 5 seconds ahead. Returns the breach's instant."""
    await worker.incident(record(created(ticket_id, T0), 1, T0))
    worker.now = T0 + 14 * M  # 50, 75 and 90 % are due: the due path
    [warned] = await worker.tick()
    assert {f.data["threshold"] for f in warned.facts} == {50, 75, 90}
    deadline = next_wakeup(worker.state(ticket_id))
    assert deadline == T0 + 15 * M
    worker.now = deadline - 5 * S
    [prepared] = await worker.tick()
    assert prepared.reason == "prepared 1 tickets" and prepared.facts == []
    assert worker.due_sent()[-1].prepare
    return deadline


async def test_a_prepared_breach_fires_at_its_instant_and_its_due_record_stores_it() -> None:
    worker = Worker({})
    deadline = await breach_prepared(worker)
    assert worker.facts(BREACH) == []

    worker.now = deadline - S
    assert await worker.fire() == 0  # not yet
    worker.now = deadline
    assert await worker.fire() == 1
    [breach] = worker.facts(BREACH)
    assert (breach.subject, breach.time, breach.sequence) == ("INC-1", deadline, 6)
    assert worker.state("INC-1").version == 5  # sent, not stored yet

    [stored] = await worker.deliver_due()  # the due record the firing queued
    assert [f.type for f in stored.facts] == [BREACH]  # reported by the record that stored it
    assert worker.state("INC-1").version == 6
    assert len(worker.facts(BREACH)) == 1  # not sent a second time
    assert breaches_counted(worker.table) == 1
    assert worker.proc.alerts.fired("INC-1") is None and len(worker.proc.alerts) == 0

    worker.now = deadline + 10 * M  # nothing left of the response timer to fire
    await worker.tick()
    await worker.fire()
    assert len(worker.facts(BREACH)) == 1


async def test_an_incident_event_before_the_instant_drops_the_preparation() -> None:
    worker = Worker({})
    deadline = await breach_prepared(worker)

    answer = await worker.incident(record(replied("INC-1"), 2, deadline - 2 * S))
    assert answer.outcome == "applied"
    assert worker.proc.alerts.prepared("INC-1") is None

    worker.now = deadline
    assert await worker.fire() == 0
    await worker.tick()
    assert worker.facts(BREACH) == []  # answered in time: no breach, from either path
    assert breaches_counted(worker.table) == 0


async def test_an_incident_event_after_the_firing_numbers_its_facts_after_the_alerts() -> None:
    worker = Worker({})
    deadline = await breach_prepared(worker)
    worker.now = deadline
    await worker.fire()  # sent; its due record not applied yet

    answer = await worker.incident(record(replied("INC-1"), 2, deadline + S))

    [breach] = worker.facts(BREACH)
    assert [f.sequence for f in answer.facts] == [breach.sequence + 1]  # after the breach
    state = worker.state("INC-1")
    assert state.version == breach.sequence + 1 and state.applied_sequence == 2
    [stored] = await worker.deliver_due()  # the firing's due record finds nothing to store
    assert stored.facts == []
    assert worker.state("INC-1") == state
    assert len(worker.facts(BREACH)) == 1
    assert breaches_counted(worker.table) == 1  # counted with the reply's KPI plan, once


async def breach_sent_then_taken_over(worker: Worker) -> tuple[Any, Any, Worker]:
    """The firing sends INC-1's breach, and the worker dies before its due record is applied;
    another takes the partition over (the rearm) and handles the due ticket: the breach as
    first sent, as sent again, and the successor."""
    deadline = await breach_prepared(worker)
    worker.now = deadline
    await worker.fire()
    [sent] = worker.facts(BREACH)
    successor = Worker(dict(worker.table), now=deadline + 2 * S)
    successor.proc.index.schedule("INC-1", PARTITION, next_wakeup(successor.state("INC-1")))
    [handled] = await successor.tick()
    [again] = [f for f in handled.facts if f.type == BREACH]
    return sent, again, successor


async def test_a_crash_after_the_firing_sends_the_same_breach_again_with_its_sequence() -> None:
    sent, again, successor = await breach_sent_then_taken_over(Worker({}))

    assert (again.sequence, again.time) == (sent.sequence, sent.time)  # consumers drop it
    assert successor.state("INC-1").version == sent.sequence


async def test_a_failed_send_leaves_the_state_unstored_and_the_due_path_sends_again() -> None:
    worker = Worker({}, sink=FailingSink())
    deadline = await breach_prepared(worker)
    worker.now = deadline
    assert isinstance(worker.sink, FailingSink)
    worker.sink.failures = 1
    await worker.fire()

    [handled] = await worker.deliver_due()  # finds the send failed: sends it itself

    assert worker.sink.attempts == [1]
    [breach] = worker.facts(BREACH)
    assert [f.sequence for f in handled.facts] == [breach.sequence] == [6]
    assert worker.state("INC-1").version == 6
    assert breaches_counted(worker.table) == 1


async def test_a_ticket_being_applied_at_its_instant_falls_back_to_the_due_path() -> None:
    worker = Worker({})
    deadline = await breach_prepared(worker)
    worker.now = deadline
    async with worker.proc.ticket_locks.hold("INC-1"):  # an event of it is being applied
        assert await worker.fire() == 0
    assert worker.facts(BREACH) == []

    [handled] = await worker.tick()  # the index has it at its instant again

    assert [f.type for f in handled.facts] == [BREACH]
    assert worker.state("INC-1").version == 6


async def test_alerts_prepared_under_replaced_policies_fall_back_to_the_due_path() -> None:
    worker = Worker({})
    deadline = await breach_prepared(worker)
    worker.proc.catalog = default_catalog()  # what the policy feed does with a new version
    worker.now = deadline

    assert await worker.fire() == 0
    [handled] = await worker.tick()
    assert [f.type for f in handled.facts] == [BREACH]


async def test_revoked_partitions_forget_their_prepared_and_fired_alerts() -> None:
    worker = Worker({})
    await breach_prepared(worker, "INC-1")
    deadline = await breach_prepared(worker, "INC-2")
    worker.now = deadline
    await worker.fire()
    assert worker.proc.alerts.fired("INC-1") is not None

    worker.proc.forget({PARTITION + 1})
    assert worker.proc.alerts.fired("INC-1") is not None
    worker.proc.forget({PARTITION})
    assert worker.proc.alerts.fired("INC-1") is None
    assert worker.proc.alerts.fired("INC-2") is None and len(worker.proc.alerts) == 0


async def test_a_ticket_is_prepared_once_while_its_preparation_is_current() -> None:
    worker = Worker({})
    deadline = await breach_prepared(worker)
    prepared = worker.proc.alerts.prepared("INC-1")
    sent = len(worker.due_sent())

    worker.now = deadline - 2 * S  # the index's retry for it now falls inside the window
    await worker.tick()

    assert len(worker.due_sent()) == sent  # nothing sent for it again
    assert worker.proc.alerts.prepared("INC-1") is prepared


def test_a_prepare_record_round_trips_and_a_wrong_flag_is_refused() -> None:
    due = Due(("INC-1", "INC-2"), T0, prepare=True)
    assert Due.from_doc(json.loads(json.dumps(due.to_doc()))) == due
    assert "prepare" not in Due(("INC-1",), T0).to_doc()
    with pytest.raises(StateFormatError, match="prepare"):
        Due.from_doc({"tickets": ["INC-1"], "now": "2026-03-02T09:00:00Z", "prepare": "yes"})


@dataclass
class TimedSink(RecordingSink):
    """Notes the processor's clock at each send of SLA facts."""

    clock: Any = None
    sent_at: list[datetime] = field(default_factory=list)

    async def send_many(
        self, topic: str, records: Sequence[tuple[KafkaRecord, int | None]]
    ) -> None:
        if topic == SLA:
            self.sent_at.append(self.clock())
        await super().send_many(topic, records)


async def test_the_firing_loop_sends_a_prepared_breach_once_its_instant_has_come() -> None:
    sink = TimedSink()
    worker = Worker({}, sink=sink)
    sink.clock = worker.proc.clock
    deadline = await breach_prepared(worker)
    sends = len(sink.sent_at)
    loop = asyncio.get_running_loop()
    started = loop.time()
    # From here the clock runs in real time, 50 ms before the deadline.
    worker.proc.clock = sink.clock = lambda: deadline - 0.05 * S + (loop.time() - started) * S
    firing = asyncio.create_task(worker.proc.fire_when_due())
    try:
        await eventually(
            lambda: asyncio.sleep(0, worker.facts(BREACH)), until=bool, timeout=5,
            interval=0.005, what="the breach",
        )  # fmt: skip
    finally:
        firing.cancel()
    assert len(sink.sent_at) == sends + 1
    assert sink.sent_at[-1] >= deadline


async def test_a_failed_batch_of_revoked_tickets_leaves_no_exception_unretrieved() -> None:
    """Its tickets' entries are gone with their partition, so no due record or incident event
    looks at its delivery again: the batch's own callback reports the failure."""
    unretrieved: list[str] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: unretrieved.append(context["message"]))
    try:
        sink = FailingSink()
        worker = Worker({}, sink=sink)
        deadline = await breach_prepared(worker)
        worker.now, sink.failures = deadline, 1
        await worker.fire()
        assert sink.attempts == [1]  # the batch's send failed
        worker.proc.forget({PARTITION})
        del worker
        gc.collect()  # a future's unretrieved exception is reported when it is collected
    finally:
        loop.set_exception_handler(None)
    assert unretrieved == []


async def test_a_breach_sent_again_after_a_crash_is_the_same_event() -> None:
    """Same id, not only the same sequence: notify keys the escalation a breach starts by the
    breach's id, and a repeat with a new id paged the on-call twice (e2e fault run)."""
    worker = Worker({})
    sent, again, _ = await breach_sent_then_taken_over(worker)

    assert again.id == sent.id
    other = Worker({})
    await breach_prepared(other, "INC-2")
    assert {f.id for f in other.facts()}.isdisjoint(f.id for f in worker.facts())
