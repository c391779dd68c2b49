"""Human-facing sequential numbers (INC0001042), one atomic counter document per kind."""

from __future__ import annotations

from typing import Any

from pymongo import ReturnDocument

from shared.store.errors import translated_errors

COLLECTION = "counters"


async def next_number(database: Any, kind: str) -> int:
    async with translated_errors():
        document = await database[COLLECTION].find_one_and_update(
            {"_id": kind},
            {"$inc": {"value": 1}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
    return int(document["value"])
