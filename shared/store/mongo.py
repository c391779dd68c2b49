"""PyMongo async client factory (PyMongo's AsyncMongoClient replaces the deprecated motor), and
the server-dependent shape of conditional writes by `_id`.

FerretDB 1.24 (the development stand-in, SQLite backend) pushes a filter down to SQLite only
when it is exactly `{"_id": <string or ObjectId>}`; any other filter (`{_id, version}`,
`{_id: {$eq: ...}}`, `{_id: {$in: [...]}}`) makes it read and decode every document of the
collection in Go, for updates and deletes too. So on FerretDB a conditional write reads by `_id`
alone, checks in Python and writes by `_id` alone (docs/benchmarks.md, "FerretDB pushdown").

FerretDB also goes on with a write after its client has given up waiting (a socket timeout):
it has read the document, waits for SQLite's write lock (up to 10 s) and then writes the whole
document back. Had the document's lock (shared/store/locks.py) been let go at the timeout, a
later write of the same document could come in between and be overwritten by that stale copy:
the fault run once found an incident back at version 2 after its version 3 was published (the
outbox relay's removal had timed out). So a write left unanswered on FerretDB keeps its
documents locked until it shows in them (`until_settled`).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import structlog
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import NetworkTimeout, PyMongoError

from shared.store.locks import document_lock

log = structlog.get_logger(__name__)

# How long a write left unanswered may keep its documents locked while it is awaited: FerretDB
# waits up to 10 s for SQLite's write lock per statement, and a command has several.
UNANSWERED_WAIT = 30.0
_SETTLE_POLL = 0.05

# Per client: does it talk to FerretDB? Asked once (buildInfo), forgotten with the client.
_ferretdb: weakref.WeakKeyDictionary[AsyncMongoClient[Any], bool] = weakref.WeakKeyDictionary()


def create_client(url: str, *, app_name: str, timeout_ms: int = 5_000) -> AsyncMongoClient[Any]:
    """A client with bounded timeouts, so a missing server turns into a quick error (and a 503)
    instead of a request hanging for the driver's 30-second default."""
    return AsyncMongoClient(
        url,
        appname=app_name,
        tz_aware=True,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=max(timeout_ms * 2, 10_000),
    )


async def ping(client: Any) -> bool:
    try:
        await client.admin.command("ping")
    except Exception:
        return False
    return True


def _client_of(target: Any) -> AsyncMongoClient[Any] | None:
    if isinstance(target, AsyncCollection):
        return target.database.client
    if isinstance(target, AsyncDatabase):
        return target.client
    if isinstance(target, AsyncMongoClient):
        return target
    return None  # the in-memory twin, or a test's wrapper: writes keep the MongoDB shape


async def is_ferretdb(target: Any) -> bool:
    """Whether a PyMongo client, database or collection talks to FerretDB (its `buildInfo`
    carries `ferretdbVersion`). Asked once per client; a failed question is asked again."""
    client = _client_of(target)
    if client is None:
        return False
    known = _ferretdb.get(client)
    if known is None:
        info = await client.admin.command("buildInfo")
        known = _ferretdb[client] = "ferretdbVersion" in info
    return known


async def update_if_unchanged(
    collection: Any,
    document_id: Any,
    expected: Mapping[str, Any],
    update: Mapping[str, Any],
    *,
    by_id_only: bool | None = None,
) -> bool:
    """Apply `update` to document `document_id` only if its top-level fields still equal
    `expected`; False, and nothing written, if they do not or there is no such document.
    Takes the document's process lock (shared/store/locks.py) while it checks and writes, so
    the caller must not hold it (asyncio locks are not reentrant).

    MongoDB (and the in-memory twin): the check is the update's filter `{_id, **expected}`,
    atomic on the server, across processes. FerretDB (`by_id_only`, detected when None): a read
    by `_id`, the comparison here, then an update by `_id` - both pushed down to SQLite. That is
    no weaker than FerretDB's own handling of `{_id, **expected}`, which also checks a read
    snapshot and then writes `WHERE _id = ?` without a condition (so on FerretDB the process
    lock is what makes either shape safe).
    """
    if by_id_only is None:
        by_id_only = await is_ferretdb(collection)
    async with document_lock(collection, document_id):
        if not by_id_only:
            result = await collection.update_one({"_id": document_id, **expected}, update)
            return bool(result.matched_count)
        current = await collection.find_one({"_id": document_id}, dict.fromkeys(expected, 1))
        if current is None or _differs(current, expected):
            return False
        result = await answered_or_landed(
            collection, document_id, collection.update_one({"_id": document_id}, update),
            lambda doc: doc is None or _differs(doc, expected), projection=expected,
        )  # fmt: skip
        # None: unanswered, and the document has moved on from `expected` since (it landed);
        # 0 matched: deleted since the read.
        return result is None or bool(result.matched_count)


def _differs(document: Mapping[str, Any], expected: Mapping[str, Any]) -> bool:
    return any(document.get(k) != v for k, v in expected.items())


async def answered_or_landed(
    collection: Any,
    document_id: Any,
    write: Awaitable[Any],
    landed: Callable[[Mapping[str, Any] | None], bool],
    *,
    projection: Iterable[str] = (),
) -> Any:
    """Await a write to one document, its lock held: its result, or None if it went unanswered
    on FerretDB and then showed in the document (`landed`, see `until_settled`)."""
    try:
        return await write
    except NetworkTimeout:
        if await is_ferretdb(collection) and await until_settled(
            collection, [document_id], lambda _, doc: landed(doc), projection=projection
        ):
            return None
        raise


async def until_settled(
    collection: Any,
    document_ids: Iterable[Any],
    landed: Callable[[Any, Mapping[str, Any] | None], bool],
    *,
    projection: Iterable[str] = (),
    within: float = UNANSWERED_WAIT,
) -> bool:
    """After a write to `document_ids` went unanswered (a timeout) on FerretDB, with their
    locks still held: wait until `landed(id, document)` holds for each of them (the write
    shows), reading those not seen yet every 50 ms (by `_id` alone, the read FerretDB pushes
    down), for at most `within` seconds. True if it landed; False if it did not show in time
    (the caller reports the failure; the write may still land, so that is logged)."""
    waiting = list(document_ids)
    fields = dict.fromkeys(projection, 1) or None
    deadline = time.monotonic() + within
    while True:
        try:
            for document_id in list(waiting):
                if landed(document_id, await collection.find_one({"_id": document_id}, fields)):
                    waiting.remove(document_id)
        except PyMongoError:
            pass  # the server is still busy: ask again
        if not waiting:
            return True
        if time.monotonic() >= deadline:
            log.warning("store.write_unsettled", collection=collection.name, documents=len(waiting))
            return False
        await asyncio.sleep(_SETTLE_POLL)
