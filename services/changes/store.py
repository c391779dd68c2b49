"""Change persistence (MongoDB or the in-memory twin): change documents with outbox and
timeline, and the catalogs they are checked against (templates, items, windows, CAB groups)."""

from __future__ import annotations

import re
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, time, timedelta
from typing import Any

from services.changes.domain.model import (
    Approval,
    Change,
    Plan,
    Requirement,
    Review,
    Risk,
    RiskAnswers,
    Window,
)
from services.changes.domain.scheduling import HOLDING_STATUSES, FreezeWindow, MaintenanceWindow
from shared.store.repository import AggregateRepository

DONE = ("completed", "review", "closed")
IDEMPOTENCY_KEYS = "change_idempotency_keys"
# The name space of change ids derived from idempotency keys (shared/store/idempotency.py).
IDEMPOTENCY_NAMESPACE = uuid.UUID("0d7c2a9e-3b5f-4e61-8f2a-9c4d1b6e7a30")


def _window(raw: dict[str, Any] | None) -> Window | None:
    return None if raw is None else Window(raw["start"], raw["end"])


class ChangeRepository(AggregateRepository[Change]):
    collection_name = "changes"
    append_only = ("timeline",)

    def to_document(self, aggregate: Change) -> dict[str, Any]:
        document = asdict(aggregate)
        document["_id"] = document.pop("id")
        return document

    def from_document(self, document: dict[str, Any]) -> Change:
        d = {k: v for k, v in document.items() if k not in {"_id", "outbox", "timeline"}}
        d["services"] = tuple(d.get("services", ()))
        d["configuration_items"] = tuple(d.get("configuration_items", ()))
        d["plan"] = Plan(**d["plan"])
        d["answers"] = RiskAnswers(**d["answers"])
        d["window"] = _window(d.get("window"))
        d["risk"] = (
            None
            if d.get("risk") is None
            else Risk(**{**d["risk"], "reasons": tuple(d["risk"]["reasons"])})
        )
        d["requirements"] = tuple(
            Requirement(r["group"], r["quorum"], tuple(r["members"]))
            for r in d.get("requirements", ())
        )
        d["approvals"] = tuple(Approval(**a) for a in d.get("approvals", ()))
        d["delegations"] = tuple(tuple(p) for p in d.get("delegations", ()))
        d["review"] = None if d.get("review") is None else Review(**d["review"])
        d["caused_incidents"] = tuple(d.get("caused_incidents", ()))
        d["suggested_incidents"] = tuple(d.get("suggested_incidents", ()))
        return Change(id=document["_id"], **d)

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("number", 1)], unique=True)
        await self.collection.create_index([("configuration_items", 1), ("status", 1)])
        await self.collection.create_index([("window.start", 1), ("window.end", 1)])
        await self.collection.create_index([("requester", 1), ("created_at", -1)])
        await self.collection.create_index([("caused_incidents", 1)])
        await self.collection.create_index([("suggested_incidents", 1)])

    async def holding(self, items: tuple[str, ...], window: Window) -> list[Change]:
        """Approved changes on any of `items` whose window overlaps `window` (index-backed)."""
        found, _ = await self.find(
            {
                "configuration_items": {"$in": list(items)},
                "status": {"$in": sorted(HOLDING_STATUSES)},
                "window.start": {"$lt": window.end},
                "window.end": {"$gt": window.start},
            },
            limit=1000,
            count=False,
        )
        return found

    async def by_number(self, number: str) -> Change | None:
        found, _ = await self.find({"number": number}, limit=1, count=False)
        return found[0] if found else None

    async def completed_on(
        self, *, item: str | None, service: str | None, since: datetime, until: datetime
    ) -> list[Change]:
        """Changes on `item` or `service` that completed in [since, until]."""
        touches = [{"configuration_items": item}] if item else []
        touches += [{"services": service}] if service else []
        if not touches:
            return []
        found, _ = await self.find(
            {
                "$or": touches,
                "status": {"$in": list(DONE)},
                "actual_end": {"$gte": since, "$lte": until},
            },
            sort=(("actual_end", -1),),
            limit=50,
            count=False,
        )
        return found

    async def in_range(self, start: datetime, end: datetime, limit: int = 500) -> list[Change]:
        found, _ = await self.find(
            {"window.start": {"$lt": end}, "window.end": {"$gt": start}},
            sort=(("window.start", 1),),
            limit=limit,
            count=False,
        )
        return found


