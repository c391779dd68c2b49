"""Human-facing sequential numbers (INC0001042), one atomic counter document per kind."""

from __future__ import annotations

from typing import Any

from pymongo import ReturnDocument

from shared.store.errors import translated_errors
from shared.store.locks import document_lock

COLLECTION = "counters"


async def next_number(database: Any, kind: str) -> int:
    counters = database[COLLECTION]
    async with document_lock(counters, kind), translated_errors():
        document = await counters.find_one_and_update(
            {"_id": kind},
            {"$inc": {"value": 1}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
    return int(document["value"])
