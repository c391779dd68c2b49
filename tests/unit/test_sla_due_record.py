"""A due record's tickets in the SLA processor, on a dict table (no Faust, no broker):

- their KPI plans are applied merged, each KPI entry written once per record;
- a crash after any of the record's table writes recovers the same KPI figures, whichever of
  its tickets is loaded first afterwards (the staged entry);
- an incident event of a ticket whose alerts are being published waits for them: neither
  agent overwrites the state the other stored (the ticket locks).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.sla.domain.kpi_partials import KpiFigures, KpiPartial
from services.sla.processor.catalog import default_catalog
from services.sla.processor.codec import Due, from_table_value
from services.sla.processor.handling import SlaProcessor
from services.sla.processor.kpis import (
    PARTIAL_PREFIX,
    KpiRecorder,
    is_kpi_key,
    staged_key,
    ticket_kpis,
)
from services.sla.processor.wakeups import WakeupIndex
from shared.bus.processing import SourcePosition
from shared.contracts.codec import KafkaRecord
from tests.faust.conftest import RecordingSink
from tests.faust.events import created, record, replied
from tests.support.polling import eventually
from tests.support.tables import WriteLog

T0 = datetime(2026, 3, 2, 9, 5, tzinfo=UTC)
INCIDENTS, DUE = "itsm.incidents.events.v1", "sla-due"
TICKETS = ("INC-1", "INC-2", "INC-3")
DUE_AT = SourcePosition(DUE, 1, 7)
BREACH_DUE = T0 + timedelta(minutes=16)  # past the P1 first response (15 min)


def processor(table: dict[str, Any], sink: RecordingSink | None = None) -> SlaProcessor:
    return SlaProcessor(
        table=table, sink=sink or RecordingSink(), catalog=default_catalog(),
        index=WakeupIndex(), group="sla-tests", sla_topic="sla", due_topic=DUE,
        dead_letter_topic="dlq", clock=lambda: BREACH_DUE, kpis=KpiRecorder(table),
    )  # fmt: skip


def due_record(tickets: Sequence[str] = TICKETS) -> bytes:
    return json.dumps(Due(tuple(tickets), BREACH_DUE).to_doc()).encode()


async def incident(proc: SlaProcessor, rec: KafkaRecord, offset: int) -> Any:
    return await proc.on_incident_record(rec, SourcePosition(INCIDENTS, 1, offset))


async def opened(table: dict[str, Any]) -> SlaProcessor:
    proc = processor(table)
    for offset, ticket in enumerate(TICKETS):
        handled = await incident(proc, record(created(ticket, T0), 1, T0), offset)
        assert handled.outcome == "applied"
    return proc


def due_partials(table: dict[str, Any]) -> dict[str, KpiFigures]:
    """The figures of the KPI partials the due source counted."""
    partials = (
        KpiPartial.from_document(value)
        for key, value in table.items()
        if key.startswith(PARTIAL_PREFIX)
    )
    return {p.key: p.figures for p in partials if p.source_topic == DUE}


async def test_a_due_records_tickets_write_each_kpi_entry_once() -> None:
    table = WriteLog()
    proc = await opened(table)
    table.writes.clear()

    handled = await proc.on_due_record(due_record(), DUE_AT)

    assert [f.subject for f in handled.facts if f.type == "itsm.sla.breached.v1"] == list(TICKETS)
    written = [key for key, _ in table.writes]
    kpi_writes = Counter(key for key in written if is_kpi_key(key))
    assert kpi_writes and set(kpi_writes.values()) == {1}  # hour and day partials, clock, staged
    assert sum(f.breaches for f in due_partials(table).values()) == 3 * 2  # hour and day
    # the staged entry before the states, the merged plan after them
    staged = written.index(staged_key(DUE, 1))
    states = [written.index(ticket) for ticket in TICKETS]
    partials = [i for i, key in enumerate(written) if key.startswith(PARTIAL_PREFIX)]
    assert staged < min(states) and max(states) < min(partials)


async def test_a_loaded_tickets_outbox_is_decoded_only_when_it_is_not_applied() -> None:
    table = WriteLog()
    proc = await opened(table)
    assert proc.kpis is not None
    value = table["INC-1"]
    view, outbox = ticket_kpis(value)
    assert view is not None and outbox is not None and outbox.offset == 0
    assert ticket_kpis(value, applied=proc.kpis.already_applied) == (view, None)
    # not applied yet (the crash case): decoded, to be applied
    assert ticket_kpis(value, applied=lambda *position: False) == (view, outbox)


@dataclass(frozen=True)
class CrashAfter:
    writes: int  # how many of the due record's table writes reached the changelog


async def crash_points() -> tuple[dict[str, Any], list[tuple[str, Any]], dict[str, KpiFigures]]:
    table = WriteLog()
    proc = await opened(table)
    before = dict(table)
    table.writes.clear()
    await proc.on_due_record(due_record(), DUE_AT)
    return before, list(table.writes), due_partials(table)


@pytest.mark.parametrize("load_first", ["the last stored ticket", "the first stored ticket"])
async def test_a_crash_inside_a_due_record_recovers_the_same_kpis(load_first: str) -> None:
    before, writes, expected = await crash_points()
    for crash in (CrashAfter(n) for n in range(len(writes) + 1)):
        table = WriteLog(before)  # the restarted worker's table, read back from the changelog
        table.replay(writes[: crash.writes])
        proc = processor(table)
        stored = [key for key, _ in writes[: crash.writes] if key in TICKETS]
        if stored:  # another record of a stored ticket comes before the due record's redelivery
            ticket = stored[-1] if load_first == "the last stored ticket" else stored[0]
            handled = await incident(proc, record(replied(ticket), 2, BREACH_DUE), 3)
            assert handled.outcome == "applied", crash

        await proc.on_due_record(due_record(), DUE_AT)  # redelivered: its offset was not committed

        assert due_partials(table) == expected, crash


class GatedSink(RecordingSink):
    """Holds the first batch of SLA facts until the test opens the gate; later sends pass."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = asyncio.Event()
        self.gate = asyncio.Event()

    async def send_many(
        self, topic: str, records: Sequence[tuple[KafkaRecord, int | None]]
    ) -> None:
        if topic == "sla" and not self.holding.is_set():
            self.holding.set()
            await self.gate.wait()
        await super().send_many(topic, records)