@dataclass(frozen=True)
class ChangeFilter:
    status: str | None = None
    change_type: str | None = None
    requester: str | None = None
    implementer: str | None = None
    item: str | None = None
    service: str | None = None
    text: str | None = None
    incident: str | None = None  # linked to it: named in it (caused) or suggested

    def query(self) -> dict[str, Any]:
        query: dict[str, Any] = {
            name: value
            for name, value in (
                ("status", self.status),
                ("change_type", self.change_type),
                ("requester", self.requester),
                ("implementer", self.implementer),
                ("configuration_items", self.item),
                ("services", self.service),
            )
            if value is not None
        }
        if self.text:
            query["title"] = {"$regex": re.escape(self.text[:100]), "$options": "i"}
        if self.incident is not None:
            # two plain equalities on multikey-indexed arrays: MongoDB uses one index per branch
            query["$or"] = [
                {"caused_incidents": self.incident},
                {"suggested_incidents": self.incident},
            ]
        return query


# Catalogs: plain versioned documents keyed by name.


@dataclass(frozen=True)
class Template:
    """A pre-approved standard change."""

    name: str
    title: str
    implementation: str
    backout: str
    test: str
    services: tuple[str, ...]
    version: int


@dataclass(frozen=True)
class ConfigurationItem:
    name: str
    service: str | None
    version: int


@dataclass(frozen=True)
class ApprovalGroup:
    name: str
    members: tuple[str, ...]
    version: int


class _Catalog(AggregateRepository[Any]):
    """Documents of a frozen dataclass whose first field (`name`) is the key."""

    kind: Any

    def to_document(self, aggregate: Any) -> dict[str, Any]:
        document = asdict(aggregate)
        document["_id"] = document.pop("name")
        return document

    def from_document(self, document: dict[str, Any]) -> Any:
        fields = {k: v for k, v in document.items() if k not in {"_id", "outbox"}}
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
        return self.kind(name=document["_id"], **fields)

    async def all(self) -> list[Any]:
        found, _ = await self.find({}, sort=(("_id", 1),), limit=1000, count=False)
        return found


class TemplateRepository(_Catalog):
    collection_name = "change_templates"
    kind = Template


class ItemRepository(_Catalog):
    collection_name = "configuration_items"
    kind = ConfigurationItem

    async def unknown(self, names: tuple[str, ...]) -> list[str]:
        found, _ = await self.find({"_id": {"$in": list(names)}}, limit=1000, count=False)
        known = {item.name for item in found}
        return [n for n in names if n not in known]


class ApprovalGroupRepository(_Catalog):
    collection_name = "approval_groups"
    kind = ApprovalGroup

    async def members(self) -> dict[str, tuple[str, ...]]:
        return {g.name: g.members for g in await self.all()}


class FreezeRepository(_Catalog):
    collection_name = "freeze_windows"

    def to_document(self, aggregate: Any) -> dict[str, Any]:
        freeze: FreezeWindow = aggregate
        return {
            "_id": freeze.name,
            "start": freeze.window.start,
            "end": freeze.window.end,
            "services": list(freeze.services),
            "version": 1,
        }

    def from_document(self, document: dict[str, Any]) -> FreezeWindow:
        return FreezeWindow(
            document["_id"], Window(document["start"], document["end"]), tuple(document["services"])
        )

    async def overlapping(self, window: Window) -> list[FreezeWindow]:
        found, _ = await self.find(
            {"start": {"$lt": window.end}, "end": {"$gt": window.start}}, limit=1000, count=False
        )
        return found


class MaintenanceRepository(_Catalog):
    collection_name = "maintenance_windows"

    def to_document(self, aggregate: Any) -> dict[str, Any]:
        m: MaintenanceWindow = aggregate
        return {
            "_id": m.name,
            "weekday": m.weekday,
            "start": m.start.isoformat(),
            "duration_minutes": int(m.duration.total_seconds() // 60),
            "zone": m.zone,
            "services": list(m.services),
            "version": 1,
        }

    def from_document(self, document: dict[str, Any]) -> MaintenanceWindow:
        return MaintenanceWindow(
            name=document["_id"],
            weekday=document["weekday"],
            start=time.fromisoformat(document["start"]),
            duration=timedelta(minutes=document["duration_minutes"]),
            zone=document["zone"],
            services=tuple(document["services"]),
        )
