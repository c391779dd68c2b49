"""What the agents do with one record, free of Faust: load the ticket's SLA state, drive the
engine, publish the facts, store the state and re-schedule the ticket's wake-up.

Order matters for at-least-once: the facts are published (and acknowledged) before the state is
stored. A crash in between re-processes the record from the old state, which yields the same
facts with the same sequence numbers, and consumers drop the repeats. The other order could
store a state whose facts were never sent, and the redelivered record would then be skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol, cast

import structlog
from aiokafka.errors import KafkaError
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
)
from services.sla.processor.codec import (
    Due,
    StateFormatError,
    from_table_value,
    to_table_value,
)
from services.sla.processor.kpis import (
    KpiRecorder,
    change_key,
    parse_evict,
    ticket_kpis,
    with_ticket_kpis,
)
from services.sla.processor.publishing import RecordSink, fact_envelopes, fact_records
from services.sla.processor.wakeups import WakeupIndex
from shared.bus.port import DeadLetterHeaders, PermanentEventError, TransientError
from shared.bus.processing import RecordProcessor, RetryPolicy, SourcePosition
from shared.contracts.changes import ChangeEvent
from shared.contracts.codec import KafkaRecord
from shared.contracts.envelope import Envelope
from shared.contracts.incidents import IncidentEvent
from shared.contracts.registry import UnknownEventType, contract_for, is_registered, validate_data
from shared.contracts.sla import SlaEvent

log = structlog.get_logger(__name__)

Outcome = Literal["applied", "duplicate", "ignored", "dead_lettered", "idle"]
Clock = Callable[[], datetime]


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
    ) -> None:
        if tick_retry <= timedelta(0):
            raise ValueError("tick_retry must be positive")
        self.table = table
        self.sink = sink
        self.catalog = catalog
        self.index = index
        self.sla_topic = sla_topic
        self.due_topic = due_topic
        self.dead_letter_topic = dead_letter_topic
        self.clock = clock
        self.tick_retry = tick_retry
        self.kpis = kpis  # None: no streaming KPIs (the embedded mode, benchmarks)
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
        state = self._load(ticket_id)
        view = self._kpi_view(ticket_id, state)
        sequence = envelope.sequence or None  # 0: not sequenced, always applied
        if sequence is not None and sequence <= state.applied_sequence:
            handled.outcome = "duplicate"
            return
        try:
            event = cast(IncidentEvent, validate_data(envelope.type, envelope.data))
            updated, facts = apply(
                state, event, at=envelope.time, catalog=self.catalog, sequence=sequence
            )
        except (ValidationError, UnknownEventType, NoWorkingTime, ValueError) as exc:
            raise PermanentEventError(f"SLA engine refused the event: {exc}") from exc
        kpi = None
        if self.kpis is not None:
            view, items = contributions(view, event, envelope.time, facts)
            position = handled.position
            kpi_plan = self.kpis.plan(
                position.topic, position.partition, position.offset, items, seen=envelope.time
            )
            kpi = (view, kpi_plan)
        handled.facts = await self._commit(
            updated, facts, handled.position.partition, envelope.traceparent, kpi
        )
        handled.outcome = "applied"

    def _kpi_view(self, ticket_id: str, state: SlaState) -> TicketKpiView | None:
        """The ticket's KPI view, after applying the KPI plan its stored state still carries
        (the crash may have come between storing the state and applying the plan)."""
        if self.kpis is None:
            return None
        view, outbox = ticket_kpis(self.table.get(ticket_id))
        if outbox is not None:
            self.kpis.apply(outbox)
        if view is None and state.ticket is not None:
            view = TicketKpiView.of_ticket(state.ticket)  # stored before the KPIs existed
        return view

    def _load(self, ticket_id: str) -> SlaState:
        value = self.table.get(ticket_id)
        if value is None:
            return new_state(ticket_id)
        try:
            return from_table_value(value)
        except StateFormatError as exc:
            raise PermanentEventError(str(exc)) from exc

    async def _commit(
        self,
        state: SlaState,
        facts: list[SlaEvent],
        partition: int,
        traceparent: str | None = None,
        kpi: tuple[TicketKpiView | None, KpiPlan] | None = None,
    ) -> list[Envelope]:
        envelopes = fact_envelopes(state, facts, traceparent=traceparent)
        if envelopes:
            try:
                await self.sink.send_many(self.sla_topic, fact_records(envelopes))
            except KafkaError as exc:
                raise TransientError(f"publishing SLA facts failed: {exc!r}") from exc
        value = to_table_value(state, partition)
        if kpi is not None:
            with_ticket_kpis(value, *kpi)  # the plan rides with the state: see kpis.py
        self.table[state.ticket_id] = value
        if kpi is not None and self.kpis is not None:
            self.kpis.apply(kpi[1])
        self.index.schedule(state.ticket_id, partition, next_wakeup(state))
        return envelopes

    # -- wake-ups -------------------------------------------------------------------------------

    async def send_due(self) -> int:
        """The timer's job: a due record for every owned ticket whose wake-up has come, to the
        partition of its state. Returns how many were sent."""
        now = self.clock()
        due = self.index.pop_due(now, retry_after=self.tick_retry)
        if not due:
            return 0
        records = [
            (
                KafkaRecord(
                    key=entry.ticket_id.encode(),
                    value=json.dumps(Due(entry.ticket_id, now).to_doc()).encode(),
                    headers=(),
                ),
                entry.partition,
            )
            for entry in due
        ]
        await self.sink.send_many(self.due_topic, records)
        return len(records)

    async def on_due_record(self, value: bytes, position: SourcePosition) -> Handled:
        """Apply the alerts due by the record's `now` to the ticket's state."""
        handled = Handled(position, outcome="idle")
        try:
            doc = json.loads(value)
            evict = parse_evict(doc) if isinstance(doc, dict) else None
            if evict is not None:
                return self._evict(evict, handled)
            due = Due.from_doc(doc)
        except (ValueError, TypeError, StateFormatError) as exc:
            log.warning("sla.due.unreadable", error=str(exc), offset=position.offset)
            handled.outcome, handled.reason = "ignored", str(exc)
            return handled
        handled.ticket_id = due.ticket_id
        value_in_table = self.table.get(due.ticket_id)
        if value_in_table is None:
            self.index.schedule(due.ticket_id, position.partition, None)
            return handled
        try:
            state = from_table_value(value_in_table)
        except StateFormatError as exc:
            log.error("sla.state.unreadable", ticket_id=due.ticket_id, error=str(exc))
            self.index.schedule(due.ticket_id, position.partition, None)
            handled.outcome, handled.reason = "ignored", str(exc)
            return handled
        view = self._kpi_view(due.ticket_id, state)
        updated, alerts = due_alerts(state, due.now)
        if alerts:
            kpi = None
            if self.kpis is not None and view is not None:
                items = fact_contributions(view, alerts)
                kpi_plan = self.kpis.plan(
                    position.topic, position.partition, position.offset, items, seen=due.now
                )
                kpi = (view, kpi_plan)
            try:
                handled.facts = await self._commit(updated, alerts, position.partition, kpi=kpi)
            except (TransientError, KafkaError) as exc:
                # Nothing was stored: the timer sends the due record again after tick_retry.
                log.warning("sla.due.publish_failed", ticket_id=due.ticket_id, error=str(exc))
                handled.outcome, handled.reason = "ignored", str(exc)
                return handled
            handled.outcome = "applied"
        else:
            self.index.schedule(due.ticket_id, position.partition, next_wakeup(state))
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


def _is_incident_event(type_name: str) -> bool:
    return is_registered(type_name) and issubclass(contract_for(type_name), IncidentEvent)
