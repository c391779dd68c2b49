"""SLA policy and business calendar contracts (`itsm.sla_policy.*`, `itsm.sla_calendar.*`),
published by the SLA API on the compacted policies topic and read in full by every SLA worker.

Every version of a policy or calendar is its own record, keyed `policy:<id>:<version>` or
`calendar:<id>:<version>` (the envelope's subject), so compaction never drops a version that a
replay of old tickets needs; a redelivered version has the same key and the same content.
Retiring is a version too (`retired`): nothing is ever deleted from the topic.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.incidents import PendingReason, Priority, TicketType
from shared.contracts.registry import EventData, event_type
from shared.contracts.topics import Topic

PolicyKind = Literal["sla", "ola"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SLUG = r"^[a-z0-9][a-z0-9._-]{0,63}$"


def record_key(kind: Literal["policy", "calendar"], aggregate_id: str, version: int) -> str:
    """The record key (and CloudEvents subject) of one version on the policies topic."""
    return f"{kind}:{aggregate_id}:{version}"


class Holiday(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    date: date
    name: str = Field("", max_length=200)


class CalendarVersionEvent(EventData):
    calendar_id: str = Field(pattern=SLUG)
    version: int = Field(ge=1)
    effective_from: datetime = Field(description="From when this version applies")
    recorded_at: datetime
    actor: str


class PolicyVersionEvent(EventData):
    policy_id: str = Field(pattern=SLUG)
    version: int = Field(ge=1)
    kind: PolicyKind
    effective_from: datetime = Field(description="From when this version applies")
    recorded_at: datetime
    actor: str


def _calendar(name: str):  # type: ignore[no-untyped-def]
    return event_type(
        f"itsm.sla_calendar.{name}.v1", topic=Topic.SLA_POLICIES, aggregate="sla_calendar"
    )


def _policy(name: str):  # type: ignore[no-untyped-def]
    return event_type(
        f"itsm.sla_policy.{name}.v1", topic=Topic.SLA_POLICIES, aggregate="sla_policy"
    )


@_calendar("published")
class SlaCalendarPublished(CalendarVersionEvent):
    """A version of a business calendar: working hours per weekday in local wall-clock time of
    `time_zone` (IANA), minus the holidays."""

    name: str = Field(min_length=1, max_length=200)
    time_zone: str
    hours: dict[Weekday, list[str]] = Field(
        description='Working spans per weekday, e.g. {"mon": ["08:00-12:00", "13:00-17:00"]}; '
        "absent days are closed"
    )
    holidays: list[Holiday]


@_calendar("retired")
class SlaCalendarRetired(CalendarVersionEvent):
    """No new policy version may use the calendar; versions that did keep it."""


@_policy("published")
class SlaPolicyPublished(PolicyVersionEvent):
    """A version of an SLA policy (ticket type x priority, optionally narrowed by service and/or
    group) or an OLA policy (an assignment group, optionally narrowed by priority and/or ticket
    type). Targets are business seconds on the named calendar."""

    name: str = Field(min_length=1, max_length=200)
    ticket_type: TicketType | None
    priority: Priority | None
    service: str | None
    group: str | None
    first_response_seconds: int | None = Field(gt=0, description="SLA only")
    resolution_seconds: int | None = Field(gt=0, description="SLA only")
    target_seconds: int | None = Field(gt=0, description="OLA only: time with the group")
    calendar_id: str = Field(pattern=SLUG)
    warnings: list[int] = Field(description="Percentages of the target that raise a warning")
    pause_on: list[PendingReason] = Field(description="Pending reasons that pause the clock")


@_policy("retired")
class SlaPolicyRetired(PolicyVersionEvent):
    """From `effective_from` the policy matches no ticket; timers it set keep their target."""
