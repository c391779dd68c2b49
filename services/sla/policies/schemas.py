"""The policy API's input and output models, and their conversion to and from the pure model
(separate in and out models: a client never writes a version, a status or an audit field)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, get_args

from pydantic import BaseModel, ConfigDict, Field

from services.sla.policies.model import (
    CalendarSpec,
    CalendarVersion,
    PolicySpec,
    PolicyVersion,
    Selector,
    Status,
)
from shared.contracts.incidents import PendingReason, Priority, TicketType
from shared.contracts.sla_policies import SLUG, Holiday, PolicyKind, Weekday

Slug = Annotated[str, Field(pattern=SLUG, description="lower-case letters, digits, . _ -")]
Seconds = Annotated[int, Field(gt=0, le=366 * 86_400, description="business seconds")]
EFFECTIVE_FROM = "From when this version applies (default: now; may be in the future)"


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CalendarBody(_In):
    name: str = Field(min_length=1, max_length=200)
    time_zone: str = Field(description="IANA time zone, e.g. Europe/Berlin", max_length=64)
    hours: dict[Weekday, list[str]] = Field(
        description='Working spans per weekday in local time, e.g. {"mon": ["08:00-12:00", '
        '"13:00-17:00"]}; absent days are closed; "00:00-24:00" is the whole day',
        examples=[{d: ["08:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")}],
    )
    holidays: list[Holiday] = Field(default_factory=list, max_length=2000)
    effective_from: datetime | None = Field(None, description=EFFECTIVE_FROM)

    def spec(self) -> CalendarSpec:
        return CalendarSpec(self.name, self.time_zone, self.hours, tuple(self.holidays))


class CalendarIn(CalendarBody):
    id: Slug


class CalendarOut(BaseModel):
    id: str
    version: int
    status: Status
    name: str
    time_zone: str
    hours: dict[Weekday, list[str]]
    holidays: list[Holiday]
    effective_from: datetime
    recorded_at: datetime
    recorded_by: str

    @classmethod
    def of(cls, c: CalendarVersion) -> CalendarOut:
        return cls(
            id=c.id, version=c.version, status=c.status, name=c.name, time_zone=c.time_zone,
            hours={day: list(spans) for day, spans in c.hours}, holidays=list(c.holidays),
            effective_from=c.effective_from, recorded_at=c.recorded_at,
            recorded_by=c.recorded_by,
        )  # fmt: skip


class PolicyBody(_In):
    name: str = Field(min_length=1, max_length=200)
    kind: PolicyKind = Field("sla", description="sla: with the requester; ola: with a group")
    ticket_type: TicketType | None = Field(None, description="SLA: required; OLA: optional")
    priority: Priority | None = Field(None, description="SLA: required; OLA: optional")
    service: str | None = Field(None, max_length=200, description="SLA only: narrows it")
    group: str | None = Field(None, max_length=200, description="SLA: narrows; OLA: required")
    first_response_seconds: Seconds | None = None
    resolution_seconds: Seconds | None = None
    target_seconds: Seconds | None = Field(None, description="OLA only: time with the group")
    calendar_id: Slug
    warnings: list[int] = Field([50, 75, 90], max_length=10, description="percent of target")
    pause_on: list[PendingReason] = Field(
        list(get_args(PendingReason)), description="pending reasons that pause resolution/OLA"
    )
    effective_from: datetime | None = Field(None, description=EFFECTIVE_FROM)

    def spec(self) -> PolicySpec:
        return PolicySpec(
            name=self.name,
            selector=Selector(self.kind, self.ticket_type, self.priority, self.service, self.group),
            calendar_id=self.calendar_id,
            first_response=_duration(self.first_response_seconds),
            resolution=_duration(self.resolution_seconds),
            target=_duration(self.target_seconds),
            warnings=tuple(self.warnings),
            pause_on=frozenset(self.pause_on),
        )


class PolicyIn(PolicyBody):
    id: Slug


class PolicyOut(BaseModel):
    id: str
    version: int
    status: Status
    name: str
    kind: PolicyKind
    ticket_type: TicketType | None
    priority: Priority | None
    service: str | None
    group: str | None
    first_response_seconds: int | None
    resolution_seconds: int | None
    target_seconds: int | None
    calendar_id: str
    warnings: list[int]
    pause_on: list[PendingReason]
    effective_from: datetime
    recorded_at: datetime
    recorded_by: str

    @classmethod
    def of(cls, p: PolicyVersion) -> PolicyOut:
        s = p.selector
        return cls(
            id=p.id, version=p.version, status=p.status, name=p.name, kind=s.kind,
            ticket_type=s.ticket_type, priority=s.priority, service=s.service, group=s.group,
            first_response_seconds=_seconds(p.first_response),
            resolution_seconds=_seconds(p.resolution), target_seconds=_seconds(p.target),
            calendar_id=p.calendar_id, warnings=list(p.warnings), pause_on=sorted(p.pause_on),
            effective_from=p.effective_from, recorded_at=p.recorded_at,
            recorded_by=p.recorded_by,
        )  # fmt: skip


def _duration(seconds: int | None) -> timedelta | None:
    return None if seconds is None else timedelta(seconds=seconds)


def _seconds(value: timedelta | None) -> int | None:
    return None if value is None else int(value.total_seconds())
