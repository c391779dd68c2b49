"""SlaState <-> JSON-able dicts, for the changelog-backed table, and the due records.

The engine's dataclasses are frozen and carry everything a timer is measured against (the
policy reference, the target, the calendar), so a stored state is self-contained: it does not
depend on the catalog the reading worker happens to have. The encoding is exact: instants are
UTC ISO-8601 with microseconds, durations integer microseconds, sets sorted lists.

A table value is `{"v": 1, "partition": p, "wakeup": iso | None, "state": {...}}`: the partition
and the next wake-up sit beside the state so that re-arming after a rebalance reads them without
decoding every state.
"""

from __future__ import annotations

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
from shared.contracts.incidents import PendingReason, Priority, Status, TicketType
from shared.contracts.sla import TimerStatus

FORMAT = 1
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


# -- table values -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    """What the table knows about a key without decoding the state."""

    partition: int
    wakeup: datetime | None


def to_table_value(state: SlaState, partition: int) -> Doc:
    wakeup = next_wakeup(state)
    return {
        "v": FORMAT,
        "partition": partition,
        "wakeup": _opt_instant(wakeup),
        "state": state_to_doc(state),
    }


def stored(value: Mapping[str, Any]) -> Stored:
    _check_format(value)
    return Stored(partition=int(value["partition"]), wakeup=_opt_parse(value["wakeup"]))


def from_table_value(value: Mapping[str, Any]) -> SlaState:
    _check_format(value)
    return state_from_doc(value["state"])


def _check_format(value: Mapping[str, Any]) -> None:
    if not isinstance(value, Mapping) or value.get("v") != FORMAT:
        version = value.get("v") if isinstance(value, Mapping) else type(value).__name__
        raise StateFormatError(f"unsupported SLA table value format {version!r}")


# -- due records --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Due:
    """A request to look at a ticket as of `now`, sent by a worker's wake-up timer to the
    partition of the ticket's state and applied by the due agent. `now` travels in the record,
    so a redelivered record yields the same alerts with the same sequence numbers."""

    ticket_id: str
    now: datetime

    def to_doc(self) -> Doc:
        return {"ticket_id": self.ticket_id, "now": instant(self.now)}

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Due:
        try:
            return cls(ticket_id=str(doc["ticket_id"]), now=parse_instant(doc["now"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise StateFormatError(f"unreadable due record: {exc!r}") from exc
