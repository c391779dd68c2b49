"""SlaState <-> table values, for the changelog-backed table, and the due records.

Format 2 (written since issue 4) is one compact string per ticket, because every Python dict,
list and string of a decoded JSON document costs tens of bytes in a worker holding 100,000+
tickets:

    "2;<partition>;<next wake-up, epoch µs, or empty>;<state JSON>\\n<KPI JSON or null>"

The partition and the next wake-up lead, so re-arming after a rebalance reads them without
decoding the state. The state is positional JSON arrays (`state_to_row`): instants are integer
epoch microseconds (UTC), durations integer microseconds, sets sorted lists -- still exact. A
timer's target is stored as a reference into the policy catalog (`targets.TargetRefs`: policy id
and version, which of its targets, the duration, the calendar id and version), not as a copy of
the policy and its calendar; the reading worker rehydrates it from its catalog, which keeps every
version. A target the catalog cannot reproduce exactly is stored whole, as before.

Format 1 (`{"v": 1, "partition": p, "wakeup": iso, "state": {...}, "kpi": {...}}`, ISO strings,
whole targets) still loads: a ticket moves to format 2 the next time its state is stored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

from services.sla.domain import (
    BusinessCalendar,
    PolicyRef,
    SlaState,
    Target,
    Ticket,
    Timer,
    next_wakeup,
)
from services.sla.processor.targets import TargetRefs, UnknownTarget
from shared.contracts.incidents import PendingReason, Priority, Status, TicketType
from shared.contracts.sla import TimerStatus

FORMAT = 2  # the compact string form
LEGACY_FORMAT = 1  # the dict form of the first release, still read
Doc = dict[str, Any]


class StateFormatError(ValueError):
    """A stored value this code cannot read (another format version, or corrupt)."""


# -- primitives ---------------------------------------------------------------------------------


def instant(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError(f"instants must be timezone-aware, got {value!r}")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def parse_instant(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise StateFormatError(f"naive instant {text!r}")
    return value.astimezone(UTC)


def _opt_instant(value: datetime | None) -> str | None:
    return None if value is None else instant(value)


def _opt_parse(text: str | None) -> datetime | None:
    return None if text is None else parse_instant(text)


def _micros(value: timedelta) -> int:
    return value // timedelta(microseconds=1)


# -- engine types -------------------------------------------------------------------------------


def calendar_to_doc(calendar: BusinessCalendar) -> Doc:
    return {
        "name": calendar.name,
        "zone": calendar.zone,
        "week": [[[start, end] for start, end in day] for day in calendar.week],
        "holidays": sorted(day.isoformat() for day in calendar.holidays),
    }


def calendar_from_doc(doc: Mapping[str, Any]) -> BusinessCalendar:
    return BusinessCalendar(
        name=doc["name"],
        zone=doc["zone"],
        week=tuple(tuple((int(s), int(e)) for s, e in day) for day in doc["week"]),
        holidays=frozenset(date.fromisoformat(day) for day in doc["holidays"]),
    )


def target_to_doc(target: Target) -> Doc:
    ref = target.policy
    return {
        "policy": {"id": ref.id, "version": ref.version, "name": ref.name},
        "duration_us": _micros(target.duration),
        "calendar": calendar_to_doc(target.calendar),
        "warnings": list(target.warnings),
        "pause_on": sorted(target.pause_on),
    }


def target_from_doc(doc: Mapping[str, Any]) -> Target:
    ref = doc["policy"]
    return Target(
        policy=PolicyRef(ref["id"], int(ref["version"]), ref["name"]),
        duration=timedelta(microseconds=doc["duration_us"]),
        calendar=calendar_from_doc(doc["calendar"]),
        warnings=tuple(int(level) for level in doc["warnings"]),
        pause_on=frozenset(cast(list[PendingReason], doc["pause_on"])),
    )


def timer_to_doc(timer: Timer) -> Doc:
    return {
        "metric": timer.metric,
        "target": target_to_doc(timer.target),
        "status": timer.status,
        "started_at": instant(timer.started_at),
        "since": instant(timer.since),
        "elapsed_us": _micros(timer.elapsed),
        "deadline": _opt_instant(timer.deadline),
        "breached_at": _opt_instant(timer.breached_at),
        "passed": sorted(timer.passed),
        "schedule": [[level, instant(when)] for level, when in timer.schedule],
    }


def timer_from_doc(doc: Mapping[str, Any]) -> Timer:
    return Timer(
        metric=doc["metric"],
        target=target_from_doc(doc["target"]),
        status=cast(TimerStatus, doc["status"]),
        started_at=parse_instant(doc["started_at"]),
        since=parse_instant(doc["since"]),
        elapsed=timedelta(microseconds=doc["elapsed_us"]),
        deadline=_opt_parse(doc["deadline"]),
        breached_at=_opt_parse(doc["breached_at"]),
        passed=frozenset(int(level) for level in doc["passed"]),
        schedule=tuple((int(level), parse_instant(when)) for level, when in doc["schedule"]),
    )


def ticket_to_doc(ticket: Ticket) -> Doc:
    return {
        "id": ticket.id,
        "ticket_type": ticket.ticket_type,
        "priority": ticket.priority,
        "status": ticket.status,
        "opened_at": instant(ticket.opened_at),
        "service": ticket.service,
        "group": ticket.group,
        "pending_reason": ticket.pending_reason,
        "responded": ticket.responded,
    }


def ticket_from_doc(doc: Mapping[str, Any]) -> Ticket:
    return Ticket(
        id=doc["id"],
        ticket_type=cast(TicketType, doc["ticket_type"]),
        priority=cast(Priority, doc["priority"]),
        status=cast(Status, doc["status"]),
        opened_at=parse_instant(doc["opened_at"]),
        service=doc["service"],
        group=doc["group"],
        pending_reason=cast(PendingReason | None, doc["pending_reason"]),
        responded=bool(doc["responded"]),
    )


def state_to_doc(state: SlaState) -> Doc:
    return {
        "ticket_id": state.ticket_id,
        "ticket": None if state.ticket is None else ticket_to_doc(state.ticket),
        "timers": [timer_to_doc(timer) for timer in state.timers],
        "clock": _opt_instant(state.clock),
        "applied_sequence": state.applied_sequence,
        "version": state.version,
    }


def state_from_doc(doc: Mapping[str, Any]) -> SlaState:
    try:
        return SlaState(
            ticket_id=doc["ticket_id"],
            ticket=None if doc["ticket"] is None else ticket_from_doc(doc["ticket"]),
            timers=tuple(timer_from_doc(timer) for timer in doc["timers"]),
            clock=_opt_parse(doc["clock"]),
            applied_sequence=int(doc["applied_sequence"]),
            version=int(doc["version"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StateFormatError(f"unreadable SLA state: {exc!r}") from exc


# -- format 2: positional rows, epoch microseconds, target references ----------------------------

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def _us(value: datetime) -> int:
    if value.tzinfo is None:
        raise ValueError(f"instants must be timezone-aware, got {value!r}")
    return (value - EPOCH) // _MICRO


def _opt_us(value: datetime | None) -> int | None:
    return None if value is None else _us(value)


def _at(micros: int) -> datetime:
    return EPOCH + _MICRO * micros


def _opt_at(micros: int | None) -> datetime | None:
    return None if micros is None else _at(micros)


def _target_out(target: Target, refs: TargetRefs | None) -> Any:
    ref = refs.ref(target) if refs is not None else None
    return ref if ref is not None else target_to_doc(target)  # a list, or the whole dict


def _target_in(stored: Any, refs: TargetRefs | None) -> Target:
    if isinstance(stored, Mapping):
        return target_from_doc(stored)
    if refs is None:
        raise StateFormatError("a stored target reference needs the policy catalog to load")
    try:
        return refs.target(stored)
    except UnknownTarget as exc:
        raise StateFormatError(f"cannot rehydrate a timer's target: {exc}") from exc


def state_to_row(state: SlaState, refs: TargetRefs | None = None) -> list[Any]:
    ticket = state.ticket
    return [
        state.ticket_id,
        None
        if ticket is None
        else [
            ticket.id, ticket.ticket_type, ticket.priority, ticket.status,
            _us(ticket.opened_at), ticket.service, ticket.group, ticket.pending_reason,
            int(ticket.responded),
        ],
        [
            [
                t.metric, _target_out(t.target, refs), t.status, _us(t.started_at),
                _us(t.since), t.elapsed // _MICRO, _opt_us(t.deadline), _opt_us(t.breached_at),
                sorted(t.passed), [[level, _us(when)] for level, when in t.schedule],
            ]
            for t in state.timers
        ],
        _opt_us(state.clock),
        state.applied_sequence,
        state.version,
    ]  # fmt: skip


def state_from_row(row: Any, refs: TargetRefs | None = None) -> SlaState:
    try:
        ticket_id, ticket, timers, clock, applied_sequence, version = row
        return SlaState(
            ticket_id=ticket_id,
            ticket=None if ticket is None else _ticket_from_row(ticket),
            timers=tuple(_timer_from_row(timer, refs) for timer in timers),
            clock=_opt_at(clock),
            applied_sequence=int(applied_sequence),
            version=int(version),
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, StateFormatError):
            raise
        raise StateFormatError(f"unreadable SLA state: {exc!r}") from exc


def _ticket_from_row(row: Any) -> Ticket:
    id_, ticket_type, priority, status, opened, service, group, reason, responded = row
    return Ticket(
        id=id_, ticket_type=ticket_type, priority=priority, status=status, opened_at=_at(opened),
        service=service, group=group, pending_reason=reason, responded=bool(responded),
    )  # fmt: skip


def _timer_from_row(row: Any, refs: TargetRefs | None) -> Timer:
    metric, target, status, started, since, elapsed, deadline, breached, passed, schedule = row
    return Timer(
        metric=metric, target=_target_in(target, refs), status=status, started_at=_at(started),
        since=_at(since), elapsed=_MICRO * elapsed, deadline=_opt_at(deadline),
        breached_at=_opt_at(breached), passed=frozenset(int(level) for level in passed),
        schedule=tuple((int(level), _at(when)) for level, when in schedule),
    )  # fmt: skip


# -- table values -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    """What the table knows about a key without decoding the state."""

    partition: int
    wakeup: datetime | None


_COMPACT = {"separators": (",", ":"), "ensure_ascii": False}


def to_table_value(
    state: SlaState,
    partition: int,
    refs: TargetRefs | None = None,
    kpi: Mapping[str, Any] | None = None,
    trace: str = "",
) -> str:
    """The table value (format 2) of `state`, stored in `partition`, with the ticket's KPI
    document (`kpis.py`) beside it, and the reference of the ticket's trace (see
    `shared.telemetry.trace_reference`) when it has one: its breaches join that trace. Lines:
    header and state, KPI document, trace reference (absent in values stored before it)."""
    wakeup = next_wakeup(state)
    header = f"{FORMAT};{partition};{'' if wakeup is None else _us(wakeup)};"
    body = json.dumps(state_to_row(state, refs), **_COMPACT)  # type: ignore[arg-type]
    value = f"{header}{body}\n{json.dumps(kpi, **_COMPACT)}"  # type: ignore[arg-type]
    return f"{value}\n{trace}" if trace else value


def _parts(value: str) -> tuple[int, int | None, str, str, str]:
    try:
        version, partition, wakeup, rest = value.split(";", 3)
        if int(version) != FORMAT:
            raise StateFormatError(f"unsupported SLA table value format {version!r}")
        state, _, rest = rest.partition("\n")
        kpi, _, trace = rest.partition("\n")
        return int(partition), int(wakeup) if wakeup else None, state, kpi, trace
    except ValueError as exc:
        if isinstance(exc, StateFormatError):
            raise
        raise StateFormatError(f"unreadable SLA table value: {exc!r}") from exc


def stored(value: Any) -> Stored:
    if isinstance(value, str):
        partition, wakeup, _, _, _ = _parts(value)
        return Stored(partition=partition, wakeup=_opt_at(wakeup))
    _check_format(value)
    return Stored(partition=int(value["partition"]), wakeup=_opt_parse(value["wakeup"]))


def from_table_value(value: Any, refs: TargetRefs | None = None) -> SlaState:
    """The state in a table value of either format; `refs` resolves target references."""
    if isinstance(value, str):
        _, _, state, _, _ = _parts(value)
        try:
            row = json.loads(state)
        except ValueError as exc:
            raise StateFormatError(f"unreadable SLA state: {exc!r}") from exc
        return state_from_row(row, refs)
    _check_format(value)
    return state_from_doc(value["state"])


def kpi_document(value: Any) -> Mapping[str, Any] | None:
    """The KPI document stored beside a ticket's state (None before the KPIs existed)."""
    if value is None:
        return None
    if isinstance(value, str):
        kpi = _parts(value)[3]
        try:
            doc = json.loads(kpi) if kpi else None
        except ValueError as exc:
            raise StateFormatError(f"unreadable KPI document: {exc!r}") from exc
        return doc if isinstance(doc, Mapping) else None
    doc = value.get("kpi") if isinstance(value, Mapping) else None
    return doc if isinstance(doc, Mapping) else None


