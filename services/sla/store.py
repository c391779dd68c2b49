"""The SLA read model in MongoDB (or the in-memory twin): one document per (ticket, metric) timer
in `sla_timers`, one per KPI partial in `sla_kpi_partials`, and who works which ticket
(`sla_groups`, `sla_assignments`, from the incidents service's events), to scope agents.

Both are projections of facts on the bus: each write is version-guarded by the fact's sequence
(`apply_if_newer`), so a redelivered or late fact changes nothing and a document never goes back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.store.errors import translated_errors
from shared.store.locks import document_lock
from shared.store.mongo import answered_or_landed, is_ferretdb
from shared.store.projection import apply_if_newer

TIMERS = "sla_timers"
KPI_PARTIALS = "sla_kpi_partials"
GROUPS = "sla_groups"
ASSIGNMENTS = "sla_assignments"
# On each timer: its ticket's assignment (copied from `sla_assignments`, for scoped lists) and
# the incident event's sequence it came from.
ASSIGNMENT_SEQUENCE = "assignment_sequence"
Document = dict[str, Any]


def timer_key(ticket_id: str, metric: str) -> str:
    return f"{ticket_id}:{metric}"


@dataclass(frozen=True)
class TimerFilter:
    """Narrows timer queries; None means any."""

    priority: str | None = None
    metric: str | None = None
    ticket_type: str | None = None
    # Any of these clauses (AgentReach.clauses): the tickets the caller works; None: all.
    reach: tuple[Document, ...] | None = None

    def query(self) -> Document:
        query: Document = {
            name: value
            for name, value in (
                ("priority", self.priority),
                ("metric", self.metric),
                ("ticket_type", self.ticket_type),
            )
            if value is not None
        }
        if self.reach is not None:
            query["$and"] = [{"$or": list(self.reach)}]
        return query


class TimerStore:
    """`sla_timers`: the latest fact of each timer, as `handlers.timer_fields` shapes it."""

    def __init__(self, database: Any) -> None:
        self.collection = database[TIMERS]

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("ticket_id", 1)])
        await self.collection.create_index([("status", 1), ("deadline", 1)])
        await self.collection.create_index([("breached", 1), ("deadline", -1)])

    async def apply(self, key: str, sequence: int, fields: Document) -> bool:
        """Store `fields` as the timer's state if `sequence` is newer; False if it is not."""
        return await apply_if_newer(self.collection, key, sequence, {"$set": fields})

    async def of_ticket(self, ticket_id: str) -> list[Document]:
        return await self._list({"ticket_id": ticket_id}, sort=(("metric", 1),), limit=0)

    async def assign(self, ticket_id: str, assignment: Document) -> None:
        """Copy the ticket's assignment onto its timers that hold an older one: each timer
        under its document lock, as `apply` writes it. On FerretDB an update is a
        read-modify-write of the whole document, so one multi-document update racing a fact's
        write could put the timer back to its state before the fact (seen end to end: a
        `missed` fact lost under an assignment 25 ms apart)."""
        sequence = assignment[ASSIGNMENT_SEQUENCE]
        stale = [{ASSIGNMENT_SEQUENCE: {"$lt": sequence}}, {ASSIGNMENT_SEQUENCE: None}]
        async with translated_errors():
            by_id_only = await is_ferretdb(self.collection)
            timers = await self.collection.find({"ticket_id": ticket_id}, {"_id": 1}).to_list(None)
            for timer in timers:
                async with document_lock(self.collection, timer["_id"]):
                    if not by_id_only:  # MongoDB: one atomic conditional update
                        guard = {"_id": timer["_id"], "$or": stale}
                        await self.collection.update_one(guard, {"$set": assignment})
                        continue
                    current = await self.collection.find_one(
                        {"_id": timer["_id"]}, {ASSIGNMENT_SEQUENCE: 1}
                    )
                    held = (current or {}).get(ASSIGNMENT_SEQUENCE)
                    if current is not None and (held is None or held < sequence):
                        guard = {"_id": timer["_id"]}
                        await answered_or_landed(
                            self.collection, timer["_id"],
                            self.collection.update_one(guard, {"$set": assignment}),
                            lambda doc: doc is None or doc.get(ASSIGNMENT_SEQUENCE) == sequence,
                            projection=(ASSIGNMENT_SEQUENCE,),
                        )  # fmt: skip

    async def running_due_by(
        self, filters: TimerFilter, now: datetime, until: datetime, *, limit: int, offset: int
    ) -> tuple[list[Document], int]:
        """Running timers whose deadline is after `now` and at or before `until`, soonest first,
        with the total count."""
        query = {
            **filters.query(),
            "status": "running",
            "deadline": {"$gt": now, "$lte": until},
        }
        return await self._page(query, (("deadline", 1), ("_id", 1)), limit, offset)

    async def running_before_deadline(
        self, filters: TimerFilter, now: datetime, *, limit: int
    ) -> list[Document]:
        """Running timers whose deadline is still ahead, soonest first, at most `limit`."""
        query = {**filters.query(), "status": "running", "deadline": {"$gt": now}}
        return await self._list(query, sort=(("deadline", 1), ("_id", 1)), limit=limit)

    async def breached(
        self,
        filters: TimerFilter,
        now: datetime,
        *,
        since: datetime | None,
        until: datetime | None,
        limit: int,
        offset: int,
    ) -> tuple[list[Document], int]:
        """Timers that breached (a breach or miss was reported, or a running clock is past its
        deadline although no fact said so yet), latest breach first. A breached timer's
        deadline is the instant it breached, so the range applies to it."""
        window: Document = {}
        if since is not None:
            window["$gte"] = since
        if until is not None:
            window["$lt"] = until
        query: Document = {
            **filters.query(),
            "$or": [{"breached": True}, {"status": "running", "deadline": {"$lte": now}}],
        }
        if window:
            query["deadline"] = window
        return await self._page(query, (("deadline", -1), ("_id", 1)), limit, offset)

    async def _page(
        self, query: Document, sort: Sequence[tuple[str, int]], limit: int, offset: int
    ) -> tuple[list[Document], int]:
        async with translated_errors():
            cursor = self.collection.find(query).sort(list(sort)).skip(offset).limit(limit)
            documents = await cursor.to_list()
            total = await self.collection.count_documents(query)
        return documents, total

    async def _list(
        self, query: Document, *, sort: Sequence[tuple[str, int]], limit: int
    ) -> list[Document]:
        async with translated_errors():
            cursor = self.collection.find(query).sort(list(sort))
            if limit:
                cursor = cursor.limit(limit)
            documents: list[Document] = await cursor.to_list()
        return documents


