"""Per-document write serialisation within a process.

MongoDB applies each single-document update atomically. FerretDB 1.x (the MongoDB-compatible
server used on the development machines) does not: it reads the document, applies the update
and writes it back, so two concurrent updates of one document can lose one of them. Measured:
10 writers x 20 version-guarded updates plus 200 $push on one document kept 21 and 130 of them.
Every write path of the platform to one document (repository saves, the outbox relay's
removals, counters, projections) therefore takes this lock. Across processes each aggregate's
writer is its own service, so this is enough there; on MongoDB the lock is merely redundant.

`KeyedLocks` is the same serialisation for any keys (the SLA processor's tickets).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any


class KeyedLocks:
    """asyncio locks by key, each kept only while someone holds or awaits it, so the table stays
    as small as the work in flight."""

    def __init__(self) -> None:
        self._locks: dict[Any, asyncio.Lock] = {}
        self._users: dict[Any, int] = {}

    def __len__(self) -> int:
        return len(self._locks)

    def holders(self, key: Any) -> int:
        """How many hold or await `key`'s lock."""
        return self._users.get(key, 0)

    @asynccontextmanager
    async def hold(self, key: Any) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[key] -= 1
            if self._users[key] == 0:
                del self._users[key]
                del self._locks[key]

    @asynccontextmanager
    async def hold_all(self, keys: Iterable[Any]) -> AsyncIterator[None]:
        """Several keys' locks, taken in a fixed order so two holders cannot deadlock."""
        async with AsyncExitStack() as stack:
            for key in sorted(set(keys), key=repr):
                await stack.enter_async_context(self.hold(key))
            yield


_documents = KeyedLocks()


def _namespace(collection: Any) -> str:
    return str(getattr(collection, "full_name", None) or collection.name)


def document_lock(collection: Any, document_id: Any) -> AbstractAsyncContextManager[None]:
    return _documents.hold((_namespace(collection), document_id))


def document_lock_users(collection: Any, document_id: Any) -> int:
    """How many hold or await the document's lock."""
    return _documents.holders((_namespace(collection), document_id))


def document_locks(
    collection: Any, document_ids: Iterable[Any]
) -> AbstractAsyncContextManager[None]:
    """Several documents' locks, taken in a fixed order so two holders cannot deadlock."""
    namespace = _namespace(collection)
    return _documents.hold_all((namespace, document_id) for document_id in document_ids)
