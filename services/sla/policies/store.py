"""Calendars and policies in MongoDB (or the in-memory twin): one document per calendar or
policy holding its latest version, an append-only `history` of every version, and the outbox of
the version events, all written in one version-guarded single-document update."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar, cast

from services.sla.policies.model import CalendarVersion, PolicyVersion, Selector, Status
from shared.contracts.sla_policies import WEEKDAYS, Holiday
from shared.store.repository import AggregateRepository

HISTORY = "history"
Document = dict[str, Any]


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _seconds(value: timedelta | None) -> int | None:
    return None if value is None else int(value.total_seconds())


def _duration(value: int | None) -> timedelta | None:
    return None if value is None else timedelta(seconds=value)


class _Versioned(AggregateRepository[Any]):
    append_only: ClassVar[tuple[str, ...]] = (HISTORY,)

    async def history(self, aggregate_id: str) -> list[Any] | None:
        """Every version, oldest first (None: no such calendar or policy)."""
        documents = await self.read_field(aggregate_id, HISTORY)
        if documents is None:
            return None
        return sorted((self.from_document(d) for d in documents), key=lambda v: v.version)

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("status", 1)])


class CalendarRepository(_Versioned):
    collection_name = "sla_calendars"

    def to_document(self, aggregate: Any) -> Document:
        c = cast(CalendarVersion, aggregate)
        return {
            "_id": c.id, "version": c.version, "name": c.name, "time_zone": c.time_zone,
            "hours": {day: list(spans) for day, spans in c.hours},
            "holidays": [{"date": h.date.isoformat(), "name": h.name} for h in c.holidays],
            "effective_from": c.effective_from, "recorded_at": c.recorded_at,
            "recorded_by": c.recorded_by, "status": c.status,
        }  # fmt: skip

    def from_document(self, document: Document) -> CalendarVersion:
        d = document
        hours = d["hours"]
        return CalendarVersion(
            id=d["_id"], version=d["version"], name=d["name"], time_zone=d["time_zone"],
            hours=tuple((day, tuple(hours[day])) for day in WEEKDAYS if day in hours),
            holidays=tuple(
                Holiday(date=date.fromisoformat(h["date"]), name=h["name"]) for h in d["holidays"]
            ),
            effective_from=_utc(d["effective_from"]), recorded_at=_utc(d["recorded_at"]),
            recorded_by=d["recorded_by"], retired=d["status"] == "retired",
        )  # fmt: skip


class PolicyRepository(_Versioned):
    collection_name = "sla_policies"

    def to_document(self, aggregate: Any) -> Document:
        p = cast(PolicyVersion, aggregate)
        return {
            "_id": p.id, "version": p.version, "name": p.name, "selector": vars(p.selector),
            "calendar_id": p.calendar_id, "first_response_seconds": _seconds(p.first_response),
            "resolution_seconds": _seconds(p.resolution), "target_seconds": _seconds(p.target),
            "warnings": list(p.warnings), "pause_on": sorted(p.pause_on),
            "effective_from": p.effective_from, "recorded_at": p.recorded_at,
            "recorded_by": p.recorded_by, "status": p.status,
        }  # fmt: skip

    def from_document(self, document: Document) -> PolicyVersion:
        d = document
        return PolicyVersion(
            id=d["_id"], version=d["version"], name=d["name"], selector=Selector(**d["selector"]),
            calendar_id=d["calendar_id"], first_response=_duration(d["first_response_seconds"]),
            resolution=_duration(d["resolution_seconds"]), target=_duration(d["target_seconds"]),
            warnings=tuple(d["warnings"]), pause_on=frozenset(d["pause_on"]),
            effective_from=_utc(d["effective_from"]), recorded_at=_utc(d["recorded_at"]),
            recorded_by=d["recorded_by"], retired=d["status"] == "retired",
        )  # fmt: skip

    async def with_selector(self, selector: Selector) -> list[PolicyVersion]:
        query = {f"selector.{name}": value for name, value in vars(selector).items()}
        found, _ = await self.find(query, limit=1000, count=False)
        return cast(list[PolicyVersion], found)

    async def using_calendar(self, calendar_id: str) -> list[PolicyVersion]:
        """Active policies whose latest version measures on `calendar_id`."""
        found, _ = await self.find(
            {"calendar_id": calendar_id, "status": "active"}, limit=1000, count=False
        )
        return cast(list[PolicyVersion], found)


@dataclass(frozen=True)
class CalendarFilter:
    status: Status | None = None

    def query(self) -> dict[str, Any]:
        return {} if self.status is None else {"status": self.status}


@dataclass(frozen=True)
class PolicyFilter:
    kind: str | None = None
    ticket_type: str | None = None
    priority: str | None = None
    service: str | None = None
    group: str | None = None
    calendar_id: str | None = None
    status: Status | None = None

    def query(self) -> dict[str, Any]:
        selector = ("kind", "ticket_type", "priority", "service", "group")
        return {
            (f"selector.{name}" if name in selector else name): value
            for name, value in vars(self).items()
            if value is not None
        }
