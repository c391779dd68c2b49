"""Aggregate repositories: one document per aggregate, guarded by its version, carrying its
pending events in an `outbox` array written in the same single-document update.

No multi-document transaction is needed, so this works on a standalone MongoDB, a replica set
and FerretDB alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Generic, TypeVar

from shared.contracts.envelope import Envelope
from shared.contracts.registry import contract_for
from shared.store.errors import AlreadyExists, ConcurrencyConflict, translated_errors
from shared.telemetry import current_traceparent

A = TypeVar("A")
OUTBOX = "outbox"
VERSION = "version"


def outbox_entry(envelope: Envelope) -> dict[str, Any]:
    """An outbox entry: the event plus its topic, and the trace context of the writing request so
    the relay's publish span joins the same trace."""
    traced = envelope.with_traceparent(envelope.traceparent or current_traceparent())
    return {"topic": str(contract_for(envelope.type).topic), **traced.to_document()}


class AggregateRepository(Generic[A]):
    """Subclasses name the collection and map aggregate <-> document. The document produced by
    `to_document` must carry `_id` and `version`."""

    collection_name: ClassVar[str]

    def __init__(self, database: Any, on_write: Callable[[], None] | None = None) -> None:
        self.collection = database[self.collection_name]
        self._on_write = on_write or (lambda: None)

    def to_document(self, aggregate: A) -> dict[str, Any]:
        raise NotImplementedError

    def from_document(self, document: dict[str, Any]) -> A:
        raise NotImplementedError

    async def get(self, aggregate_id: str) -> A | None:
        async with translated_errors():
            document = await self.collection.find_one({"_id": aggregate_id}, {OUTBOX: 0})
        return None if document is None else self.from_document(document)

    async def find(
        self,
        filter: dict[str, Any],
        *,
        sort: Sequence[tuple[str, int]] = (("_id", -1),),
        skip: int = 0,
        limit: int = 50,
    ) -> tuple[list[A], int]:
        """A page of aggregates and the total count matching `filter`."""
        async with translated_errors():
            cursor = self.collection.find(filter, {OUTBOX: 0}).sort(list(sort)).skip(skip)
            documents = await cursor.limit(limit).to_list()
            total = await self.collection.count_documents(filter)
        return [self.from_document(d) for d in documents], total

    async def add(self, aggregate: A, events: Sequence[Envelope]) -> None:
        """Insert a new aggregate with its first events; AlreadyExists if the id is taken."""
        document = self.to_document(aggregate)
        document[OUTBOX] = [outbox_entry(e) for e in events]
        try:
            async with translated_errors():
                await self.collection.insert_one(document)
        except AlreadyExists:
            raise AlreadyExists(
                f"{self.collection_name} {document['_id']} already exists"
            ) from None
        self._on_write()

    async def save(self, aggregate: A, expected_version: int, events: Sequence[Envelope]) -> None:
        """Replace the aggregate's state and append its new events, only if it is still at
        `expected_version`; otherwise ConcurrencyConflict and nothing is written."""
        document = self.to_document(aggregate)
        aggregate_id = document.pop("_id")
        if document[VERSION] <= expected_version:
            raise ValueError("a saved aggregate's version must advance")
        update: dict[str, Any] = {"$set": document}
        if events:
            update["$push"] = {OUTBOX: {"$each": [outbox_entry(e) for e in events]}}
        async with translated_errors():
            result = await self.collection.update_one(
                {"_id": aggregate_id, VERSION: expected_version}, update
            )
        if result.matched_count == 0:
            raise ConcurrencyConflict(aggregate_id, expected_version)
        self._on_write()
