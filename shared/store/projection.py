"""Idempotent consumers: apply an event to a read-side document only once, by sequence."""

from __future__ import annotations

from typing import Any

from shared.store.errors import AlreadyExists, translated_errors
from shared.store.locks import document_lock
from shared.store.mongo import answered_or_landed, is_ferretdb

LAST_SEQUENCE = "last_sequence"


def is_newer(sequence: int, stored: Any) -> bool:
    """`sequence` is above the stored last one. A document without a numeric `last_sequence` is
    never overwritten, as the filter `{last_sequence: {$lt: sequence}}` never matches it."""
    numeric = isinstance(stored, int | float) and not isinstance(stored, bool)
    return numeric and stored < sequence


async def apply_if_newer(collection: Any, key: str, sequence: int, update: dict[str, Any]) -> bool:
    """Apply `update` to document `key` if `sequence` is above the last one applied to it.

    Returns False for a redelivered or stale event. On MongoDB the check and the write are one
    atomic conditional upsert: a duplicate finds no matching document, the upsert then collides
    with the existing `_id`, and the driver's duplicate-key error means "already applied". On
    FerretDB, where any filter but `{_id}` alone reads the whole collection, the check is a read
    by `_id` and the write an upsert by `_id`, under the document's process lock (as
    `shared.store.mongo.update_if_unchanged`).
    """
    update = {**update, "$set": {**update.get("$set", {}), LAST_SEQUENCE: sequence}}
    try:
        async with translated_errors():
            by_id_only = await is_ferretdb(collection)
            async with document_lock(collection, key):
                if not by_id_only:
                    guard = {"_id": key, LAST_SEQUENCE: {"$lt": sequence}}
                    await collection.update_one(guard, update, upsert=True)
                    return True
                current = await collection.find_one({"_id": key}, {LAST_SEQUENCE: 1})
                if current is not None and not is_newer(sequence, current.get(LAST_SEQUENCE)):
                    return False
                await answered_or_landed(
                    collection, key, collection.update_one({"_id": key}, update, upsert=True),
                    lambda doc: doc is not None and not is_newer(sequence, doc.get(LAST_SEQUENCE)),
                    projection=(LAST_SEQUENCE,),
                )  # fmt: skip
                return True
    except AlreadyExists:
        return False
