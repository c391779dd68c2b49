"""Versioned business calendars and SLA/OLA policies: commands in, versions and events out.

Every write makes a new immutable version (1 on create). A version applies from its
`effective_from`, which may lie in the future but never in the past (a replay must measure the
past against what was in force then) nor before the previous version's. Retiring is a version
too, and final: the transition table below has no way out of `retired`.

A policy's selector (kind, ticket type, priority, service, group) is fixed for its life: a
different selector is a different policy. Two policies with the same selector may not be in
force at the same time (which one applied would be an accident of ordering).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Final, Literal, get_args

from services.sla.domain.calendar import BusinessCalendar, as_utc
from services.sla.domain.policy import BREACH, OlaPolicy, SlaPolicy
from shared.contracts.incidents import PendingReason, Priority, TicketType
from shared.contracts.registry import EventData
from shared.contracts.sla_policies import (
    WEEKDAYS,
    Holiday,
    PolicyKind,
    SlaCalendarPublished,
    SlaCalendarRetired,
    SlaPolicyPublished,
    SlaPolicyRetired,
    Weekday,
)
from shared.errors import Conflict, Invalid

Status = Literal["active", "retired"]
Action = Literal["revise", "retire"]
# (status, action) -> status after it; what is not here is refused with 409.
TRANSITIONS: Final[Mapping[tuple[Status, Action], Status]] = {
    ("active", "revise"): "active",
    ("active", "retire"): "retired",
}
# A client's clock may run a little behind the server's: "now" from the client is still now.
CLOCK_TOLERANCE = timedelta(minutes=1)


def next_status(status: Status, action: Action, what: str) -> Status:
    after = TRANSITIONS.get((status, action))
    if after is None:
        allowed = sorted(a for (s, a) in TRANSITIONS if s == status)
        raise Conflict(
            f"{what} is {status}: it cannot be {action}d",
            current_status=status,
            allowed_actions=allowed,
        )
    return after


# -- calendars --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalendarSpec:
    """What an administrator says about a calendar (create or a new version)."""

    name: str
    time_zone: str
    hours: Mapping[Weekday, Sequence[str]]
    holidays: tuple[Holiday, ...] = ()


@dataclass(frozen=True)
class CalendarVersion:
    id: str
    version: int
    name: str
    time_zone: str
    hours: tuple[tuple[Weekday, tuple[str, ...]], ...]  # in weekday order, closed days absent
    holidays: tuple[Holiday, ...]
    effective_from: datetime
    recorded_at: datetime
    recorded_by: str
    retired: bool = False

    @property
    def status(self) -> Status:
        return "retired" if self.retired else "active"

    def business_calendar(self) -> BusinessCalendar:
        """The engine's calendar; its name is the calendar id (what SLA facts report)."""
        return BusinessCalendar.weekly(
            self.id,
            self.time_zone,
            {WEEKDAYS.index(day): ", ".join(spans) for day, spans in self.hours},
            (h.date for h in self.holidays),
        )


def calendar_version(
    calendar_id: str, version: int, spec: CalendarSpec, effective_from: datetime,
    actor: str, now: datetime,
) -> CalendarVersion:  # fmt: skip
    hours = tuple((day, tuple(spec.hours[day])) for day in WEEKDAYS if spec.hours.get(day))
    dates = [h.date for h in spec.holidays]
    duplicates = sorted({d.isoformat() for d in dates if dates.count(d) > 1})
    if duplicates:
        raise Invalid(f"holidays listed twice: {', '.join(duplicates)}")
    calendar = CalendarVersion(
        id=calendar_id, version=version, name=spec.name, time_zone=spec.time_zone, hours=hours,
        holidays=tuple(sorted(spec.holidays, key=lambda h: h.date)),
        effective_from=effective_from, recorded_at=to_millis(now), recorded_by=actor,
    )  # fmt: skip
    try:
        calendar.business_calendar()  # the engine's own checks: hours, zone, order, overlaps
    except ValueError as exc:
        raise Invalid(str(exc).replace(f"calendar {calendar_id!r}: ", "")) from None
    return calendar


def create_calendar(
    calendar_id: str, spec: CalendarSpec, *, effective_from: datetime | None, actor: str,
    now: datetime,
) -> tuple[CalendarVersion, list[EventData]]:  # fmt: skip
    start = _effective(effective_from, None, now)
    calendar = calendar_version(calendar_id, 1, spec, start, actor, now)
    return calendar, [calendar_published(calendar)]


def revise_calendar(
    current: CalendarVersion, spec: CalendarSpec, *, effective_from: datetime | None, actor: str,
    now: datetime,
) -> tuple[CalendarVersion, list[EventData]]:  # fmt: skip
    next_status(current.status, "revise", f"calendar {current.id}")
    start = _effective(effective_from, current.effective_from, now)
    calendar = calendar_version(current.id, current.version + 1, spec, start, actor, now)
    return calendar, [calendar_published(calendar)]