async def test_an_incident_event_waits_for_the_due_alerts_of_its_ticket() -> None:
    sink, table = GatedSink(), WriteLog()
    proc = await opened(table)
    proc.sink = sink
    due = asyncio.create_task(proc.on_due_record(due_record(["INC-1"]), DUE_AT))
    await asyncio.wait_for(sink.holding.wait(), 5)  # the breach is being published
    reply = asyncio.create_task(incident(proc, record(replied("INC-1"), 2, BREACH_DUE), 3))

    # Either the reply is applied while the breach is in flight, or it waits for INC-1.
    async def reply_settled() -> bool:
        return reply.done() or proc.ticket_locks.holders("INC-1") == 2

    await eventually(reply_settled, timeout=5, interval=0.001, what="the reply to settle")
    sink.gate.set()
    breach, answer = await asyncio.wait_for(asyncio.gather(due, reply), 5)

    assert "itsm.sla.breached.v1" in [f.type for f in breach.facts]
    assert answer.outcome == "applied"
    state = from_table_value(table["INC-1"], proc.targets)
    assert state.applied_sequence == 2  # the reply's state was not overwritten by the breach's
    again = await proc.on_due_record(due_record(["INC-1"]), SourcePosition(DUE, 1, 8))
    assert again.facts == []  # and the breach is in it: not published a second time
    assert proc.ticket_locks.holders("INC-1") == 0 and len(proc.ticket_locks) == 0
