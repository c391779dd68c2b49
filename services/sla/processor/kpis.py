"""Streaming KPIs in the processor: the table entries, applying plans, publishing snapshots.

The KPI entries live in the `sla-state` table beside the ticket states, under keys that cannot be
ticket ids (`kpi|…` partials, `kpi-clock|…` source clocks, `kpi-gauge|…` backlog gauges,
`kpi-change|…` counted change completions, `kpi-staged|…` the tickets of a due record whose plans
are applied together). One table, on purpose: every write made while processing source partition p
goes to changelog partition p, and a Kafka partition keeps the producer's order, so what survives a
crash is a prefix of the writes. The incident and due agents store the ticket's state (with the
record's `KpiPlan` as its outbox) BEFORE applying the plan: a surviving plan write implies a
surviving state, and a surviving state whose plan writes were lost carries the plan, which is
applied again the next time the ticket is loaded (by a redelivery or by any other record of the
ticket). Each write is guarded by its entry's source offset watermark, so applying a plan twice
changes nothing. Two tables would have two changelogs with no order between them, and a state could
survive while an earlier record's KPI writes did not (then the per-source watermarks would skip them
for good).

A due record's tickets are stored first, all of them, and their plans then applied merged, one
write per entry: they mostly share the same few partials. A `kpi-staged|…` entry written
before the states lists them, so after a crash in between their plans are applied in order
whichever ticket is loaded first (`SlaProcessor._apply_outbox`).

`KpiPublisher` is the timer's side: it reads (never writes) the table and publishes a snapshot
of every partial changed since its last run, and the final snapshot of a partial once its window
is final; after `retention` more (in the source's event time) it asks the due agent, through a
record on the due topic, to delete it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Protocol
from urllib.parse import quote

import structlog

from services.sla.domain.kpi_partials import Dims, KpiFigures, KpiPartial, parse_partial_key
from services.sla.domain.kpis import (
    DEFAULT_GRACE,
    KpiContribution,
    KpiPlan,
    SourceClock,
    TicketKpiView,
    apply_update,
    is_final,
    partial_key_of,
    plan,
)
from services.sla.processor.codec import kpi_document
from shared.contracts.codec import KafkaRecord, encode
from shared.contracts.envelope import Envelope
from shared.contracts.sla_kpis import KpiUpdated

log = structlog.get_logger(__name__)

PARTIAL_PREFIX = "kpi|"
SOURCE = "/itsm/sla"
EVICT = "kpi-evict"  # the kind of a due-topic record that deletes final partials
FLUSH = "kpi-flush"  # the kind of a due-topic record that flushes a deferred source's plans


class Table(Protocol):
    def get(self, key: Any, /) -> Any: ...

    def __setitem__(self, key: str, value: Any) -> None: ...


def is_kpi_key(key: object) -> bool:
    return isinstance(key, str) and key.startswith(("kpi|", "kpi-"))


@lru_cache(maxsize=1024)  # the keys are built per event, from few distinct arguments
def clock_key(topic: str, partition: int) -> str:
    return f"kpi-clock|{quote(topic, safe='')}|{partition}"


@lru_cache(maxsize=4096)
def gauge_key(topic: str, partition: int, dims: Dims) -> str:
    parts = [topic, str(partition), dims.team, dims.priority, dims.service]
    return "kpi-gauge|" + "|".join(quote(part, safe="") for part in parts)


def change_key(change_id: str) -> str:
    return f"kpi-change|{change_id}"


def staged_key(topic: str, partition: int) -> str:
    return f"kpi-staged|{quote(topic, safe='')}|{partition}"


@dataclass(frozen=True)
class StagedRecord:
    """The tickets of a source's last multi-ticket record (a due record) whose states carry a
    plan of it, in plan order. Written before those states: see `SlaProcessor._store_fired`."""

    topic: str
    partition: int
    record: int  # the record's offset; its tickets' plans are at record * slots + slot
    ticket_ids: tuple[str, ...]

    def holds(self, outbox: KpiPlan, slots: int) -> bool:
        """Whether `outbox` is one of this record's plans."""
        source = (outbox.topic, outbox.partition) == (self.topic, self.partition)
        return source and outbox.offset // slots == self.record


# -- per-ticket part of a table value -----------------------------------------------------------


