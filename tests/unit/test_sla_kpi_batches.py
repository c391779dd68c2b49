"""The incident path's KPI plans held in memory and written in batches (kpis.py), on a dict
table (no Faust, no broker):

- a batch writes each KPI entry once and leaves the entries an event-by-event run leaves;
- the source's commits stay below the first held plan; the KPI timer asks the due agent to
  flush a quiet partition;
- a ticket's state is stored over a held plan only after a flush: its next incident event,
  a breach of it;
- a crash after any table write, with the records read again from as far as the commits could
  have gone (or from the start), leaves the same entries;
- after such a crash a due ticket whose last plan is not in waits for its record;
- the source clock is read from the table once while its partition is owned, and again after
  the partition was revoked or its table recovered.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.sla.domain.kpi_partials import KpiPartial
from services.sla.processor.catalog import default_catalog
from services.sla.processor.codec import Due, from_table_value
from services.sla.processor.fetching import SeekLedger, SourceOrder
from services.sla.processor.handling import SlaProcessor
from services.sla.processor.kpis import (
    FLUSH,
    KpiPublisher,
    KpiRecorder,
    flush_record,
    is_kpi_key,
    parse_flush,
)
from services.sla.processor.wakeups import WakeupIndex
from shared.bus.processing import SourcePosition
from shared.contracts.codec import KafkaRecord, decode
from tests.faust.conftest import RecordingSink
from tests.faust.events import assigned, created, record, replied, resolved
from tests.support.tables import WriteLog

T0 = datetime(2026, 3, 2, 9, 5, tzinfo=UTC)
INCIDENTS, DUE, PARTITION = "itsm.incidents.events.v1", "sla-due", 1
BREACH_DUE = T0 + timedelta(minutes=16)  # past the P1 first response (15 min)
AT = T0 + timedelta(minutes=2)

# One partition's incident records, in offset order: tickets interleaved; INC-1 comes back while
# its plan is held (batches of 3), and the batch fills.
EVENTS: list[KafkaRecord] = [
    record(created("INC-1", T0), 1, T0),
    record(created("INC-2", T0), 1, T0),
    record(assigned("INC-1"), 2, AT),
    record(created("INC-3", T0, priority="P3"), 1, T0),
    record(replied("INC-2"), 2, AT),
    record(created("INC-4", T0), 1, T0),
    record(replied("INC-1"), 3, AT),
    record(resolved("INC-2", AT), 3, AT),
]
OPENINGS = (0, 1, 3, 5)  # four tickets created, none twice


def processor(table: dict[str, Any], batch: int, sink: RecordingSink | None = None) -> SlaProcessor:
    deferred = {INCIDENTS: batch} if batch > 1 else {}
    return SlaProcessor(
        table=table, sink=sink or RecordingSink(), catalog=default_catalog(),
        index=WakeupIndex(), group="sla-tests", sla_topic="sla", due_topic=DUE,
        dead_letter_topic="dlq", clock=lambda: BREACH_DUE,
        kpis=KpiRecorder(table, deferred=deferred),
    )  # fmt: skip


def kpis(proc: SlaProcessor) -> KpiRecorder:
    assert proc.kpis is not None
    return proc.kpis


async def incident(proc: SlaProcessor, offset: int) -> Any:
    handled = await proc.on_incident_record(
        EVENTS[offset], SourcePosition(INCIDENTS, PARTITION, offset)
    )
    assert handled.outcome in ("applied", "duplicate"), handled
    return handled


async def flush_request(proc: SlaProcessor, offset: int = 90) -> Any:
    """The due agent with a flush request the KPI timer sent to the partition."""
    return await proc.on_due_record(flush_record(INCIDENTS), SourcePosition(DUE, PARTITION, offset))


def kpi_entries(table: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in table.items() if is_kpi_key(key)}


async def one_by_one() -> dict[str, Any]:
    """The KPI entries the events leave when each plan is written at once."""
    table: dict[str, Any] = {}
    proc = processor(table, batch=1)
    for offset in range(len(EVENTS)):
        await incident(proc, offset)
    return kpi_entries(table)


async def test_a_batch_writes_each_kpi_entry_once_and_counts_as_one_by_one() -> None:
    table = WriteLog()
    proc = processor(table, batch=100)
    for offset in OPENINGS:
        await incident(proc, offset)
    assert kpi_entries(table) == {}  # held

    await flush_request(proc)

    writes = Counter(key for key, _ in table.writes if is_kpi_key(key))
    assert writes and set(writes.values()) == {1}
    single = WriteLog()
    plain = processor(single, batch=1)
    for offset in OPENINGS:
        await incident(plain, offset)
    assert kpi_entries(table) == kpi_entries(single)
    assert sum(Counter(key for key, _ in single.writes if is_kpi_key(key)).values()) > sum(
        writes.values()
    )


async def test_the_whole_stream_in_batches_leaves_the_entries_of_one_by_one() -> None:
    table: dict[str, Any] = {}
    proc = processor(table, batch=3)
    for offset in range(len(EVENTS)):
        await incident(proc, offset)
    await flush_request(proc)

    assert kpi_entries(table) == await one_by_one()


async def test_commits_stay_below_the_first_held_plan_until_a_flush() -> None:
    proc = processor({}, batch=100)
    recorder = kpis(proc)
    order = SourceOrder(SeekLedger())
    order.holds["kpi-plans"] = lambda tp: recorder.first_unflushed(*tp)
    tp = (INCIDENTS, PARTITION)

    await incident(proc, 0)
    await incident(proc, 1)
    assert recorder.first_unflushed(INCIDENTS, PARTITION) == 0
    assert order.commit_cap(tp, 2) == 0  # record 0 is read again after a crash

    handled = await flush_request(proc)

    assert handled.outcome == "applied" and handled.reason == "flushed 2 KPI plans"
    assert recorder.first_unflushed(INCIDENTS, PARTITION) is None
    assert order.commit_cap(tp, 2) == 2


async def test_a_full_batch_is_flushed_by_the_incident_agent() -> None:
    table: dict[str, Any] = {}
    proc = processor(table, batch=2)
    await incident(proc, 0)
    assert kpis(proc).first_unflushed(INCIDENTS, PARTITION) == 0
    await incident(proc, 1)  # the second plan fills the batch
    assert kpis(proc).first_unflushed(INCIDENTS, PARTITION) is None
    assert kpis(proc).flushed_clock(INCIDENTS, PARTITION).watermark == 1


async def test_the_kpi_timer_asks_for_a_flush_of_each_partition_holding_plans() -> None:
    sink = RecordingSink()
    proc = processor({}, batch=100, sink=sink)
    await incident(proc, 0)
    publisher = KpiPublisher(
        kpis(proc), sink, kpi_topic="kpis", due_topic=DUE, retention=timedelta(days=1),
        clock=lambda: BREACH_DUE,
    )  # fmt: skip

    await publisher.publish()

    requests = [s for s in sink.on(DUE) if s.record.key == FLUSH.encode()]
    assert [(s.partition, parse_flush(json.loads(s.record.value))) for s in requests] == [
        (PARTITION, INCIDENTS)
    ]


def test_a_flush_request_without_a_topic_is_refused() -> None:
    with pytest.raises(ValueError, match="without a topic"):
        parse_flush({"kind": FLUSH})
    assert parse_flush({"kind": "kpi-evict", "keys": []}) is None


async def test_a_tickets_next_event_flushes_its_held_plan_before_its_state_is_stored() -> None:
    table = WriteLog()
    proc = processor(table, batch=100)
    await incident(proc, 0)  # INC-1 created: held
    await incident(proc, 1)
    table.writes.clear()

    await incident(proc, 2)  # INC-1 assigned

    keys = [key for key, _ in table.writes]
    assert keys.index("INC-1") > max(i for i, key in enumerate(keys) if is_kpi_key(key))
    assert kpis(proc).first_unflushed(INCIDENTS, PARTITION) == 2  # only INC-1's new plan held


async def test_a_breach_flushes_the_held_plan_of_its_ticket_before_storing_it() -> None:
    table = WriteLog()
    proc = processor(table, batch=100)
    await incident(proc, 0)
    table.writes.clear()
    due = json.dumps(Due(("INC-1",), BREACH_DUE).to_doc()).encode()

    handled = await proc.on_due_record(due, SourcePosition(DUE, PARTITION, 5))

    assert "itsm.sla.breached.v1" in [f.type for f in handled.facts]
    keys = [key for key, _ in table.writes]
    flushed = [i for i, key in enumerate(keys) if key.startswith("kpi-clock|itsm.incidents")]
    assert flushed and flushed[0] < keys.index("INC-1")
    assert kpis(proc).first_unflushed(INCIDENTS, PARTITION) is None


async def crash_run() -> tuple[list[tuple[str, Any]], list[int]]:
    """The stream in batches of 3, then a flush: the table's writes, and for each write the
    furthest the source's commit could have been when it was made (the record being applied,
    or the first held plan's)."""
    table = WriteLog()
    proc = processor(table, batch=3)
    current = [0]
    caps: list[int] = []

    def cap() -> None:
        held = kpis(proc).first_unflushed(INCIDENTS, PARTITION)
        caps.append(current[0] if held is None else min(held, current[0]))

    table.on_write = cap
    for offset in range(len(EVENTS)):
        current[0] = offset
        await incident(proc, offset)
    current[0] = len(EVENTS)
    await flush_request(proc)
    return table.writes, caps