def retire_calendar(
    current: CalendarVersion, *, effective_from: datetime | None, actor: str, now: datetime,
    used_by: Sequence[str] = (),
) -> tuple[CalendarVersion, list[EventData]]:  # fmt: skip
    next_status(current.status, "retire", f"calendar {current.id}")
    if used_by:
        raise Conflict(
            f"calendar {current.id} is used by the active policies {', '.join(used_by)}: "
            "give them another calendar or retire them first",
            used_by=list(used_by),
        )
    start = _effective(effective_from, current.effective_from, now)
    retired = replace(
        current, version=current.version + 1, effective_from=start,
        recorded_at=to_millis(now), recorded_by=actor, retired=True,
    )  # fmt: skip
    return retired, [
        SlaCalendarRetired(
            calendar_id=retired.id, version=retired.version, effective_from=start,
            recorded_at=retired.recorded_at, actor=actor,
        )
    ]  # fmt: skip


def calendar_published(c: CalendarVersion) -> SlaCalendarPublished:
    return SlaCalendarPublished(
        calendar_id=c.id, version=c.version, effective_from=c.effective_from,
        recorded_at=c.recorded_at, actor=c.recorded_by, name=c.name, time_zone=c.time_zone,
        hours={day: list(spans) for day, spans in c.hours}, holidays=list(c.holidays),
    )  # fmt: skip


# -- policies ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selector:
    """Which tickets a policy measures. SLA: ticket type and priority (required), service and
    group (optional). OLA: group (required), ticket type and priority (optional)."""

    kind: PolicyKind
    ticket_type: TicketType | None = None
    priority: Priority | None = None
    service: str | None = None
    group: str | None = None

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in vars(self).items() if v is not None and k != "kind"]
        return f"{self.kind.upper()} {', '.join(parts)}"


@dataclass(frozen=True)
class PolicySpec:
    name: str
    selector: Selector
    calendar_id: str
    first_response: timedelta | None = None
    resolution: timedelta | None = None
    target: timedelta | None = None  # OLA: the time a ticket may spend with the group
    warnings: tuple[int, ...] = (50, 75, 90)
    pause_on: frozenset[PendingReason] = frozenset(get_args(PendingReason))


@dataclass(frozen=True)
class PolicyVersion:
    id: str
    version: int
    name: str
    selector: Selector
    calendar_id: str
    first_response: timedelta | None
    resolution: timedelta | None
    target: timedelta | None
    warnings: tuple[int, ...]
    pause_on: frozenset[PendingReason]
    effective_from: datetime
    recorded_at: datetime
    recorded_by: str
    retired: bool = False

    @property
    def status(self) -> Status:
        return "retired" if self.retired else "active"

    def to_domain(self, calendar: BusinessCalendar) -> SlaPolicy | OlaPolicy:
        """The engine's policy, measured on `calendar`."""
        s = self.selector
        if s.kind == "ola":
            assert s.group is not None and self.target is not None
            return OlaPolicy(
                id=self.id, version=self.version, name=self.name, group=s.group,
                duration=self.target, calendar=calendar, priority=s.priority,
                ticket_type=s.ticket_type, warnings=self.warnings, pause_on=self.pause_on,
                effective_from=self.effective_from,
            )  # fmt: skip
        assert s.ticket_type is not None and s.priority is not None
        return SlaPolicy(
            id=self.id, version=self.version, name=self.name, ticket_type=s.ticket_type,
            priority=s.priority, calendar=calendar, first_response=self.first_response,
            resolution=self.resolution, service=s.service, group=s.group,
            warnings=self.warnings, pause_on=self.pause_on, effective_from=self.effective_from,
        )  # fmt: skip


def check_policy(spec: PolicySpec) -> None:
    """The rules of a policy version on its own (the calendar and other policies are checked
    by the handler, which has to read them)."""
    s = spec.selector
    if s.kind == "sla":
        if s.ticket_type is None or s.priority is None:
            raise Invalid("an SLA policy needs a ticket_type and a priority")
        if spec.target is not None:
            raise Invalid("an SLA policy has first_response/resolution targets, not target")
        if spec.first_response is None and spec.resolution is None:
            raise Invalid("an SLA policy needs a first_response or a resolution target")
    else:
        if s.group is None:
            raise Invalid("an OLA policy needs the assignment group it measures")
        if s.service is not None:
            raise Invalid("an OLA policy is chosen by group, priority and ticket type, not service")
        if spec.first_response is not None or spec.resolution is not None:
            raise Invalid("an OLA policy has one target (time with the group), not SLA targets")
        if spec.target is None:
            raise Invalid("an OLA policy needs a target")
    for label, value in (
        ("first_response", spec.first_response),
        ("resolution", spec.resolution),
        ("target", spec.target),
    ):
        if value is not None and value <= timedelta(0):
            raise Invalid(f"{label} must be positive")
    warnings = list(spec.warnings)
    if warnings != sorted(set(warnings)) or not all(0 < w < BREACH for w in warnings):
        raise Invalid(f"warnings must be increasing percentages between 1 and 99, got {warnings}")