def ticket_kpis(
    value: Any, *, applied: Callable[[str, int, int], bool] | None = None
) -> tuple[TicketKpiView | None, KpiPlan | None]:
    """The KPI view and the outbox plan stored beside a ticket's SLA state (absent in states
    stored before the KPIs existed), from a table value of either format (codec.py). With
    `applied` (topic, partition, offset -> whether that plan is in), an outbox already applied,
    the usual case, comes back as None without being decoded."""
    doc = kpi_document(value) or {}
    view = TicketKpiView.from_document(doc["view"]) if doc.get("view") else None
    stored = doc.get("outbox")
    if not stored or (applied and applied(stored["topic"], stored["partition"], stored["offset"])):
        return view, None
    return view, KpiPlan.from_document(_dense(stored))


def ticket_kpi_document(view: TicketKpiView | None, outbox: KpiPlan | None) -> dict[str, Any]:
    """What `ticket_kpis` reads back, to store with the state (`codec.to_table_value`). The
    outbox's figures keep only what differs from zero: every open ticket carries its last plan,
    and a plan's partials are mostly zeros."""
    return {
        "view": None if view is None else view.to_document(),
        "outbox": None if outbox is None else _sparse(outbox.to_document()),
    }


def _zero_figures() -> dict[str, Any]:
    return KpiFigures().to_document()


def _sparse(plan: dict[str, Any]) -> dict[str, Any]:
    zero = _zero_figures()
    for partial in plan.get("partials", ()):
        figures = partial["figures"]
        partial["figures"] = {k: v for k, v in figures.items() if zero.get(k, _ABSENT) != v}
    return plan


def _dense(plan: Mapping[str, Any]) -> dict[str, Any]:
    zero = _zero_figures()
    partials = [{**p, "figures": {**zero, **p["figures"]}} for p in plan.get("partials", ())]
    return {**plan, "partials": partials}


_ABSENT = object()


# -- the table entries --------------------------------------------------------------------------


@dataclass
class PartialIndex:
    """In memory: the partials of the owned partitions, which changed since they were last
    published, and which were published final. Rebuilt from the table after a recovery."""

    live: dict[str, KpiPartial] = field(default_factory=dict)  # key -> last known (shape only)
    dirty: set[str] = field(default_factory=set)
    final_sent: set[str] = field(default_factory=set)
    evicting: set[str] = field(default_factory=set)

    def touch(self, partial: KpiPartial) -> None:
        self.live[partial.key] = partial
        self.dirty.add(partial.key)

    def drop(self, key: str) -> None:
        self.live.pop(key, None)
        self.dirty.discard(key)
        self.final_sent.discard(key)
        self.evicting.discard(key)

    def retain(self, partitions: Iterable[int]) -> None:
        keep = set(partitions)
        for key in [k for k, p in self.live.items() if p.source_partition not in keep]:
            self.drop(key)


@dataclass
class PendingWrites:
    """A deferred source partition's KPI entries as its plans since the last flush left them,
    in memory: each entry is written to the table once per flush, not once per plan."""

    first_offset: int  # the earliest plan not flushed: the source's commits stay below it
    plans: int = 0
    tickets: set[str] = field(default_factory=set)  # whose stored outbox holds one of the plans
    partials: dict[str, KpiPartial] = field(default_factory=dict)
    gauges: dict[str, dict[str, int]] = field(default_factory=dict)
    clock: SourceClock | None = None  # written last by `flush`

    def get(self, key: str) -> Any:
        if key in self.partials:
            return self.partials[key].to_document()
        if key in self.gauges:
            return self.gauges[key]
        return None


