"""Per-document write serialisation within a process.

MongoDB applies each single-document update atomically. FerretDB 1.x (the MongoDB-compatible
server used on the development machines) does not: it reads the document, applies the update
and writes it back, so two concurrent updates of one document can lose one of them. Measured:
10 writers x 20 version-guarded updates plus 200 $push on one document kept 21 and 130 of them.
Every write path of the platform to one document (repository saves, the outbox relay's
removals, counters, projections) therefore takes this lock. Across processes each aggregate's
writer is its own service, so this is enough there; on MongoDB the lock is merely redundant.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

_locks: dict[tuple[str, Any], asyncio.Lock] = {}
_users: dict[tuple[str, Any], int] = {}


def _namespace(collection: Any) -> str:
    return str(getattr(collection, "full_name", None) or collection.name)


@asynccontextmanager
async def document_lock(collection: Any, document_id: Any) -> AsyncIterator[None]:
    key = (_namespace(collection), document_id)
    lock = _locks.setdefault(key, asyncio.Lock())
    _users[key] = _users.get(key, 0) + 1
    try:
        async with lock:
            yield
    finally:
        _users[key] -= 1
        if _users[key] == 0:  # nobody waits on it: forget it, so the table stays small
            del _users[key]
            del _locks[key]


@asynccontextmanager
async def document_locks(collection: Any, document_ids: Iterable[Any]) -> AsyncIterator[None]:
    """Several documents' locks, taken in a fixed order so two holders cannot deadlock."""
    async with AsyncExitStack() as stack:
        for document_id in sorted(set(document_ids), key=repr):
            await stack.enter_async_context(document_lock(collection, document_id))
        yield
