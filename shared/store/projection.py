"""Idempotent consumers: apply an event to a read-side document only once, by sequence."""

from __future__ import annotations

from typing import Any

from shared.store.errors import AlreadyExists, translated_errors
from shared.store.locks import document_lock

LAST_SEQUENCE = "last_sequence"


async def apply_if_newer(collection: Any, key: str, sequence: int, update: dict[str, Any]) -> bool:
    """Apply `update` to document `key` if `sequence` is above the last one applied to it.

    Returns False for a redelivered or stale event. The check and the write are one atomic
    conditional upsert: a duplicate finds no matching document, the upsert then collides with
    the existing `_id`, and the driver's duplicate-key error means "already applied".
    """
    update = {**update, "$set": {**update.get("$set", {}), LAST_SEQUENCE: sequence}}
    try:
        async with document_lock(collection, key), translated_errors():
            await collection.update_one(
                {"_id": key, LAST_SEQUENCE: {"$lt": sequence}}, update, upsert=True
            )
    except AlreadyExists:
        return False
    return True
