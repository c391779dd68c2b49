"""PyMongo async client factory (PyMongo's AsyncMongoClient replaces the deprecated motor), and
the server-dependent shape of conditional writes by `_id`.

FerretDB 1.24 (the development stand-in, SQLite backend) pushes a filter down to SQLite only
when it is exactly `{"_id": <string or ObjectId>}`; any other filter (`{_id, version}`,
`{_id: {$eq: ...}}`, `{_id: {$in: [...]}}`) makes it read and decode every document of the
collection in Go, for updates and deletes too. So on FerretDB a conditional write reads by `_id`
alone, checks in Python and writes by `_id` alone (docs/benchmarks.md, "FerretDB pushdown").
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from shared.store.locks import document_lock

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
        if current is None or any(current.get(k) != v for k, v in expected.items()):
            return False
        result = await collection.update_one({"_id": document_id}, update)
        return bool(result.matched_count)  # 0: deleted since the read