@pytest.mark.parametrize("read_again_from", ["the furthest commit", "the beginning"])
async def test_a_crash_after_any_write_leaves_the_entries_of_one_by_one(
    read_again_from: str,
) -> None:
    expected = await one_by_one()
    writes, caps = await crash_run()
    for crash in range(len(writes) + 1):
        table = WriteLog()
        table.replay(writes[:crash])  # the restarted worker's table, from the changelog
        proc = processor(table, batch=3)
        start = 0 if read_again_from == "the beginning" or crash == 0 else caps[crash - 1]

        for offset in range(start, len(EVENTS)):
            await incident(proc, offset)
        await flush_request(proc, offset=91)

        assert kpi_entries(table) == expected, f"crash after write {crash}, from {start}"
        applied = {t: from_table_value(table[t], proc.targets).applied_sequence for t in TICKETS}
        assert applied == {"INC-1": 3, "INC-2": 3, "INC-3": 1, "INC-4": 1}


TICKETS: Sequence[str] = ("INC-1", "INC-2", "INC-3", "INC-4")


async def test_after_a_crash_a_due_ticket_waits_for_its_record_to_be_read_again() -> None:
    table = WriteLog()
    proc = processor(table, batch=100)
    await incident(proc, 0)  # INC-1 created, its plan held; then the worker dies
    restarted = processor(WriteLog(table), batch=100)
    due = json.dumps(Due(("INC-1",), BREACH_DUE).to_doc()).encode()

    waited = await restarted.on_due_record(due, SourcePosition(DUE, PARTITION, 5))

    assert waited.facts == []  # storing the breach would overwrite the plan not yet in
    wakeup = restarted.index.get("INC-1")  # it comes round again
    assert wakeup is not None and wakeup.at == BREACH_DUE + restarted.tick_retry
    await incident(restarted, 0)  # read again: a duplicate, whose stored plan is applied
    breach = await restarted.on_due_record(due, SourcePosition(DUE, PARTITION, 6))
    assert "itsm.sla.breached.v1" in [f.type for f in breach.facts]
    await flush_request(restarted)
    opened = [
        v
        for k, v in restarted.table.items()  # type: ignore[attr-defined]
        if k.startswith("kpi|itsm.incidents") and v["granularity"] == "day"
    ]
    assert sum(p["figures"]["opened"] for p in opened) == 1


