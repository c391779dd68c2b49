"""Notify's MongoDB collections (or the in-memory twin): escalation policies (one document per
version), rotations, the directory of people and groups, subscriptions, each ticket's
escalations (one aggregate with its outbox), the ticket views followed from incident events,
and the ack-link tokens already used. The delivery log is in delivery_log.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.notify import documents as docs
from services.notify.documents import Group, Person, StoredRotation
from services.notify.domain.book import TicketEscalations
from services.notify.domain.book import next_wakeup as book_wakeup
from services.notify.domain.escalation import awaits_acknowledgement
from services.notify.domain.policies import EscalationPolicy, PolicyCatalog
from services.notify.domain.subscriptions import Subscription
from services.notify.domain.triggers import TicketView
from shared.errors import Conflict
from shared.store.errors import AlreadyExists, translated_errors
from shared.store.locks import document_lock
from shared.store.mongo import update_if_unchanged
from shared.store.repository import AggregateRepository

POLICIES = "notify_policies"
SUBSCRIPTIONS = "notify_subscriptions"
VIEWS = "notify_ticket_views"
SLA_SEQUENCES = "notify_sla_sequences"  # per ticket: the last SLA fact applied
USED_TOKENS = "notify_used_ack_tokens"
SCAN_LIMIT = 10_000  # policies, people, groups, rotations: configuration, not data
AWAITING_SCAN = 1_000  # tickets read for one "awaiting acknowledgement" list


class PolicyStore:
    """Every version of every policy, one document each: `_id` = id:version, so two editors
    saving the same next version collide on the key and one of them is told so."""

    def __init__(self, database: Any) -> None:
        self.collection = database[POLICIES]

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("policy_id", 1), ("version", -1)])

    async def catalog(self) -> PolicyCatalog:
        async with translated_errors():
            found = await self.collection.find({}).limit(SCAN_LIMIT).to_list()
        return PolicyCatalog(tuple(docs.policy_from_document(d) for d in found))

    async def add(self, policy: EscalationPolicy, *, by: str, at: datetime) -> None:
        document = {**docs.policy_to_document(policy), "created_by": by, "created_at": at}
        try:
            async with translated_errors():
                await self.collection.insert_one(document)
        except AlreadyExists:
            raise Conflict(
                f"policy {policy.id!r} version {policy.version} was saved meanwhile; "
                "read it again and retry",
                policy=policy.id,
            ) from None


class RotationRepository(AggregateRepository[StoredRotation]):
    collection_name = "notify_rotations"

    def to_document(self, aggregate: StoredRotation) -> dict[str, Any]:
        return docs.rotation_to_document(aggregate)

    def from_document(self, document: dict[str, Any]) -> StoredRotation:
        return docs.rotation_from_document(document)

    async def all(self) -> list[StoredRotation]:
        found, _ = await self.find({}, sort=(("_id", 1),), limit=SCAN_LIMIT, count=False)
        return found


class PersonRepository(AggregateRepository[Person]):
    collection_name = "notify_people"

    def to_document(self, aggregate: Person) -> dict[str, Any]:
        return docs.person_to_document(aggregate)

    def from_document(self, document: dict[str, Any]) -> Person:
        return docs.person_from_document(document)

    async def with_quiet_hours(self) -> list[Person]:
        found, _ = await self.find(
            {"quiet_hours": {"$ne": None}}, sort=(("_id", 1),), limit=SCAN_LIMIT, count=False
        )
        return [p for p in found if p.quiet_hours is not None]


class GroupRepository(AggregateRepository[Group]):
    collection_name = "notify_groups"

    def to_document(self, aggregate: Group) -> dict[str, Any]:
        return {
            "_id": aggregate.name,
            "members": list(aggregate.members),
            "version": aggregate.version,
        }

    def from_document(self, document: dict[str, Any]) -> Group:
        return Group(document["_id"], tuple(document["members"]), int(document["version"]))

    async def all(self) -> list[Group]:
        found, _ = await self.find({}, sort=(("_id", 1),), limit=SCAN_LIMIT, count=False)
        return found


class SubscriptionStore:
    def __init__(self, database: Any) -> None:
        self.collection = database[SUBSCRIPTIONS]

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("user", 1)])

    async def put(self, subscription: Subscription) -> None:
        document = docs.subscription_to_document(subscription)
        key = document.pop("_id")
        async with document_lock(self.collection, key), translated_errors():
            await self.collection.update_one({"_id": key}, {"$set": document}, upsert=True)

    async def remove(self, user: str, kind: str) -> bool:
        async with translated_errors():
            result = await self.collection.delete_many({"_id": docs.subscription_key(user, kind)})
        return bool(result.deleted_count)

    async def of_user(self, user: str) -> list[Subscription]:
        return await self._find({"user": user})

    async def all(self) -> list[Subscription]:
        return await self._find({})

    async def _find(self, query: dict[str, Any]) -> list[Subscription]:
        async with translated_errors():
            found = await self.collection.find(query).sort([("_id", 1)]).to_list()
        return [docs.subscription_from_document(d) for d in found]


@dataclass(frozen=True)
class StoredBook:
    """A ticket's escalations with the version of the document they were read at."""

    book: TicketEscalations
    version: int
    trace: str = ""  # the trace that started them (shared.telemetry.trace_reference)


