"""Aggregate repositories: one document per aggregate, guarded by its version, carrying its
pending events in an `outbox` array written in the same single-document update.

No multi-document transaction is needed, so this works on a standalone MongoDB, a replica set
and FerretDB alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeVar

from shared.contracts.envelope import Envelope
from shared.contracts.registry import contract_for
from shared.store.errors import AlreadyExists, ConcurrencyConflict, translated_errors
from shared.store.mongo import update_if_unchanged
from shared.telemetry import current_traceparent

A = TypeVar("A")
OUTBOX = "outbox"
VERSION = "version"


# Told after each successful write (e.g. OutboxRelay.nudge): (collection name, document id, the
# outbox entries the write stored - in memory, exactly as stored - and whether it created the
# document).
OnWrite = Callable[[str, Any, Sequence[dict[str, Any]], bool], None]


def _ignore_write(
    collection_name: str, document_id: Any, entries: Sequence[dict[str, Any]], first: bool
) -> None:
    pass


def outbox_entry(envelope: Envelope) -> dict[str, Any]:
    """An outbox entry: the event plus its topic, and the trace context of the writing request so
    the relay's publish span joins the same trace. The time is cut to BSON's milliseconds, so the
    entry handed to the relay in memory equals the one a later read returns."""
    traced = envelope.with_traceparent(envelope.traceparent or current_traceparent())
    document = {"topic": str(contract_for(envelope.type).topic), **traced.to_document()}
    time = document["time"]
    document["time"] = time.replace(microsecond=time.microsecond // 1000 * 1000)
    return document


class AggregateRepository(Generic[A]):
    """Subclasses name the collection and map aggregate <-> document. The document produced by
    `to_document` must carry `_id` and `version`."""

    collection_name: ClassVar[str]
    # Arrays only ever appended to (e.g. a timeline): written with $push in the same update,
    # never loaded with the aggregate.
    append_only: ClassVar[tuple[str, ...]] = ()

    def __init__(self, database: Any, on_write: OnWrite | None = None) -> None:
        self.database = database
        self.collection = database[self.collection_name]
        self._on_write: OnWrite = on_write or _ignore_write

    def to_document(self, aggregate: A) -> dict[str, Any]:
        raise NotImplementedError

    def from_document(self, document: dict[str, Any]) -> A:
        raise NotImplementedError

    @property
    def _state_only(self) -> dict[str, int]:
        return {OUTBOX: 0, **dict.fromkeys(self.append_only, 0)}

    async def get(self, aggregate_id: str) -> A | None:
        async with translated_errors():
            document = await self.collection.find_one({"_id": aggregate_id}, self._state_only)
        return None if document is None else self.from_document(document)

    async def find(
        self,
        filter: dict[str, Any],
        *,
        sort: Sequence[tuple[str, int]] = (("_id", -1),),
        skip: int = 0,
        limit: int = 50,
        count: bool = True,
    ) -> tuple[list[A], int]:
        """A page of aggregates and the total count matching `filter` (-1 unless `count`)."""
        async with translated_errors():
            cursor = self.collection.find(filter, self._state_only).sort(list(sort)).skip(skip)
            documents = await cursor.limit(limit).to_list()
            total = await self.collection.count_documents(filter) if count else -1
        return [self.from_document(d) for d in documents], total

    async def read_field(self, aggregate_id: str, name: str) -> list[Any] | None:
        """An append-only array of one aggregate (None if there is no such aggregate)."""
        async with translated_errors():
            document = await self.collection.find_one({"_id": aggregate_id}, {name: 1})
        return None if document is None else list(document.get(name, []))

    async def add(
        self,
        aggregate: A,
        events: Sequence[Envelope],
        append: Mapping[str, Sequence[dict[str, Any]]] | None = None,
    ) -> None:
        """Insert a new aggregate with its first events; AlreadyExists if the id is taken."""
        document = self.to_document(aggregate)
        document[OUTBOX] = [outbox_entry(e) for e in events]
        for name in self.append_only:
            document[name] = list((append or {}).get(name, ()))
        try:
            async with translated_errors():
                await self.collection.insert_one(document)
        except AlreadyExists:
            raise AlreadyExists(
                f"{self.collection_name} {document['_id']} already exists"
            ) from None
        self._on_write(self.collection.name, document["_id"], document[OUTBOX], True)

    async def save(
        self,
        aggregate: A,
        expected_version: int,
        events: Sequence[Envelope],
        append: Mapping[str, Sequence[dict[str, Any]]] | None = None,
    ) -> None:
        """Replace the aggregate's state and append its new events (and append-only entries),
        only if it is still at `expected_version`; otherwise ConcurrencyConflict and nothing is
        written. (On FerretDB the version is checked in this process, under the document's lock,
        so that every query is by `_id` alone: see `update_if_unchanged`.)"""
        document = self.to_document(aggregate)
        aggregate_id = document.pop("_id")
        if document[VERSION] <= expected_version:
            raise ValueError("a saved aggregate's version must advance")
        update: dict[str, Any] = {"$set": document}
        pushes = {name: list(entries) for name, entries in (append or {}).items() if entries}
        entries = [outbox_entry(e) for e in events]
        if entries:
            pushes[OUTBOX] = entries
        if pushes:
            update["$push"] = {name: {"$each": entries} for name, entries in pushes.items()}
        async with translated_errors():  # the version check's shape depends on the server
            saved = await update_if_unchanged(
                self.collection, aggregate_id, {VERSION: expected_version}, update
            )
        if not saved:
            raise ConcurrencyConflict(aggregate_id, expected_version)
        self._on_write(self.collection.name, aggregate_id, entries, False)