class KpiRecorder:
    """Plans and applies the KPI writes of one record, inside the agent processing it.

    The plans of a `deferred` source (the incident topic in the worker) are applied in memory
    and written by `flush`, once per entry for many records. Until then each such plan exists
    only as the outbox of its ticket's stored state, so three rules keep "nothing lost":
    a ticket's state is stored over a pending plan only after a flush (`settle`); the source's
    commits stay below the first pending plan (`first_unflushed`), so after a crash every
    pending record is read again; and a pending plan's outbox is applied only by its own
    record's redelivery (`SlaProcessor._apply_outbox`), which comes in offset order.
    """

    def __init__(
        self,
        table: Table,
        *,
        grace: timedelta = DEFAULT_GRACE,
        index: PartialIndex | None = None,
        deferred: Mapping[str, int] | None = None,
    ) -> None:
        self.table = table
        self.grace = grace
        self.index = index or PartialIndex()
        self.deferred = dict(deferred or {})  # topic -> plans held before flushing
        if any(batch < 1 for batch in self.deferred.values()):
            raise ValueError("a deferred source needs a batch of at least 1 plan")
        self._pending: dict[tuple[str, int], PendingWrites] = {}
        # The table's clock of each source partition, as last read or written here: every plan
        # and every loaded outbox asks for it (a RocksDB get and a JSON decode each, 5-7 % of
        # the due path). Only this recorder writes clocks; the table changes under it only when
        # a partition changes hands, and `drop_pending` (revoked) and `rebuild` (recovered)
        # forget them then.
        self._clocks: dict[tuple[str, int], SourceClock] = {}

    def _read(self, topic: str, partition: int, key: str) -> Any:
        pending = self._pending.get((topic, partition))
        value = None if pending is None else pending.get(key)
        return self.table.get(key) if value is None else value

    def clock(self, topic: str, partition: int) -> SourceClock:
        pending = self._pending.get((topic, partition))
        if pending is not None and pending.clock is not None:
            return pending.clock
        return self.flushed_clock(topic, partition)

    def flushed_clock(self, topic: str, partition: int) -> SourceClock:
        """The clock as the table has it (what the published snapshots reflect)."""
        source = (topic, partition)
        cached = self._clocks.get(source)
        if cached is None:
            value = self.table.get(clock_key(topic, partition))
            cached = SourceClock() if value is None else SourceClock.from_document(value)
            self._clocks[source] = cached
        return cached

    def _gauge(self, topic: str, partition: int) -> Callable[[Dims], int]:
        def count(dims: Dims) -> int:
            value = self._read(topic, partition, gauge_key(topic, partition, dims))
            return 0 if value is None else int(value["open"])

        return count

    def plan(
        self,
        topic: str,
        partition: int,
        offset: int,
        items: Sequence[KpiContribution],
        seen: datetime | None = None,
    ) -> KpiPlan:
        return plan(
            topic, partition, offset, items, clock=self.clock(topic, partition),
            gauge=self._gauge(topic, partition), grace=self.grace, seen=seen,
        )  # fmt: skip

    def stage(self, topic: str, partition: int, record: int, ticket_ids: Sequence[str]) -> None:
        self.table[staged_key(topic, partition)] = {"record": record, "tickets": list(ticket_ids)}

    def staged(self, topic: str, partition: int) -> StagedRecord | None:
        value = self.table.get(staged_key(topic, partition))
        if value is None:
            return None
        return StagedRecord(topic, partition, int(value["record"]), tuple(value["tickets"]))

    def already_applied(self, topic: str, partition: int, offset: int) -> bool:
        """The source clock is written last of a plan: past it, the whole record is in."""
        return offset <= self.clock(topic, partition).watermark

    def apply(self, kpi_plan: KpiPlan, *, ticket_id: str | None = None) -> int:
        """Write the plan's entries not written yet (partials, gauges, then the clock), or, for
        a deferred source, hold them for `flush` (`ticket_id`: whose outbox holds the plan);
        returns how many partials changed."""
        topic, partition, offset = kpi_plan.topic, kpi_plan.partition, kpi_plan.offset
        if self.already_applied(topic, partition, offset):
            return 0  # the clock is written last: all of it is in (the usual outbox case)
        changed = self._hold(kpi_plan, ticket_id)
        if topic not in self.deferred:
            self.flush(topic, partition)
        return changed

    def _hold(self, kpi_plan: KpiPlan, ticket_id: str | None) -> int:
        topic, partition, offset = kpi_plan.topic, kpi_plan.partition, kpi_plan.offset
        pending = self._pending.setdefault((topic, partition), PendingWrites(offset))
        changed = 0
        for update in kpi_plan.partials:
            key = partial_key_of(kpi_plan, update)
            current = pending.partials.get(key)
            if current is None:
                value = self.table.get(key)
                current = None if value is None else KpiPartial.from_document(value)
            updated = apply_update(current, update, topic, partition, offset)
            if updated is not None:
                pending.partials[key] = updated
                changed += 1
        for dims, count in kpi_plan.gauges:
            key = gauge_key(topic, partition, dims)
            value = self._read(topic, partition, key)
            if value is None or offset > int(value["watermark"]):
                pending.gauges[key] = {"open": count, "watermark": offset}
        pending.clock = SourceClock(kpi_plan.clock, offset)
        pending.plans += 1
        if ticket_id is not None:
            pending.tickets.add(ticket_id)
        return changed

    def defers(self, topic: str) -> bool:
        return topic in self.deferred

    def first_unflushed(self, topic: str, partition: int) -> int | None:
        """The offset of the source's earliest plan not in the table yet (None: all are)."""
        pending = self._pending.get((topic, partition))
        return None if pending is None else pending.first_offset

    def pending_sources(self) -> list[tuple[str, int]]:
        return list(self._pending)

    def flush(self, topic: str, partition: int) -> int:
        """Write a deferred source's held entries to the table, inside an agent processing that
        partition (the table's writes go to its changelog partition); the clock last, so a
        crash in between leaves the plans to be applied again. Returns how many plans it held."""
        pending = self._pending.get((topic, partition))
        if pending is None:
            return 0
        for key, partial in pending.partials.items():
            self.table[key] = partial.to_document()
            self.index.touch(partial)
        for key, gauge in pending.gauges.items():
            self.table[key] = gauge
        if pending.clock is not None:
            self.table[clock_key(topic, partition)] = pending.clock.to_document()
            self._clocks[(topic, partition)] = pending.clock
        del self._pending[(topic, partition)]  # held (commits too) until all of it is written
        return pending.plans

    def due_flush(self, topic: str, partition: int) -> bool:
        """Whether the source holds as many plans as its batch."""
        pending = self._pending.get((topic, partition))
        return pending is not None and pending.plans >= self.deferred.get(topic, 1)

    def settle(self, partition: int, ticket_ids: Iterable[str]) -> int:
        """Flush every deferred source of `partition` that holds a plan of one of `ticket_ids`:
        their states are about to be stored over the outboxes holding those plans."""
        tickets = set(ticket_ids)
        flushed = 0
        for topic, held in self.pending_sources():
            pending = self._pending[(topic, held)]
            if held == partition and not pending.tickets.isdisjoint(tickets):
                flushed += self.flush(topic, held)
        return flushed

    def drop_pending(self, partitions: Iterable[int]) -> None:
        """Forget what revoked partitions held: their records are read again (the commits stayed
        below them) by whichever worker owns them next, and their outboxes applied then."""
        gone = set(partitions)
        for source in [s for s in self._pending if s[1] in gone]:
            del self._pending[source]
        for source in [s for s in self._clocks if s[1] in gone]:
            del self._clocks[source]  # the next owner moves them on

    def evict(self, keys: Iterable[str], table_delete: Callable[[str], None]) -> int:
        """Delete final partials (inside the due agent): returns how many were there."""
        deleted = 0
        for key in keys:
            if key.startswith(PARTIAL_PREFIX) and self.table.get(key) is not None:
                table_delete(key)
                deleted += 1
            self.index.drop(key)
        return deleted

    def rebuild(self, items: Iterable[tuple[Any, Any]], partitions: set[int]) -> int:
        """After a recovery: index the partials of `partitions` and mark them all for publishing
        (a crash between a table write and its snapshot must not lose the snapshot)."""
        self._clocks.clear()  # the table was read back from the changelog
        index = self.index
        index.live.clear()
        index.dirty.clear()
        index.final_sent.clear()
        index.evicting.clear()
        for key, value in items:
            if not (isinstance(key, str) and key.startswith(PARTIAL_PREFIX)):
                continue
            try:
                partial = KpiPartial.from_document(value)
            except (KeyError, TypeError, ValueError) as exc:
                log.error("sla.kpi.unreadable", key=key, error=str(exc))
                continue
            if partial.source_partition in partitions:
                index.touch(partial)
        return len(index.live)