class EscalationRepository(AggregateRepository[StoredBook]):
    """One document per ticket: its escalations, the trigger events seen, its next wake-up
    (what the ticker indexes) and its outbox of escalation facts."""

    collection_name = "notify_escalations"

    def to_document(self, aggregate: StoredBook) -> dict[str, Any]:
        book = aggregate.book
        return {
            "_id": book.ticket_id,
            "version": aggregate.version,
            "escalations": [docs.escalation_to_document(e) for e in book.escalations],
            "escalation_ids": [e.id for e in book.escalations],
            "seen": sorted(book.seen),
            "next_wakeup": book_wakeup(book),
            "trace": aggregate.trace,
            **awaiting_fields(book),
        }

    def from_document(self, document: dict[str, Any]) -> StoredBook:
        book = TicketEscalations(
            ticket_id=document["_id"],
            escalations=tuple(docs.escalation_from_document(e) for e in document["escalations"]),
            seen=frozenset(document.get("seen", ())),
        )
        return StoredBook(book, int(document["version"]), document.get("trace") or "")

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("escalation_ids", 1)])
        await self.collection.create_index([("next_wakeup", 1)])
        await self.collection.create_index([("awaiting_ack", 1)])
        await self.collection.create_index([("awaiting_since", 1)])

    async def awaiting(self, user: str | None) -> list[StoredBook]:
        """Tickets with an escalation waiting for acknowledgement that paged `user` (None: any),
        longest waiting first; at most AWAITING_SCAN of them."""
        query = {"awaiting_ack": user} if user is not None else {"awaiting_since": {"$ne": None}}
        found, _ = await self.find(
            query, sort=(("awaiting_since", 1), ("_id", 1)), limit=AWAITING_SCAN, count=False
        )
        return found

    async def backfill_awaiting(self) -> int:
        """Give documents stored before `awaiting_ack` existed their derived fields. The version
        stays (nothing changed but an index field); a document written meanwhile has them."""
        async with translated_errors():
            found = await self.collection.find(
                {"awaiting_since": {"$exists": False}}, {"outbox": 0}
            ).to_list()
        filled = 0
        for document in found:
            fields = awaiting_fields(self.from_document(document).book)
            async with translated_errors():
                filled += await update_if_unchanged(
                    self.collection, document["_id"], {"version": document["version"]},
                    {"$set": fields},
                )  # fmt: skip
        return filled

    async def of_escalation(self, escalation_id: str) -> StoredBook | None:
        found, _ = await self.find({"escalation_ids": escalation_id}, limit=1, count=False)
        return found[0] if found else None

    async def wakeups(self) -> list[tuple[str, datetime]]:
        """(ticket id, next wake-up) of every ticket with a level still to fire."""
        async with translated_errors():
            found = await self.collection.find(
                {"next_wakeup": {"$ne": None}}, {"next_wakeup": 1}
            ).to_list()
        return [(d["_id"], docs.must_utc(d["next_wakeup"])) for d in found if d.get("next_wakeup")]


