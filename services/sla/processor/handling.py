"""What the agents do with one record, free of Faust: load the ticket's SLA state, drive the
engine, publish the facts, store the state and re-schedule the ticket's wake-up.

Order matters for at-least-once: the facts are published (and acknowledged) before the state is
stored. A crash in between re-processes the record from the old state, which yields the same
facts with the same sequence numbers, and consumers drop the repeats. The other order could
store a state whose facts were never sent, and the redelivered record would then be skipped.

Why the acknowledgement is still awaited per record (checked in faust-streaming 0.15.3, issue
4): Faust does flush the producer before it commits offsets (`Consumer._commit_offsets` awaits
`app.producer.flush()` before `_commit`), so every record at or below a committed offset has its
facts delivered -- but that covers only what lies below the commit. The table's changelog writes
(`send_soon`) and, with RocksDB, the local database are not tied to the commit: after a crash
the stored state can be ahead of the committed offset. A record re-read from the last commit
would then find its own sequence already applied and be skipped, and facts sent without waiting
that never reached the broker (a failed batch does not stop aiokafka's flush either) would be
lost for good. Keeping "nothing is lost" without the wait would need the state write to follow
the acknowledgement some other way (e.g. the facts kept in the state until a later write).
Awaiting costs one round trip per incident event; the due agent pays it once per due record
(all its tickets' facts together), which is where bursts come from.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol, cast

import structlog
from aiokafka.errors import KafkaError
from opentelemetry import trace
from pydantic import ValidationError

from services.sla.domain import (
    PolicyCatalog,
    SlaState,
    apply,
    due_alerts,
    new_state,
    next_wakeup,
)
from services.sla.domain.calendar import NoWorkingTime
from services.sla.domain.kpis import (
    KpiPlan,
    TicketKpiView,
    change_contributions,
    contributions,
    fact_contributions,
    merge_plans,
)
from services.sla.processor.codec import (
    Due,
    StateFormatError,
    from_table_value,
    stored_trace,
    to_table_value,
)
from services.sla.processor.kpis import (
    KpiRecorder,
    change_key,
    parse_evict,
    parse_flush,
    ticket_kpi_document,
    ticket_kpis,
)
from services.sla.processor.metrics import (
    count_alerts,
    track_open_timers,
    track_prepared_alerts,
)
from services.sla.processor.prepared import AlertSchedule, PreparedAlerts
from services.sla.processor.publishing import RecordSink, fact_envelopes, fact_records
from services.sla.processor.targets import TargetRefs
from services.sla.processor.wakeups import WakeupIndex
from shared.bus.port import DeadLetterHeaders, PermanentEventError, TransientError
from shared.bus.processing import RecordProcessor, RetryPolicy, SourcePosition
from shared.contracts.changes import ChangeEvent
from shared.contracts.codec import KafkaRecord, encode
from shared.contracts.envelope import Envelope
from shared.contracts.incidents import IncidentEvent
from shared.contracts.registry import UnknownEventType, contract_for, is_registered, validate_data
from shared.contracts.sla import SlaEvent
from shared.store.locks import KeyedLocks
from shared.telemetry import context_of, current_traceparent, trace_reference

log = structlog.get_logger(__name__)

Outcome = Literal["applied", "duplicate", "ignored", "dead_lettered", "idle"]
Clock = Callable[[], datetime]
# The KPI source position of the i-th ticket of a due record at offset o is o * DUE_SLOTS + i:
# each ticket's KPI plan needs its own offset (a plan at or below the source's watermark counts
# as applied), and positions stay increasing along the due partition.
DUE_SLOTS = 1 << 16
DEFAULT_DUE_BATCH = 2000
DEFAULT_PREPARE_LIMIT = 20_000
FIRE_GRANULARITY = 0.01  # seconds between the firing loop's rounds, at least
_tracer = trace.get_tracer("itsm.sla")
# A due ticket's new state, its alerts, KPI plan and trace reference, stored after the publish.
Fired = tuple[SlaState, list[Envelope], "tuple[TicketKpiView | None, KpiPlan] | None", str]


@contextmanager
def alerts_span(
    trace_reference: str, ticket_id: str, prepared_for: datetime | None = None
) -> Iterator[None]:
    """A span in the ticket's own trace (the incident's) for the alerts a wake-up found due,
    linked to the due record's span that found them; `prepared_for`: the instant the alerts
    are prepared for (prepared.py) and sent at, an attribute of the span (which then ends
    before they are sent)."""
    tick = trace.get_current_span().get_span_context()
    attributes: dict[str, str] = {"itsm.ticket_id": ticket_id}
    if prepared_for is not None:
        attributes["itsm.sla.fires_at"] = prepared_for.isoformat()
    with _tracer.start_as_current_span(
        "sla alerts due",
        context=context_of(trace_reference),
        links=[trace.Link(tick)] if tick.is_valid else None,
        attributes=attributes,
    ):
        yield


class StateTable(Protocol):
    """The part of a Faust table the processor uses (writes only inside an agent)."""

    def get(self, key: Any, /) -> Any: ...

    def __setitem__(self, key: str, value: Any) -> None: ...

    def __delitem__(self, key: str) -> None: ...


@dataclass
class Handled:
    """What became of one record: what the agents yield (and the tests read)."""

    position: SourcePosition
    ticket_id: str | None = None
    outcome: Outcome = "ignored"
    facts: list[Envelope] = field(default_factory=list)
    reason: str | None = None


_CURRENT: ContextVar[Handled] = ContextVar("sla_handled")


class SlaProcessor:
    def __init__(
        self,
        *,
        table: StateTable,
        sink: RecordSink,
        catalog: PolicyCatalog,
        index: WakeupIndex,
        group: str,
        sla_topic: str,
        due_topic: str,
        dead_letter_topic: str,
        clock: Clock,
        tick_retry: timedelta = timedelta(seconds=5),
        retry: RetryPolicy | None = None,
        kpis: KpiRecorder | None = None,
        due_batch: int = DEFAULT_DUE_BATCH,
        prepare_ahead: timedelta = timedelta(0),
        prepare_limit: int = DEFAULT_PREPARE_LIMIT,
    ) -> None:
        if tick_retry <= timedelta(0):
            raise ValueError("tick_retry must be positive")
        if not 0 < due_batch < DUE_SLOTS:
            raise ValueError(f"due_batch must be between 1 and {DUE_SLOTS - 1}")
        self.table = table
        self.sink = sink
        self.catalog = catalog
        self.index = index
        track_open_timers(index)
        self.sla_topic = sla_topic
        self.due_topic = due_topic
        self.dead_letter_topic = dead_letter_topic
        self.clock = clock
        self.tick_retry = tick_retry
        self.kpis = kpis  # None: no streaming KPIs (the embedded mode, benchmarks)
        self.due_batch = due_batch
        # Alerts prepared up to `prepare_ahead` before they fall due (0: never), at most
        # `prepare_limit` tickets at a time, and sent at their instant (prepared.py).
        self.prepare_ahead = prepare_ahead
        self.prepare_limit = prepare_limit
        self.alerts = AlertSchedule()
        track_prepared_alerts(self.alerts)
        self._targets = TargetRefs(catalog)
        # Each ticket is loaded, its facts published and its state stored under its lock: the
        # incident and due agents of a partition run side by side, and a state loaded by one
        # while the other awaits its facts' acknowledgement would be overwritten by it.
        self.ticket_locks = KeyedLocks()
        # Wake-ups sent and not yet applied (ticket id -> when sent), at most `due_batch`: the
        # timer sends no more than the due agent keeps up with. Entries older than tick_retry
        # are dropped (their records may be gone with a revoked partition; the index resends).
        self._in_flight: dict[str, datetime] = {}
        self._due_sends: list[asyncio.Future[Any]] = []  # delivery of the last ticks' records
        # The platform's per-record semantics: decode, dead-letter what cannot be decoded or
        # applied, retry transient failures, one consumer span per record.
        self._records = RecordProcessor(
            group, self._on_envelope, self._publish_raw, retry, dead_letter_topic
        )
        self._changes = RecordProcessor(
            group, self._on_change_envelope, self._publish_raw, retry, dead_letter_topic
        )

    # -- incident events ------------------------------------------------------------------------

    async def on_incident_record(self, record: KafkaRecord, position: SourcePosition) -> Handled:
        handled = Handled(position)
        token = _CURRENT.set(handled)
        try:
            await self._records.process(record, position)
        finally:
            _CURRENT.reset(token)
        return handled

    async def _publish_raw(self, topic: str, record: KafkaRecord) -> None:
        await self.sink.send(topic, record)
        if topic == self.dead_letter_topic:
            handled = _CURRENT.get()
            handled.outcome = "dead_lettered"
            error = dict(record.headers).get(DeadLetterHeaders.ERROR, b"")
            handled.reason = error.decode(errors="replace")

    async def _on_envelope(self, envelope: Envelope) -> None:
        handled = _CURRENT.get()
        ticket_id = handled.ticket_id = envelope.subject
        if envelope.type.startswith("itsm.incident.") and not is_registered(envelope.type):
            # An incident event version this worker does not know: skipping it would measure the
            # ticket wrongly, so it waits in the dead-letter topic for a replay after an upgrade.
            raise PermanentEventError(f"unknown incident event type {envelope.type}")
        if not _is_incident_event(envelope.type):
            handled.outcome = "ignored"  # another aggregate's event, or a type we do not know
            return
        async with self.ticket_locks.hold(ticket_id):  # see ticket_locks
            if self.kpis is not None:  # its state is stored over any plan of it held in memory
                self.kpis.settle(handled.position.partition, (ticket_id,))
            await self._apply_incident_event(envelope, ticket_id, handled)
            position = handled.position
            if self.kpis is not None and self.kpis.due_flush(position.topic, position.partition):
                self.kpis.flush(position.topic, position.partition)

    async def _apply_incident_event(
        self, envelope: Envelope, ticket_id: str, handled: Handled
    ) -> None:
        value = self.table.get(ticket_id)
        state, trace = self._load(ticket_id, value)
        view = self._kpi_view(value, state, handled.position)
        sequence = envelope.sequence or None  # 0: not sequenced, always applied
        if sequence is not None and sequence <= state.applied_sequence:
            handled.outcome = "duplicate"
            return
        fired = None
        if self.alerts.fired(ticket_id) is not None:
            fired = await self._delivered_alerts(ticket_id)
        if fired is not None:  # sent, not stored yet: the event comes after them
            state, trace = fired.state, fired.trace
        try:
            event = cast(IncidentEvent, validate_data(envelope.type, envelope.data))
            updated, facts = apply(
                state, event, at=envelope.time, catalog=self.catalog, sequence=sequence
            )
        except (ValidationError, UnknownEventType, NoWorkingTime, ValueError) as exc:
            raise PermanentEventError(f"SLA engine refused the event: {exc}") from exc
        kpi = None
        if self.kpis is not None:
            earlier = fired.alerts if fired is not None else []
            view, items = contributions(view, event, envelope.time, [*earlier, *facts])
            position = handled.position
            kpi_plan = self.kpis.plan(
                position.topic, position.partition, position.offset, items, seen=envelope.time
            )
            kpi = (view, kpi_plan)
        handled.facts = await self._commit(
            updated, facts, handled.position.partition, current_traceparent(), kpi, trace
        )
        if fired is not None:
            count_alerts(fired.envelopes)
        handled.outcome = "applied"

    async def _delivered_alerts(self, ticket_id: str) -> PreparedAlerts | None:
        """The ticket's fired alerts once the broker has them; None if there are none, or if
        their send failed (then the due path sends them again, from the stored state)."""
        fired = self.alerts.fired(ticket_id)
        if fired is None or fired.delivered is None:
            return None
        try:
            await asyncio.shield(fired.delivered)
        except Exception as exc:  # any failure: not delivered
            log.warning("sla.alerts.fire_failed", ticket_id=ticket_id, error=repr(exc))
            self.alerts.discard(ticket_id)
            self.index.schedule(ticket_id, fired.partition, self.clock())
            return None
        return fired

    def _kpi_view(
        self, value: Any, state: SlaState, position: SourcePosition | None = None
    ) -> TicketKpiView | None:
        """The ticket's KPI view, from its table value (as read for its state), after applying
        the KPI plan the stored state still carries (the crash may have come between storing
        the state and applying the plan). `position`: the record being applied, if any."""
        if self.kpis is None:
            return None
        view, outbox = ticket_kpis(value, applied=self.kpis.already_applied)
        return self._settled_view(view, outbox, state, position)

    def _settled_view(
        self,
        view: TicketKpiView | None,
        outbox: KpiPlan | None,
        state: SlaState,
        position: SourcePosition | None = None,
    ) -> TicketKpiView | None:
        if outbox is not None:
            self._apply_outbox(outbox, state.ticket_id, position)
        if view is None and state.ticket is not None:
            view = TicketKpiView.of_ticket(state.ticket)  # stored before the KPIs existed
        return view

    def _apply_outbox(
        self, outbox: KpiPlan, ticket_id: str, position: SourcePosition | None = None
    ) -> None:
        """Apply the KPI plan a stored state carries, unless it is in. Out of order, a plan
        would lift its source's watermark over plans before it, and those would never count:

        - a deferred source's plans (kpis.py) wait for their own record's redelivery, which
          comes in offset order (the commits stayed below them);
        - a due record's plans are applied together, after all its states are stored
          (`_store_fired`); a crash in between leaves states whose plans are not in. They are
          applied in the record's ticket order, as its staged entry lists them."""
        kpis = self.kpis
        assert kpis is not None
        if kpis.already_applied(outbox.topic, outbox.partition, outbox.offset):
            return
        if kpis.defers(outbox.topic):
            if position == SourcePosition(outbox.topic, outbox.partition, outbox.offset):
                kpis.apply(outbox, ticket_id=ticket_id)
            return
        staged = kpis.staged(outbox.topic, outbox.partition)
        if staged is not None and staged.record == outbox.offset // DUE_SLOTS:
            for staged_id in staged.ticket_ids:
                _, stored = ticket_kpis(self.table.get(staged_id))
                if stored is not None and staged.holds(stored, DUE_SLOTS):
                    kpis.apply(stored)
        kpis.apply(outbox)

    def _load(self, ticket_id: str, value: Any) -> tuple[SlaState, str]:
        """The ticket's state (from its table value) and the reference of its trace: the one
        stored (the trace of the event that opened it), else the current event's."""
        if value is None:
            return new_state(ticket_id), trace_reference()
        try:
            return from_table_value(value, self.targets), stored_trace(value) or trace_reference()
        except StateFormatError as exc:
            raise PermanentEventError(str(exc)) from exc

    @property
    def targets(self) -> TargetRefs:
        """Target references for the current catalog (the policy feed replaces the catalog)."""
        if self._targets.catalog is not self.catalog:
            self._targets = TargetRefs(self.catalog)
        return self._targets

    async def _commit(
        self,
        state: SlaState,
        facts: list[SlaEvent],
        partition: int,
        traceparent: str | None = None,
        kpi: tuple[TicketKpiView | None, KpiPlan] | None = None,
        trace: str = "",
    ) -> list[Envelope]:
        envelopes = fact_envelopes(state, facts, traceparent=traceparent)
        if envelopes:
            try:
                await self.sink.send_many(self.sla_topic, fact_records(envelopes))
            except KafkaError as exc:
                raise TransientError(f"publishing SLA facts failed: {exc!r}") from exc
        self._store(state, partition, kpi, trace)
        count_alerts(envelopes)
        return envelopes

    def _store(
        self,
        state: SlaState,
        partition: int,
        kpi: tuple[TicketKpiView | None, KpiPlan] | None = None,
        trace: str = "",
        *,
        apply_plan: bool = True,
    ) -> None:
        """Store the state (its facts are acknowledged), then apply its KPI plan (unless the
        caller applies it with others: `_store_fired`)."""
        kpi_doc = ticket_kpi_document(*kpi) if kpi is not None else None
        value = to_table_value(state, partition, self.targets, kpi_doc, trace)
        self.table[state.ticket_id] = value
        self.alerts.discard(state.ticket_id)  # prepared from the state replaced here
        if apply_plan and kpi is not None and self.kpis is not None:
            self.kpis.apply(kpi[1], ticket_id=state.ticket_id)  # rides with the state: kpis.py
        self.index.schedule(state.ticket_id, partition, next_wakeup(state))

    # -- wake-ups -------------------------------------------------------------------------------

    async def send_due(self) -> int:
        """The timer's job: for the owned tickets whose wake-up has come, at most `due_batch`
        not yet answered, one due record per partition of their states; and, for those due
        within `prepare_ahead`, one prepare record per partition (prepared.py). The records are
        queued on the producer, not awaited: their delivery is checked on the next tick, and a
        record that never arrives is sent again after `tick_retry` past its tickets' instants
        (the index moved them). Returns how many tickets were sent."""
        now = self.clock()
        self._check_due_sends()
        self._expire_in_flight(now)
        room = self.due_batch - len(self._in_flight)
        if room <= 0:
            return 0
        ahead = self.prepare_ahead if len(self.alerts) < self.prepare_limit else timedelta(0)
        due = self.index.pop_due(now, retry_after=self.tick_retry, limit=room, ahead=ahead)
        if not due:
            return 0
        by_partition: dict[tuple[int, bool], list[str]] = {}
        for entry in due:
            prepare = entry.at > now
            if prepare and self.alerts.holds(entry.ticket_id):
                continue  # prepared or fired already (the index entry is its retry)
            by_partition.setdefault((entry.partition, prepare), []).append(entry.ticket_id)
            self._in_flight.pop(entry.ticket_id, None)  # keeps the dict in order of sending
            self._in_flight[entry.ticket_id] = now
        records = [
            _due_record(Due(tuple(ids), now, prepare), partition)
            for (partition, prepare), ids in by_partition.items()
        ]
        self._due_sends.extend(await self._queue(self.due_topic, records))
        return len(due)

    async def _queue(
        self, topic: str, records: Sequence[tuple[KafkaRecord, int | None]]
    ) -> list[asyncio.Future[Any]]:
        """Queue records on a sink that can (`start_many`), else send them and wait."""
        start = getattr(self.sink, "start_many", None)
        if start is None:
            await self.sink.send_many(topic, records)
            return []
        pending: list[Awaitable[Any]] = await start(topic, records)
        return [asyncio.ensure_future(p) for p in pending]

    def _check_due_sends(self) -> None:
        still: list[asyncio.Future[Any]] = []
        for sent in self._due_sends:
            if not sent.done():
                still.append(sent)
            elif sent.cancelled() or sent.exception() is not None:
                # Its tickets come round again after tick_retry.
                error = "cancelled" if sent.cancelled() else repr(sent.exception())
                log.warning("sla.wakeups.send_failed", error=error)
        self._due_sends = still

    def _expire_in_flight(self, now: datetime) -> None:
        oldest = now - self.tick_retry
        in_flight = self._in_flight
        while in_flight:
            ticket_id = next(iter(in_flight))  # sent in order: the oldest first
            if in_flight[ticket_id] > oldest:
                break
            del in_flight[ticket_id]

    async def on_due_record(self, value: bytes, position: SourcePosition) -> Handled:
        """Apply the alerts due by the record's `now` to each of its tickets' states: all their
        facts are published and acknowledged together, then every state is stored (the order
        of `_commit`, for the whole record)."""
        handled = Handled(position, outcome="idle")
        try:
            doc = json.loads(value)
            evict = parse_evict(doc) if isinstance(doc, dict) else None
            if evict is not None:
                return self._evict(evict, handled)
            flush = parse_flush(doc) if isinstance(doc, dict) else None
            if flush is not None:
                return self._flush(flush, position, handled)
            due = Due.from_doc(doc)
        except (ValueError, TypeError, StateFormatError) as exc:
            log.warning("sla.due.unreadable", error=str(exc), offset=position.offset)
            handled.outcome, handled.reason = "ignored", str(exc)
            return handled
        if len(due.ticket_ids) == 1:
            handled.ticket_id = due.ticket_ids[0]
        async with self.ticket_locks.hold_all(due.ticket_ids):  # see ticket_locks
            if due.prepare:
                return self._prepare(due, position, handled)
            return await self._apply_due(due, position, handled)

    def _prepare(self, due: Due, position: SourcePosition, handled: Handled) -> Handled:
        """Prepare the alerts each ticket has due next, for the firing loop to send then."""
        prepared = 0
        for ticket_id in due.ticket_ids:
            self._in_flight.pop(ticket_id, None)
            if self.alerts.holds(ticket_id):
                continue  # prepared from its current state, or sent and on its way to the store
            found = self._due_state(ticket_id, position.partition)
            if found is None:
                continue
            state, view, trace = found
            at = next_wakeup(state)  # the timer's instant may be a retry's
            updated, alerts = due_alerts(state, at) if at is not None else (state, [])
            if at is None or not alerts:
                self.index.schedule(ticket_id, position.partition, at)
                continue
            with alerts_span(trace, ticket_id, at):  # the breach joins its incident's trace
                envelopes = fact_envelopes(updated, alerts, traceparent=current_traceparent())
            self.alerts.add(
                PreparedAlerts(
                    ticket_id, position.partition, at, updated, alerts, envelopes,
                    [encode(envelope) for envelope in envelopes], view, trace, self.catalog,
                )
            )  # fmt: skip
            prepared += 1
        if prepared:
            handled.outcome, handled.reason = "applied", f"prepared {prepared} tickets"
        return handled

    async def fire_prepared(self) -> int:
        """The firing loop's job: send the prepared alerts due by now in one go (a batch per
        partition, queued, not awaited) and queue a due record per partition that stores their
        states once they are delivered. Returns how many tickets fired."""
        now = self.clock()
        ready: list[PreparedAlerts] = []
        for entry in self.alerts.take_due(now):
            if self.ticket_locks.holders(entry.ticket_id) or entry.catalog is not self.catalog:
                # Being applied this moment, or computed under replaced policies: the due path
                # takes it, from the state stored by then.
                self.index.schedule(entry.ticket_id, entry.partition, entry.at)
                continue
            ready.append(entry)
        if not ready:
            return 0
        records = [(record, None) for entry in ready for record in entry.records]
        delivered = asyncio.ensure_future(self._send_fired(records))
        delivered.add_done_callback(_report_fired_batch)
        by_partition: dict[int, list[str]] = {}
        for entry in ready:
            self.alerts.mark_fired(entry, delivered)
            by_partition.setdefault(entry.partition, []).append(entry.ticket_id)
        stores = [_due_record(Due(tuple(ids), now), p) for p, ids in by_partition.items()]
        self._due_sends.extend(await self._queue(self.due_topic, stores))
        return len(ready)

    async def _send_fired(self, records: Sequence[tuple[KafkaRecord, int | None]]) -> None:
        queue_batch = getattr(self.sink, "queue_batch", None)
        if queue_batch is None:
            await self.sink.send_many(self.sla_topic, records)
            return
        await asyncio.gather(*await queue_batch(self.sla_topic, records))

    async def fire_when_due(self, granularity: float = FIRE_GRANULARITY) -> None:
        """The firing loop (a task of the worker): sleeps until the earliest prepared instant,
        or until something is prepared, then fires what is due. Rounds are at least
        `granularity` seconds apart: a burst fires in rounds of many tickets (each round
        queues one due record per partition to store them), not one round per ticket."""
        changed, loop = self.alerts.changed, asyncio.get_running_loop()
        last_round = -granularity
        while True:
            changed.clear()
            next_at = self.alerts.next_at()
            if next_at is None:
                await changed.wait()
                continue
            delay = max(
                (next_at - self.clock()).total_seconds(), last_round + granularity - loop.time()
            )
            if delay > 0:  # then plan again: the time has come, or an earlier one was prepared
                with suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), delay)
                continue
            last_round = loop.time()
            try:
                await self.fire_prepared()
            except Exception:  # their index entries bring them round through the due path
                log.exception("sla.alerts.fire_failed")

    def forget(self, partitions: Iterable[int]) -> None:
        """Revoked `partitions`: their tickets' prepared and fired alerts are another worker's
        now (it sends them again from the stored states; consumers drop the repeats)."""
        self.alerts.forget(partitions)

    async def _apply_due(self, due: Due, position: SourcePosition, handled: Handled) -> Handled:
        fired: list[Fired] = []
        unsent: list[tuple[KafkaRecord, int | None]] = []
        for slot, ticket_id in enumerate(due.ticket_ids):
            self._in_flight.pop(ticket_id, None)
            earlier = await self._delivered_alerts(ticket_id)
            if earlier is not None:  # fired by the loop: stored here, with its KPI plan
                kpi = self._due_plan(earlier.view, earlier.alerts, position, slot, due.now)
                fired.append((earlier.state, earlier.envelopes, kpi, earlier.trace))
                continue
            found = self._due_state(ticket_id, position.partition)
            if found is None:
                continue
            state, view, trace = found
            updated, alerts = due_alerts(state, due.now)
            if not alerts:
                self.index.schedule(ticket_id, position.partition, next_wakeup(state))
                continue
            kpi = self._due_plan(view, alerts, position, slot, due.now)
            with alerts_span(trace, ticket_id):  # the breach joins its incident's trace
                envelopes = fact_envelopes(updated, alerts, traceparent=current_traceparent())
            fired.append((updated, envelopes, kpi, trace))
            unsent.extend(fact_records(envelopes))
        if not fired:
            return handled
        try:
            if unsent:
                await self.sink.send_many(self.sla_topic, unsent)
        except (TransientError, KafkaError) as exc:
            # Nothing was stored: the timer sends the tickets again after tick_retry.
            log.warning("sla.due.publish_failed", tickets=len(fired), error=str(exc))
            handled.outcome, handled.reason = "ignored", str(exc)
            return handled
        self._store_fired(fired, position)
        for _, envelopes, _, _ in fired:
            handled.facts.extend(envelopes)
        count_alerts(handled.facts)
        handled.outcome = "applied"
        return handled

    def _due_plan(
        self,
        view: TicketKpiView | None,
        alerts: Sequence[SlaEvent],
        position: SourcePosition,
        slot: int,
        now: datetime,
    ) -> tuple[TicketKpiView | None, KpiPlan] | None:
        """The KPI plan of a due record's `slot`-th ticket's alerts."""
        if self.kpis is None or view is None:
            return None
        offset = position.offset * DUE_SLOTS + slot
        items = fact_contributions(view, alerts)
        return view, self.kpis.plan(position.topic, position.partition, offset, items, seen=now)

    def _store_fired(self, fired: list[Fired], position: SourcePosition) -> None:
        """Store the states of a due record's tickets, each with its own KPI plan as outbox,
        then apply their plans as one: a record's tickets mostly share the same few partials,
        which are then written once, not once per ticket. The staged entry, written first,
        lists the tickets in plan order for `_apply_outbox`, should a crash come before the
        merged plan is in (a stored state implies the entry: the table's writes survive as a
        prefix, see kpis.py)."""
        planned = [(state.ticket_id, kpi[1]) for state, _, kpi, _ in fired if kpi is not None]
        kpis = self.kpis
        if kpis is not None:  # the states are stored over any incident plans held of them
            kpis.settle(position.partition, [state.ticket_id for state, _, _, _ in fired])
        if kpis is not None and planned:
            kpis.stage(position.topic, position.partition, position.offset, [t for t, _ in planned])
        for updated, _, kpi, reference in fired:
            self._store(updated, position.partition, kpi, reference, apply_plan=False)
        if kpis is not None and planned:
            kpis.apply(merge_plans([p for _, p in planned]))

    def _due_state(
        self, ticket_id: str, partition: int
    ) -> tuple[SlaState, TicketKpiView | None, str] | None:
        """A due ticket's state, KPI view and trace reference; None (and no wake-up) when there
        is none to read."""
        value = self.table.get(ticket_id)
        if value is None:
            self.index.schedule(ticket_id, partition, None)
            return None
        try:
            state = from_table_value(value, self.targets)
        except StateFormatError as exc:
            log.error("sla.state.unreadable", ticket_id=ticket_id, error=str(exc))
            self.index.schedule(ticket_id, partition, None)
            return None
        if self.kpis is None:
            return state, None, stored_trace(value)
        view, outbox = ticket_kpis(value, applied=self.kpis.already_applied)
        if outbox is not None and self.kpis.defers(outbox.topic):
            # A crash left the plan of its last incident record out of the table; the record is
            # read again (kpis.py) and applies it then. Storing a state now would overwrite it.
            self.index.schedule(ticket_id, partition, self.clock() + self.tick_retry)
            return None
        return state, self._settled_view(view, outbox, state), stored_trace(value)

    def _flush(self, topic: str, position: SourcePosition, handled: Handled) -> Handled:
        """Write the KPI plans `topic`'s partition holds (the KPI timer asks, see kpis.py)."""
        if self.kpis is not None:
            plans = self.kpis.flush(topic, position.partition)
            handled.outcome, handled.reason = "applied", f"flushed {plans} KPI plans"
        return handled

    def _evict(self, keys: list[str], handled: Handled) -> Handled:
        """Delete final KPI partials whose final snapshot is published (the KPI timer asks)."""
        if self.kpis is not None:
            deleted = self.kpis.evict(keys, self.table.__delitem__)
            handled.outcome, handled.reason = "applied", f"evicted {deleted} KPI partials"
        return handled

    # -- change events (KPIs only) ----------------------------------------------------------------

    async def on_change_record(self, record: KafkaRecord, position: SourcePosition) -> Handled:
        handled = Handled(position)
        token = _CURRENT.set(handled)
        try:
            await self._changes.process(record, position)
        finally:
            _CURRENT.reset(token)
        return handled

    async def _on_change_envelope(self, envelope: Envelope) -> None:
        """Completed changes count for the change success rate. A redelivered record is
        skipped by the source clock's watermark; a change event published twice (at another
        offset) by the guard on the change's sequence."""
        handled = _CURRENT.get()
        handled.ticket_id = envelope.subject
        kpis, position = self.kpis, handled.position
        if kpis is None or not _is_change_event(envelope.type):
            handled.outcome = "ignored"
            return
        if kpis.already_applied(position.topic, position.partition, position.offset):
            handled.outcome = "duplicate"
            return
        try:
            event = cast(ChangeEvent, validate_data(envelope.type, envelope.data))
        except ValidationError as exc:
            raise PermanentEventError(f"invalid change event: {exc}") from exc
        items = change_contributions(event, envelope.time)
        handled.outcome = "applied" if items else "ignored"
        if items:
            key, sequence = change_key(event.change_id), envelope.sequence
            guard = self.table.get(key)
            if (
                guard is not None
                and guard["offset"] != position.offset
                and (sequence <= guard["sequence"])
            ):
                items, handled.outcome = [], "duplicate"  # the same event published twice
            else:  # before the plan: its offset tells a redelivery from a second publication
                self.table[key] = {"sequence": sequence, "offset": position.offset}
        kpi_plan = kpis.plan(
            position.topic, position.partition, position.offset, items, seen=envelope.time
        )
        kpis.apply(kpi_plan)


def _is_change_event(type_name: str) -> bool:
    return is_registered(type_name) and issubclass(contract_for(type_name), ChangeEvent)


def _report_fired_batch(delivered: asyncio.Future[None]) -> None:
    """Log a fired batch whose send failed. Its tickets' due records or incident events see
    it too, but not once a revocation dropped them: then nobody else would retrieve it."""
    if not delivered.cancelled() and delivered.exception() is not None:
        log.warning("sla.alerts.batch_failed", error=repr(delivered.exception()))


def _is_incident_event(type_name: str) -> bool:
    return is_registered(type_name) and issubclass(contract_for(type_name), IncidentEvent)


def _due_record(due: Due, partition: int) -> tuple[KafkaRecord, int]:
    key = due.ticket_ids[0].encode()  # informational: the partition is explicit
    return KafkaRecord(key=key, value=json.dumps(due.to_doc()).encode(), headers=()), partition
