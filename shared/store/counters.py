"""Human-facing sequential numbers (INC0001042), one atomic counter document per kind.

`NumberBlocks` reserves numbers `block_size` at a time (one `$inc` by the block) and hands them
out in the process, so creates do not queue on the counter document. Numbers stay unique across
processes and restarts; what a process reserved and did not hand out before it stopped is a gap,
and with several replicas numbers are unique but not in creation order.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pymongo import ReturnDocument

from shared.store.errors import translated_errors
from shared.store.locks import document_lock
from shared.store.mongo import answered_or_landed, is_ferretdb

COLLECTION = "counters"


async def reserve_numbers(database: Any, kind: str, count: int) -> range:
    """The next `count` numbers of `kind`, reserved in one atomic update."""
    if count < 1:
        raise ValueError("reserve at least one number")
    counters = database[COLLECTION]
    async with document_lock(counters, kind), translated_errors():
        # On FerretDB the value before, so that a reservation left unanswered can be seen to
        # land (shared/store/mongo.py): let go early, it could later put the counter back.
        before = await counters.find_one({"_id": kind}) if await is_ferretdb(counters) else None
        reserved = (0 if before is None else int(before["value"])) + count
        document = await answered_or_landed(
            counters, kind,
            counters.find_one_and_update(
                {"_id": kind}, {"$inc": {"value": count}}, upsert=True,
                return_document=ReturnDocument.AFTER,
            ),
            lambda doc: doc is not None and int(doc["value"]) >= reserved,
            projection=("value",),
        )  # fmt: skip
    last = reserved if document is None else int(document["value"])
    return range(last - count + 1, last + 1)


async def next_number(database: Any, kind: str) -> int:
    """One number, reserved on its own (no gaps, one counter update per number)."""
    return (await reserve_numbers(database, kind, 1))[0]


class NumberBlocks:
    """Numbers of one kind handed out from blocks reserved `block_size` at a time."""

    def __init__(self, database: Any, kind: str, block_size: int = 1) -> None:
        if block_size < 1:
            raise ValueError("block_size must be at least 1")
        self._database = database
        self._kind = kind
        self._block_size = block_size
        self._block: range = range(0)
        self._taken = 0
        self._refill = asyncio.Lock()

    async def next(self) -> int:
        while self._taken >= len(self._block):
            async with self._refill:  # one reservation for everyone waiting
                if self._taken >= len(self._block):
                    self._block = await reserve_numbers(
                        self._database, self._kind, self._block_size
                    )
                    self._taken = 0
        number = self._block[self._taken]
        self._taken += 1
        return number