class FlushingSink(RecordingSink):
    """Lets the due agent flush while the publisher's snapshots are in flight, once."""

    def __init__(self) -> None:
        super().__init__()
        self.proc: SlaProcessor | None = None

    async def send_many(
        self, topic: str, records: Sequence[tuple[KafkaRecord, int | None]]
    ) -> None:
        if topic == "kpis" and self.proc is not None:
            proc, self.proc = self.proc, None
            await flush_request(proc, offset=92)
        await super().send_many(topic, records)


async def test_a_partial_written_while_its_snapshot_is_in_flight_is_published_next() -> None:
    sink = FlushingSink()
    proc = processor({}, batch=100, sink=sink)
    publisher = KpiPublisher(
        kpis(proc), sink, kpi_topic="kpis", due_topic=DUE, retention=timedelta(days=1),
        clock=lambda: BREACH_DUE,
    )  # fmt: skip
    await incident(proc, 0)  # INC-1 opened
    await flush_request(proc)
    await incident(proc, 1)  # INC-2 opened, held: flushed during the next snapshots' send
    sink.proc = proc

    await publisher.publish()
    await publisher.publish()

    opened: dict[str, int] = {}
    for sent in sink.on("kpis"):
        snapshot = KpiPartial.from_document(decode(sent.record).data)
        if snapshot.granularity == "day":
            opened[snapshot.source_topic] = snapshot.figures.opened
    assert opened[INCIDENTS] == 2