def policy_version(
    policy_id: str, version: int, spec: PolicySpec, effective_from: datetime, actor: str,
    now: datetime,
) -> PolicyVersion:  # fmt: skip
    check_policy(spec)
    return PolicyVersion(
        id=policy_id, version=version, name=spec.name, selector=spec.selector,
        calendar_id=spec.calendar_id, first_response=spec.first_response,
        resolution=spec.resolution, target=spec.target, warnings=tuple(spec.warnings),
        pause_on=frozenset(spec.pause_on), effective_from=effective_from,
        recorded_at=to_millis(now),
        recorded_by=actor,
    )  # fmt: skip


def create_policy(
    policy_id: str, spec: PolicySpec, *, effective_from: datetime | None, actor: str,
    now: datetime, same_selector: Iterable[PolicyVersion] = (),
) -> tuple[PolicyVersion, list[EventData]]:  # fmt: skip
    """`same_selector`: the latest version of every other policy with this selector."""
    start = _effective(effective_from, None, now)
    clashes = [p.id for p in same_selector if p.id != policy_id and _in_force_from(p, start)]
    if clashes:
        raise Invalid(
            f"policy {', '.join(sorted(clashes))} already covers {spec.selector.describe()} "
            f"from {start.isoformat()}: revise it (PUT), or retire it first"
        )
    policy = policy_version(policy_id, 1, spec, start, actor, now)
    return policy, [policy_published(policy)]


def revise_policy(
    current: PolicyVersion, spec: PolicySpec, *, effective_from: datetime | None, actor: str,
    now: datetime,
) -> tuple[PolicyVersion, list[EventData]]:  # fmt: skip
    next_status(current.status, "revise", f"policy {current.id}")
    if spec.selector != current.selector:
        raise Invalid(
            f"the selector of policy {current.id} is {current.selector.describe()} and cannot "
            "change: retire it and create a policy for the new selector"
        )
    start = _effective(effective_from, current.effective_from, now)
    policy = policy_version(current.id, current.version + 1, spec, start, actor, now)
    return policy, [policy_published(policy)]


def retire_policy(
    current: PolicyVersion, *, effective_from: datetime | None, actor: str, now: datetime
) -> tuple[PolicyVersion, list[EventData]]:
    next_status(current.status, "retire", f"policy {current.id}")
    start = _effective(effective_from, current.effective_from, now)
    retired = replace(
        current, version=current.version + 1, effective_from=start,
        recorded_at=to_millis(now), recorded_by=actor, retired=True,
    )  # fmt: skip
    return retired, [
        SlaPolicyRetired(
            policy_id=retired.id, version=retired.version, kind=retired.selector.kind,
            effective_from=start, recorded_at=retired.recorded_at, actor=actor,
        )
    ]  # fmt: skip


def policy_published(p: PolicyVersion) -> SlaPolicyPublished:
    s = p.selector
    return SlaPolicyPublished(
        policy_id=p.id, version=p.version, kind=s.kind, effective_from=p.effective_from,
        recorded_at=p.recorded_at, actor=p.recorded_by, name=p.name, ticket_type=s.ticket_type,
        priority=s.priority, service=s.service, group=s.group,
        first_response_seconds=_seconds(p.first_response),
        resolution_seconds=_seconds(p.resolution), target_seconds=_seconds(p.target),
        calendar_id=p.calendar_id, warnings=list(p.warnings), pause_on=sorted(p.pause_on),
    )  # fmt: skip


def _in_force_from(other: PolicyVersion, start: datetime) -> bool:
    """Whether `other` (its latest version) still applies at or after `start`."""
    return not other.retired or other.effective_from > start


def to_millis(instant: datetime) -> datetime:
    """UTC, truncated to what BSON stores (milliseconds): the stored version and the published
    one must not differ by the microseconds."""
    utc = as_utc(instant)
    return utc.replace(microsecond=utc.microsecond // 1000 * 1000)


def _effective(requested: datetime | None, previous: datetime | None, now: datetime) -> datetime:
    start = to_millis(requested if requested is not None else now)
    if start < as_utc(now) - CLOCK_TOLERANCE:
        raise Invalid(
            f"effective_from {start.isoformat()} is in the past: a version may only apply from "
            "now on, so replays keep measuring the past against what was in force then"
        )
    if previous is not None and start < previous:
        raise Invalid(
            f"effective_from {start.isoformat()} is before the current version's "
            f"({previous.isoformat()}): versions apply in order"
        )
    return start


def _seconds(value: timedelta | None) -> int | None:
    return None if value is None else int(value.total_seconds())
