"""Streaming KPIs through the processor's agents in Faust's test contexts (no broker): incident
and change records in, KPI partials in the table, snapshots out; redelivery, the outbox,
breaches from the due path, final snapshots and eviction, dead letters."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.sla.domain.kpi_partials import KpiPartial, KpiSummary, summarize
from services.sla.processor import SlaComponents, SlaSettings, create_app
from services.sla.processor.kpis import FLUSH, flush_record, is_kpi_key
from shared.contracts.changes import ChangeCompleted
from shared.contracts.codec import KafkaRecord, decode, encode
from shared.contracts.envelope import Envelope
from shared.contracts.incidents import (
    IncidentAssigned,
    IncidentEvent,
    IncidentRated,
    IncidentResolved,
)
from shared.contracts.topics import Topic
from tests.faust.conftest import Clock, RecordingSink
from tests.faust.events import created, record, replied

T0 = datetime(2026, 3, 2, 9, 5, tzinfo=UTC)
M = timedelta(minutes=1)


@dataclass
class Kpis:
    sla: SlaComponents
    sink: RecordingSink
    clock: Clock
    incidents: Any
    changes: Any
    due: Any

    async def incident(
        self, rec: KafkaRecord, partition: int = 1, offset: int | None = None
    ) -> Any:
        if offset is not None:
            self.incidents.sent_offset = offset  # a redelivery: the same offset again
        await self.incidents.put(
            rec.value, key=rec.key, headers=list(rec.headers), partition=partition
        )
        return self.incidents.results[self.incidents.processed_offset - 1]

    async def change(self, rec: KafkaRecord, partition: int = 1, offset: int | None = None) -> Any:
        if offset is not None:
            self.changes.sent_offset = offset
        await self.changes.put(
            rec.value, key=rec.key, headers=list(rec.headers), partition=partition
        )
        return self.changes.results[self.changes.processed_offset - 1]

    async def flush(self) -> None:
        """What the KPI timer's flush requests do: the due agent writes the incident plans the
        worker holds in memory (kpis.py) to the table."""
        assert self.sla.kpis is not None
        for topic, partition in self.sla.kpis.pending_sources():
            await self.due.put(flush_record(topic), key=FLUSH.encode(), partition=partition)
        assert self.sla.kpis.pending_sources() == []

    async def publish(self) -> list[Envelope]:
        before = len(self.sink.on(Topic.SLA_KPIS))
        assert self.sla.kpi_publisher is not None
        await self.flush()
        await self.sla.kpi_publisher.publish()
        return [decode(s.record) for s in self.sink.on(Topic.SLA_KPIS)[before:]]

    def latest(self) -> dict[str, KpiPartial]:
        """What a consumer of the compacted topic keeps: the highest sequence per key."""
        best: dict[str, Envelope] = {}
        for sent in self.sink.on(Topic.SLA_KPIS):
            env = decode(sent.record)
            assert sent.record.key == env.subject.encode()
            if env.subject not in best or best[env.subject].sequence <= env.sequence:
                best[env.subject] = env
        return {k: KpiPartial.from_document(e.data) for k, e in best.items()}

    def summary(self, granularity: str = "hour") -> KpiSummary:
        return summarize(p for p in self.latest().values() if p.granularity == granularity)

    def kpi_entries(self) -> dict[str, Any]:
        return {k: v for k, v in self.sla.table.items() if is_kpi_key(k)}


@pytest.fixture
async def kpis() -> AsyncIterator[Kpis]:
    sink, clock = RecordingSink(), Clock(T0)
    settings = SlaSettings(
        app_id="sla-kpi-tests", kafka_bootstrap="127.0.0.1:1", kpi_grace=600, kpi_retention=0
    )
    app = create_app(settings, sink=sink, clock=clock)
    sla: SlaComponents = app.sla
    async with (
        sla.incident_agent.test_context() as incidents,
        sla.change_agent.test_context() as changes,
        sla.due_agent.test_context() as due,
    ):
        yield Kpis(sla, sink, clock, incidents, changes, due)


def base(ticket: str, status: str) -> dict[str, Any]:
    return {"incident_id": ticket, "actor": "ann", "status": status}


def lifecycle(ticket: str, start: datetime = T0, service: str = "mail") -> list[KafkaRecord]:
    """created (P3), assigned to L1-desk, replied after 5 min, resolved after 30, rated 5."""
    shift = start - T0
    events: list[tuple[IncidentEvent, datetime]] = [
        (created(ticket, T0, priority="P3", service=service), T0),
        (
            IncidentAssigned(
                **base(ticket, "assigned"),
                group="L1-desk",
                tier="L1",
                assignee="ann",
                previous_group=None,
                previous_assignee=None,
                reassignment_count=0,
            ),
            T0 + M,
        ),
        (replied(ticket), T0 + 5 * M),
        (
            IncidentResolved(
                **base(ticket, "resolved"),
                resolution_code="fixed",
                resolution_notes="ok",
                resolved_at=T0 + 30 * M,
                first_contact_resolution=True,
                group="L1-desk",
                tier="L1",
            ),
            T0 + 30 * M,
        ),
        (IncidentRated(**base(ticket, "resolved"), score=5), T0 + 40 * M),
    ]
    if shift:
        events = [(_shifted(event, shift), at + shift) for event, at in events]
    return [record(event, n, at) for n, (event, at) in enumerate(events, start=1)]


def _shifted(event: IncidentEvent, shift: timedelta) -> IncidentEvent:
    moved = {
        name: getattr(event, name) + shift
        for name in ("opened_at", "resolved_at")
        if hasattr(event, name)
    }
    return event.model_copy(update=moved)


def change_completed(
    change_id: str, outcome: Any, at: datetime, sequence: int = 7, service: str = "mail"
) -> KafkaRecord:
    event = ChangeCompleted(
        change_id=change_id,
        actor="bob",
        status="completed",
        outcome=outcome,
        actual_start=at - 10 * M,
        actual_end=at,
        review_required=False,
        configuration_items=["mx1"],
        services=[service],
    )
    return encode(
        Envelope(
            type=event.event_type,
            source="/itsm/changes",
            subject=change_id,
            sequence=sequence,
            data=event.model_dump(mode="json"),
            time=at,
        )
    )


async def test_an_incident_lifecycle_and_a_change_give_the_kpis(kpis: Kpis) -> None:
    for rec in lifecycle("INC-1"):
        assert (await kpis.incident(rec)).outcome == "applied"
    assert (await kpis.change(change_completed("CHG-1", "successful", T0 + 20 * M))).outcome == (
        "applied"
    )
    assert (await kpis.change(change_completed("CHG-2", "rolled_back", T0 + 25 * M))).outcome == (
        "applied"
    )

    snapshots = await kpis.publish()

    assert snapshots and {s.type for s in snapshots} == {"itsm.sla.kpi_updated.v1"}
    assert all(s.sequence == 2 * (s.data["watermark"] + 1) for s in snapshots)  # not final yet
    summary = kpis.summary()
    assert (summary.opened, summary.resolved, summary.backlog) == (1, 1, 0)
    assert summary.first_response_mean == 300.0
    assert summary.mttr_mean == 1800.0
    assert summary.mttr_p50 == pytest.approx(1800, rel=0.01)
    assert (summary.csat_average, summary.csat_count, summary.fcr_percent) == (5.0, 1, 100.0)
    assert (summary.sla_met, summary.sla_missed, summary.sla_compliance_percent) == (2, 0, 100.0)
    assert (summary.changes_completed, summary.change_success_percent) == (2, 50.0)
    assert summary.windows == ("2026-03-02T09:00:00+00:00",)
    assert kpis.summary("day").opened == 1
    teams = {p.dims.team for p in kpis.latest().values() if p.figures.resolved}
    assert teams == {"L1-desk"}  # the resolution counted for the team it was assigned to
    assert await kpis.publish() == []  # nothing changed since


async def test_redelivered_records_and_a_change_published_twice_count_once(kpis: Kpis) -> None:
    records = lifecycle("INC-2")
    for rec in records:
        await kpis.incident(rec)
    await kpis.change(change_completed("CHG-3", "successful", T0 + 20 * M))
    await kpis.publish()
    entries, before = kpis.kpi_entries(), kpis.summary()

    for offset, rec in enumerate(records):  # the same records at the same offsets
        assert (await kpis.incident(rec, offset=offset)).outcome == "duplicate"
    assert (
        await kpis.change(change_completed("CHG-3", "successful", T0 + 20 * M), offset=0)
    ).outcome == ("duplicate")
    # The change service's relay published the same event again, at a new offset.
    twice = await kpis.change(change_completed("CHG-3", "successful", T0 + 20 * M))
    assert twice.outcome == "duplicate"

    def counted(entries: dict[str, Any]) -> dict[str, Any]:  # all but the source clocks
        return {k: v for k, v in entries.items() if not k.startswith("kpi-clock")}

    assert counted(kpis.kpi_entries()) == counted(entries)
    await kpis.publish()
    assert kpis.summary() == before


async def test_a_plan_lost_after_its_state_was_stored_is_applied_from_the_state(kpis: Kpis) -> None:
    rec = record(created("INC-3", T0, priority="P2"), 1, T0)
    await kpis.incident(rec, offset=0)
    await kpis.flush()
    applied = kpis.kpi_entries()
    assert applied
    # The crash: the ticket's state reached the changelog, its KPI writes did not.
    for key in applied:
        kpis.sla.table.data.pop(key)
    assert kpis.sla.table.get("INC-3") is not None and not kpis.kpi_entries()
    # The restarted worker: its table recovered, its recorder forgets what it had in memory
    # (app.py, rearm_after_recovery).
    assert kpis.sla.kpis is not None
    kpis.sla.kpis.rebuild(kpis.sla.table.items(), {1})

    handled = await kpis.incident(rec, offset=0)  # redelivered
    await kpis.flush()

    assert handled.outcome == "duplicate"  # for the SLA engine
    assert kpis.kpi_entries() == applied  # the state's outbox put the KPI writes back


async def test_a_breach_found_by_the_timer_counts_in_the_due_partition(kpis: Kpis) -> None:
    await kpis.incident(record(created("INC-4", T0, priority="P1"), 1, T0))
    kpis.clock.now = T0 + 16 * M  # past the 15-minute P1 first-response target
    before = len(kpis.sink.on(kpis.sla.processor.due_topic))
    await kpis.sla.processor.send_due()
    for sent in kpis.sink.on(kpis.sla.processor.due_topic)[before:]:
        await kpis.due.put(sent.record.value, key=sent.record.key, partition=sent.partition)

    await kpis.publish()
    breached = [p for p in kpis.latest().values() if p.figures.breaches]
    assert {(p.source_topic, p.source_partition, p.dims.priority) for p in breached} == {
        (kpis.sla.processor.due_topic, 1, "P1")
    }
    assert kpis.summary().breaches == 1


async def test_final_windows_are_published_final_then_evicted(kpis: Kpis) -> None:
    await kpis.incident(record(created("INC-5", T0, priority="P4"), 1, T0))
    await kpis.publish()
    # An event two days later on the same partition: the 9:00 hour and the day are final.
    later = T0 + timedelta(days=2)
    await kpis.incident(record(created("INC-6", later, priority="P4"), 1, later))
    snapshots = await kpis.publish()
    final = {s.subject for s in snapshots if s.data["final"]}
    old = {k for k, p in kpis.latest().items() if p.window_start < later - timedelta(days=1)}
    assert old and final == old
    assert all(
        s.sequence == 2 * (s.data["watermark"] + 1) + 1 for s in snapshots if s.data["final"]
    )

    before = len(kpis.sink.on(kpis.sla.processor.due_topic))
    await kpis.publish()  # retention 0: the final ones are due for eviction
    for sent in kpis.sink.on(kpis.sla.processor.due_topic)[before:]:
        await kpis.due.put(sent.record.value, key=sent.record.key, partition=sent.partition)

    assert not old & set(kpis.kpi_entries())
    assert {k for k in kpis.kpi_entries() if k.startswith("kpi|")}  # the new ones stay
    # A late event for the evicted window counts as late, in the current window.
    await kpis.incident(record(IncidentRated(**base("INC-5", "resolved"), score=1), 2, T0 + M))
    await kpis.publish()
    late = [p for p in kpis.latest().values() if p.figures.late_events]
    assert {(p.granularity, p.window_start, p.figures.late_events) for p in late} == {
        ("hour", datetime(2026, 3, 4, 9, tzinfo=UTC), 1),
        ("day", datetime(2026, 3, 4, tzinfo=UTC), 1),
    }
    assert kpis.summary().csat_count == 0  # not applied


async def test_an_undecodable_change_record_is_dead_lettered(kpis: Kpis) -> None:
    handled = await kpis.change(KafkaRecord(b"CHG-9", b"{not json", ()))
    assert handled.outcome == "dead_lettered"
    assert kpis.sink.on(Topic.DEAD_LETTER)