class ClockReads(dict[str, Any]):
    """A table that counts the reads of source clocks (a RocksDB get and a decode each)."""

    def __init__(self) -> None:
        super().__init__()
        self.clock_reads = 0

    def get(self, key: str, default: Any = None) -> Any:
        if key.startswith("kpi-clock|"):
            self.clock_reads += 1
        return super().get(key, default)


async def test_the_source_clock_is_read_from_the_table_once_while_its_partition_is_owned() -> None:
    table = ClockReads()
    proc = processor(table, batch=2)
    for offset in range(len(EVENTS)):
        await incident(proc, offset)
    await flush_request(proc)
    due = Due(("INC-1", "INC-3", "INC-4"), BREACH_DUE).to_doc()
    handled = await proc.on_due_record(json.dumps(due).encode(), SourcePosition(DUE, PARTITION, 91))
    assert handled.outcome == "applied" and handled.facts

    assert table.clock_reads == 2  # once per source: the incident and the due partition
    assert kpi_entries(table) == kpi_entries(await due_after_one_by_one())


async def due_after_one_by_one() -> dict[str, Any]:
    table: dict[str, Any] = {}
    proc = processor(table, batch=1)
    for offset in range(len(EVENTS)):
        await incident(proc, offset)
    due = Due(("INC-1", "INC-3", "INC-4"), BREACH_DUE).to_doc()
    await proc.on_due_record(json.dumps(due).encode(), SourcePosition(DUE, PARTITION, 91))
    return table


async def test_a_partition_owned_again_plans_from_the_clock_its_other_owner_left() -> None:
    table: dict[str, Any] = {}
    first, other = processor(table, batch=1), processor(table, batch=1)
    for offset in range(4):
        await incident(first, offset)
    assert kpis(first).clock(INCIDENTS, PARTITION).watermark == 3

    kpis(first).drop_pending({PARTITION})  # revoked; the other worker owns it meanwhile
    for offset in range(4, len(EVENTS)):
        await incident(other, offset)

    assert kpis(first).clock(INCIDENTS, PARTITION).watermark == len(EVENTS) - 1
    assert kpis(first).already_applied(INCIDENTS, PARTITION, len(EVENTS) - 1)


async def test_a_recovered_table_is_planned_from_its_recovered_clock() -> None:
    table: dict[str, Any] = {}
    proc = processor(table, batch=1)
    for offset in range(len(EVENTS)):
        await incident(proc, offset)
    recovered = await one_by_one_up_to(3)  # the changelog of a table four records behind
    table.clear()
    table.update(recovered)

    kpis(proc).rebuild(table.items(), {PARTITION})

    assert kpis(proc).clock(INCIDENTS, PARTITION).watermark == 3
    assert not kpis(proc).already_applied(INCIDENTS, PARTITION, 4)


async def one_by_one_up_to(last: int) -> dict[str, Any]:
    table: dict[str, Any] = {}
    proc = processor(table, batch=1)
    for offset in range(last + 1):
        await incident(proc, offset)
    return table