# -- publishing ---------------------------------------------------------------------------------


class Sink(Protocol):
    async def send_many(
        self, topic: str, records: Sequence[tuple[KafkaRecord, int | None]]
    ) -> None: ...


def snapshot_record(partial: KpiPartial, now: datetime) -> KafkaRecord:
    data = KpiUpdated.model_validate(partial.to_document()).model_dump(mode="json")
    envelope = Envelope(
        type=KpiUpdated.event_type, source=SOURCE, subject=partial.key,
        sequence=partial.sequence, data=data, time=now,
    )  # fmt: skip
    return encode(envelope)


def evict_record(keys: Sequence[str]) -> bytes:
    return json.dumps({"kind": EVICT, "keys": list(keys)}).encode()


def flush_record(topic: str) -> bytes:
    return json.dumps({"kind": FLUSH, "topic": topic}).encode()


class KpiPublisher:
    """The timer's work: snapshots of changed and newly final partials, eviction requests."""

    def __init__(
        self,
        recorder: KpiRecorder,
        sink: Sink,
        *,
        kpi_topic: str,
        due_topic: str,
        retention: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        self.recorder = recorder
        self.sink = sink
        self.kpi_topic = kpi_topic
        self.due_topic = due_topic
        self.retention = retention
        self.clock = clock

    async def publish(self) -> int:
        """Publish what changed; returns how many snapshots were sent. First, ask the due agent
        to flush the plans deferred sources hold (a quiet partition reaches no batch), so they
        are in the table, and published, by the next run."""
        recorder, index = self.recorder, self.recorder.index
        held = recorder.pending_sources()
        if held:
            flushes = [
                (KafkaRecord(key=FLUSH.encode(), value=flush_record(topic), headers=()), partition)
                for topic, partition in held
            ]
            await self.sink.send_many(self.due_topic, flushes)
        grace, now = recorder.grace, self.clock()
        clocks: dict[tuple[str, int], datetime | None] = {}
        batch: list[tuple[str, KpiPartial]] = []
        evict: dict[int, list[str]] = {}
        for key, shape in list(index.live.items()):
            source = (shape.source_topic, shape.source_partition)
            if source not in clocks:  # what the table holds: the snapshots come from it
                clocks[source] = recorder.flushed_clock(*source).event_time
            source_clock = clocks[source]
            final = is_final(shape.granularity, shape.window_start, source_clock, grace)
            if key in index.dirty or (final and key not in index.final_sent):
                value = recorder.table.get(key)
                if value is None:  # evicted meanwhile
                    index.drop(key)
                    continue
                partial = KpiPartial.from_document(value)
                batch.append((key, _with_final(partial, final)))
            elif (
                final
                and key not in index.evicting
                and is_final(
                    shape.granularity, shape.window_start, source_clock, grace + self.retention
                )
            ):
                evict.setdefault(shape.source_partition, []).append(key)
        if batch:
            records = [(snapshot_record(p, now), None) for _, p in batch]
            # Unmarked before the send: a partial written while it is in flight is marked again
            # and goes out on the next run (unmarking after the send lost that write's snapshot).
            sent = [key for key, _ in batch]
            index.dirty.difference_update(sent)
            try:
                await self.sink.send_many(self.kpi_topic, records)
            except BaseException:
                index.dirty.update(sent)  # not sent: they go out on the next run
                raise
            for key, partial in batch:
                if partial.final:
                    index.final_sent.add(key)
        if evict:
            await self.sink.send_many(
                self.due_topic,
                [
                    (KafkaRecord(key=b"kpi-evict", value=evict_record(keys), headers=()), p)
                    for p, keys in evict.items()
                ],
            )
            for keys in evict.values():
                index.evicting.update(keys)
        return len(batch)


def _with_final(partial: KpiPartial, final: bool) -> KpiPartial:
    return replace(partial, final=final)


def parse_flush(doc: Mapping[str, Any]) -> str | None:
    """The source topic a flush request names, or None when the due record is not one."""
    if doc.get("kind") != FLUSH:
        return None
    topic = doc.get("topic")
    if not isinstance(topic, str) or not topic:
        raise ValueError(f"a KPI flush request without a topic: {doc!r}")
    return topic


def parse_evict(doc: Mapping[str, Any]) -> list[str] | None:
    """The keys of an eviction request, or None when the due record is not one."""
    if doc.get("kind") != EVICT:
        return None
    keys = [str(key) for key in doc.get("keys", [])]
    for key in keys:
        parse_partial_key(key)  # raises ValueError for anything but a partial key
    return keys