def awaiting_fields(book: TicketEscalations) -> dict[str, Any]:
    """Who may still acknowledge one of the ticket's escalations (everyone it paged), and since
    when the oldest of them waits (None: nothing waits): what the "mine" list queries."""
    waiting = [e for e in book.escalations if awaits_acknowledgement(e)]
    return {
        "awaiting_ack": sorted({person for e in waiting for person in e.notified}),
        "awaiting_since": min((e.started_at for e in waiting), default=None),
    }


class ViewStore:
    """The ticket views, each with the sequence of the last incident event applied to it."""

    def __init__(self, database: Any) -> None:
        self.collection = database[VIEWS]
        self.sla_sequences = database[SLA_SEQUENCES]

    async def last_sla_sequence(self, ticket_id: str) -> int:
        """The sequence of the last SLA fact applied for the ticket (the SLA state's version,
        one counter per ticket); 0 before the first."""
        async with translated_errors():
            document = await self.sla_sequences.find_one({"_id": ticket_id})
        return int(document["last_sequence"]) if document else 0

    async def applied_sla_sequence(self, ticket_id: str, sequence: int) -> None:
        async with translated_errors():
            await self.sla_sequences.update_one(
                {"_id": ticket_id}, {"$max": {"last_sequence": sequence}}, upsert=True
            )

    async def get(self, ticket_id: str) -> tuple[TicketView | None, int]:
        async with translated_errors():
            document = await self.collection.find_one({"_id": ticket_id})
        if document is None:
            return None, 0
        return docs.view_from_document(document), int(document.get("last_sequence", 0))

    async def many(self, ticket_ids: list[str]) -> dict[str, TicketView]:
        """The views of these tickets (those notify has seen), by id; one query."""
        if not ticket_ids:
            return {}
        async with translated_errors():
            found = await self.collection.find({"_id": {"$in": ticket_ids}}).to_list()
        return {d["_id"]: docs.view_from_document(d) for d in found}

    async def put(self, view: TicketView, sequence: int, previous: int) -> bool:
        """Store `view` as of `sequence` if the stored one is still at `previous`; False when
        another writer got there first (the caller re-reads)."""
        fields = {**docs.view_to_fields(view), "last_sequence": sequence}
        if previous == 0:
            try:
                async with document_lock(self.collection, view.ticket_id), translated_errors():
                    await self.collection.insert_one({"_id": view.ticket_id, **fields})
            except AlreadyExists:
                return False
            return True
        async with translated_errors():
            return await update_if_unchanged(
                self.collection, view.ticket_id, {"last_sequence": previous}, {"$set": fields}
            )


class UsedTokens:
    """Ack-link token ids already used: inserting one twice collides on `_id`."""

    def __init__(self, database: Any) -> None:
        self.collection = database[USED_TOKENS]

    async def use(self, token_id: str, *, expires_at: datetime, by: str, at: datetime) -> bool:
        """Record the first use of a token; False if it was used before."""
        document = {"_id": token_id, "expires_at": expires_at, "by": by, "used_at": at}
        try:
            async with translated_errors():
                await self.collection.insert_one(document)
        except AlreadyExists:
            return False
        return True

    async def forget_expired(self, now: datetime) -> int:
        async with translated_errors():
            result = await self.collection.delete_many({"expires_at": {"$lt": now}})
        return int(result.deleted_count)
