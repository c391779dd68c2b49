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
from typing import Any, Literal, Protocol

import structlog
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from services.sla.domain import (
    PolicyCatalog,
    SlaState,
    apply_record,
    due_alerts,
    new_state,
    next_wakeup,
)
from services.sla.domain.calendar import NoWorkingTime
from services.sla.processor.codec import (
    Due,
    StateFormatError,
    from_table_value,
    to_table_value,
)
from services.sla.processor.publishing import RecordSink, fact_envelopes, fact_records
from services.sla.processor.wakeups import WakeupIndex
from shared.bus.port import DeadLetterHeaders, PermanentEventError, TransientError
from shared.bus.processing import RecordProcessor, RetryPolicy, SourcePosition
from shared.contracts.codec import KafkaRecord
from shared.contracts.envelope import Envelope
from shared.contracts.incidents import IncidentEvent
from shared.contracts.registry import UnknownEventType, contract_for, is_registered
from shared.contracts.sla import SlaEvent

log = structlog.get_logger(__name__)

Outcome = Literal["applied", "duplicate", "ignored", "dead_lettered", "idle"]
Clock = Callable[[], datetime]


class StateTable(Protocol):
    """The part of a Faust table the processor uses (writes only inside an agent)."""

    def get(self, key: Any, /) -> Any: ...

    def __setitem__(self, key: str, value: Any) -> None: ...


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
        # The platform's per-record semantics: decode, dead-letter what cannot be decoded or
        # applied, retry transient failures, one consumer span per record.
        self._records = RecordProcessor(
            group, self._on_envelope, self._publish_raw, retry, dead_letter_topic
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
        if not _is_incident_event(envelope.type):
            handled.outcome = "ignored"  # another aggregate's event, or a type we do not know
            return
        state = self._load(ticket_id)
        sequence = envelope.sequence or None  # 0: not sequenced, always applied
        if sequence is not None and sequence <= state.applied_sequence:
            handled.outcome = "duplicate"
            return
        try:
            updated, facts = apply_record(
                state,
                envelope.type,
                envelope.data,
                at=envelope.time,
                catalog=self.catalog,
                sequence=sequence,
            )
        except (ValidationError, UnknownEventType, NoWorkingTime, ValueError) as exc:
            raise PermanentEventError(f"SLA engine refused the event: {exc}") from exc
        handled.facts = await self._commit(
            updated, facts, handled.position.partition, envelope.traceparent
        )
        handled.outcome = "applied"

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
    ) -> list[Envelope]:
        envelopes = fact_envelopes(state, facts, traceparent=traceparent)
        if envelopes:
            try:
                await self.sink.send_many(self.sla_topic, fact_records(envelopes))
            except KafkaError as exc:
                raise TransientError(f"publishing SLA facts failed: {exc!r}") from exc
        self.table[state.ticket_id] = to_table_value(state, partition)
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
            due = Due.from_doc(json.loads(value))
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
        updated, alerts = due_alerts(state, due.now)
        if alerts:
            try:
                handled.facts = await self._commit(updated, alerts, position.partition)
            except (TransientError, KafkaError) as exc:
                # Nothing was stored: the timer sends the due record again after tick_retry.
                log.warning("sla.due.publish_failed", ticket_id=due.ticket_id, error=str(exc))
                handled.outcome, handled.reason = "ignored", str(exc)
                return handled
            handled.outcome = "applied"
        else:
            self.index.schedule(due.ticket_id, position.partition, next_wakeup(state))
        return handled


def _is_incident_event(type_name: str) -> bool:
    return is_registered(type_name) and issubclass(contract_for(type_name), IncidentEvent)