@dataclass(frozen=True)
class KpiFilter:
    granularity: str
    since: datetime | None = None
    until: datetime | None = None
    team: str | None = None
    priority: str | None = None
    service: str | None = None

    def query(self) -> Document:
        query: Document = {"granularity": self.granularity}
        for name, value in (
            ("team", self.team),
            ("priority", self.priority),
            ("service", self.service),
        ):
            if value is not None:
                query[name] = value
        window: Document = {}
        if self.since is not None:
            window["$gte"] = self.since
        if self.until is not None:
            window["$lt"] = self.until
        if window:
            query["window_start"] = window
        return query


class KpiPartialStore:
    """`sla_kpi_partials`: the latest figures of each KPI partial (one source partition's share
    of one window and dimension combination)."""

    def __init__(self, database: Any) -> None:
        self.collection = database[KPI_PARTIALS]

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("granularity", 1), ("window_start", 1)])

    async def apply(self, key: str, sequence: int, fields: Document) -> bool:
        # The partial's duration sketches hold nested arrays (`bins: [[index, count], ...]`),
        # which FerretDB 1.x refuses ("nested arrays are not supported"): stored as JSON text.
        if isinstance(fields.get("partial"), dict):
            fields = {**fields, "partial": json.dumps(fields["partial"], separators=(",", ":"))}
        return await apply_if_newer(self.collection, key, sequence, {"$set": fields})

    async def matching(self, filters: KpiFilter, *, limit: int) -> list[Document]:
        """The partials in the range, oldest window first; at most `limit` of them."""
        async with translated_errors():
            cursor = self.collection.find(filters.query()).sort([("window_start", 1), ("_id", 1)])
            documents: list[Document] = await cursor.limit(limit).to_list()
        for document in documents:
            if isinstance(document.get("partial"), str):
                document["partial"] = json.loads(document["partial"])
        return documents


class AccessStore:
    """Who works which ticket, as the incidents service publishes it: each assignment group's
    tier and members (`sla_groups`) and each ticket's current group and assignee
    (`sla_assignments`), both version-guarded by the event's sequence."""

    def __init__(self, database: Any) -> None:
        self.groups = database[GROUPS]
        self.assignments = database[ASSIGNMENTS]

    async def ensure_indexes(self) -> None:
        await self.groups.create_index([("members", 1)])

    async def apply_group(self, name: str, sequence: int, tier: str, members: list[str]) -> bool:
        return await apply_if_newer(
            self.groups, name, sequence, {"$set": {"tier": tier, "members": members}}
        )

    async def memberships(self, subject: str) -> list[tuple[str, str]]:
        """(group name, tier) of every group `subject` belongs to."""
        async with translated_errors():
            found = await self.groups.find({"members": subject}, {"tier": 1}).to_list()
        return [(d["_id"], d["tier"]) for d in found]

    async def apply_assignment(
        self, ticket_id: str, sequence: int, group: str | None, assignee: str | None
    ) -> bool:
        fields = {"assignment_group": group, "assignee": assignee, ASSIGNMENT_SEQUENCE: sequence}
        return await apply_if_newer(self.assignments, ticket_id, sequence, {"$set": fields})

    async def assignment(self, ticket_id: str) -> Document:
        """The ticket's assignment as timer fields; unassigned (sequence 0) if none is known."""
        async with translated_errors():
            found = await self.assignments.find_one({"_id": ticket_id})
        found = found or {}
        return {
            "assignment_group": found.get("assignment_group"),
            "assignee": found.get("assignee"),
            ASSIGNMENT_SEQUENCE: found.get(ASSIGNMENT_SEQUENCE, 0),
        }
