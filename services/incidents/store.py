"""Incident persistence: the aggregate document with its outbox and timeline, assignment
groups, and the queries behind the list endpoint (MongoDB or the in-memory twin)."""

from __future__ import annotations

import re
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from services.incidents.domain import OPEN_STATUSES, AlertLink, Incident
from shared.contracts.incidents import Tier
from shared.store.errors import translated_errors
from shared.store.locks import document_lock
from shared.store.repository import AggregateRepository

TEXT_QUERY_MAX = 100
ALERT_INDEX = "incident_alert_index"
IDEMPOTENCY_KEYS = "incident_idempotency_keys"
# The name space of incident ids derived from idempotency keys (shared/store/idempotency.py).
IDEMPOTENCY_NAMESPACE = uuid.UUID("5b0a3f56-6f1e-4c86-9a52-6f0c1a8e2d41")
OPEN = sorted(OPEN_STATUSES)


class IncidentRepository(AggregateRepository[Incident]):
    collection_name = "incidents"
    append_only = ("timeline",)

    def to_document(self, aggregate: Incident) -> dict[str, Any]:
        document = asdict(aggregate)
        document["_id"] = document.pop("id")
        document["watchers"] = list(aggregate.watchers)
        if aggregate.alert is not None:
            document["alert"]["recent_starts"] = list(aggregate.alert.recent_starts)
        return document

    def from_document(self, document: dict[str, Any]) -> Incident:
        fields = {k: v for k, v in document.items() if k not in {"_id", "outbox", "timeline"}}
        fields["watchers"] = tuple(fields.get("watchers", ()))
        if fields.get("alert"):
            alert = fields["alert"]
            fields["alert"] = AlertLink(**{**alert, "recent_starts": tuple(alert["recent_starts"])})
        return Incident(id=document["_id"], **fields)

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("number", 1)], unique=True)
        await self.collection.create_index([("requester", 1), ("created_at", -1)])
        await self.collection.create_index([("assignment_group", 1), ("status", 1)])
        await self.collection.create_index([("alert.fingerprint", 1), ("status", 1)])
        await self.collection.create_index([("status", 1), ("resolved_at", 1)])
        await self.collection.create_index([("parent_id", 1)])

    @property
    def alert_index(self) -> Any:
        """fingerprint -> the incident last opened for it: a lookup by _id, instead of a scan of
        incident documents, for every firing of an alert storm."""
        return self.database[ALERT_INDEX]

    async def open_for_alert(self, fingerprint: str) -> Incident | None:
        async with translated_errors():
            pointer = await self.alert_index.find_one({"_id": fingerprint})
        if pointer is not None:
            incident = await self.get(pointer["incident_id"])
            if incident is not None and incident.is_open:
                return incident
        # No pointer yet (first firing, or a crash before it was written): ask the incidents.
        found, _ = await self.find(
            {"alert.fingerprint": fingerprint, "status": {"$in": OPEN}},
            sort=(("created_at", -1),),
            limit=1,
            count=False,
        )
        return found[0] if found else None

    async def last_for_alert(self, fingerprint: str) -> Incident | None:
        """The incident the alert last opened, open or not (None if it never opened one)."""
        async with translated_errors():
            pointer = await self.alert_index.find_one({"_id": fingerprint})
        return None if pointer is None else await self.get(pointer["incident_id"])

    async def remember_alert(self, fingerprint: str, incident_id: str) -> None:
        async with document_lock(self.alert_index, fingerprint), translated_errors():
            await self.alert_index.update_one(
                {"_id": fingerprint}, {"$set": {"incident_id": incident_id}}, upsert=True
            )

    async def open_children(self, parent_id: str) -> list[Incident]:
        children, _ = await self.find(
            {"parent_id": parent_id, "status": {"$in": OPEN}},
            sort=(("_id", 1),),
            limit=1000,
            count=False,
        )
        return children

    async def resolved_before(self, cutoff: datetime, limit: int = 200) -> list[Incident]:
        due, _ = await self.find(
            {"status": "resolved", "resolved_at": {"$lte": cutoff}},
            sort=(("resolved_at", 1),),
            limit=limit,
            count=False,
        )
        return due


@dataclass(frozen=True)
class IncidentFilter:
    status: str | None = None
    priority: str | None = None
    group: str | None = None
    assignee: str | None = None
    requester: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    text: str | None = None

    def query(self) -> dict[str, Any]:
        """The MongoDB filter. Text search is a case-insensitive literal match on the title,
        escaped and length-capped so no caller can send a pathological pattern."""
        query: dict[str, Any] = {
            name: value
            for name, value in (
                ("status", self.status),
                ("priority", self.priority),
                ("assignment_group", self.group),
                ("assignee", self.assignee),
                ("requester", self.requester),
            )
            if value is not None
        }
        created: dict[str, datetime] = {}
        if self.created_from:
            created["$gte"] = self.created_from
        if self.created_to:
            created["$lt"] = self.created_to
        if created:
            query["created_at"] = created
        if self.text:
            query["title"] = {"$regex": re.escape(self.text[:TEXT_QUERY_MAX]), "$options": "i"}
        return query


@dataclass(frozen=True)
class Group:
    """An assignment group of one support tier, with its members and its manager."""

    name: str
    tier: Tier
    members: tuple[str, ...]
    manager: str | None
    version: int


PUBLISHED = "published"


class GroupRepository(AggregateRepository[Group]):
    collection_name = "assignment_groups"

    def to_document(self, aggregate: Group) -> dict[str, Any]:
        return {
            "_id": aggregate.name,
            "tier": aggregate.tier,
            "members": list(aggregate.members),
            "manager": aggregate.manager,
            "version": aggregate.version,
            # Every write publishes the group (`itsm.group.saved.v1`); documents written before
            # that existed lack the flag and are published once at start-up.
            PUBLISHED: True,
        }

    def from_document(self, document: dict[str, Any]) -> Group:
        return Group(
            name=document["_id"],
            tier=document["tier"],
            members=tuple(document["members"]),
            manager=document.get("manager"),
            version=document["version"],
        )

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("members", 1)])

    async def unpublished(self) -> list[Group]:
        async with translated_errors():
            documents = await self.collection.find({PUBLISHED: {"$ne": True}}).to_list()
        return [self.from_document(d) for d in documents]

    async def of_member(self, user: str) -> list[Group]:
        async with translated_errors():
            documents = await self.collection.find({"members": user}).to_list()
        return [self.from_document(d) for d in documents]