def stored_trace(value: Any) -> str:
    """The trace reference stored with a ticket's state ("" if none)."""
    return _parts(value)[4] if isinstance(value, str) else ""


def _check_format(value: Any) -> None:
    if not isinstance(value, Mapping) or value.get("v") != LEGACY_FORMAT:
        version = value.get("v") if isinstance(value, Mapping) else type(value).__name__
        raise StateFormatError(f"unsupported SLA table value format {version!r}")


# -- due records --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Due:
    """A request to look at tickets as of `now`, sent by a worker's wake-up timer to the
    partition of their states (one record per partition and tick) and applied by the due agent.
    `now` travels in the record, so a redelivered record yields the same alerts with the same
    sequence numbers. The first release sent one record per ticket (`{"ticket_id": …}`); those
    still load.

    With `prepare` the record asks for the alerts each ticket has due next (soon after `now`)
    to be prepared, and sent when they fall due (prepared.py)."""

    ticket_ids: tuple[str, ...]
    now: datetime
    prepare: bool = False

    def to_doc(self) -> Doc:
        doc: Doc = {"tickets": list(self.ticket_ids), "now": instant(self.now)}
        if self.prepare:
            doc["prepare"] = True
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Due:
        try:
            if "tickets" in doc:
                tickets = doc["tickets"]
                if not isinstance(tickets, list) or not tickets:
                    raise ValueError("tickets must be a non-empty list")
                ids = tuple(str(ticket_id) for ticket_id in tickets)
            else:
                ids = (str(doc["ticket_id"]),)
            prepare = doc.get("prepare", False)
            if not isinstance(prepare, bool):
                raise ValueError("prepare must be true or false")
            return cls(ticket_ids=ids, now=parse_instant(doc["now"]), prepare=prepare)
        except (KeyError, TypeError, ValueError) as exc:
            raise StateFormatError(f"unreadable due record: {exc!r}") from exc
