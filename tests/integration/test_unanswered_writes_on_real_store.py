"""Writes the server left unanswered, on the real FerretDB: the document stays locked until the
write shows in it.

FerretDB goes on with a write after its client has timed out: it has read the document, waits
for SQLite's write lock, and then writes the whole document back from that read. The end-to-end
fault run once found an incident back at version 2 after its version 3 was published: the outbox
relay's removal had timed out, the resolve was saved meanwhile, and the removal then landed over
it. Here the test itself holds SQLite's write lock (a transaction on FerretDB's database file),
so that a write from a client with a 1 s socket timeout is left unanswered, and lets it go once
the client has given up.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring

from devtools.localstack.config import state_dir
from shared.store.counters import COLLECTION as COUNTERS
from shared.store.counters import reserve_numbers
from shared.store.locks import document_lock_users
from shared.store.mongo import is_ferretdb, update_if_unchanged
from shared.store.relay import remove_entries
from shared.store.repository import OUTBOX
from tests.support.polling import eventually

pytestmark = pytest.mark.infra


class FailedCommands(monitoring.CommandListener):
    """Which commands the client saw fail (a timeout is one), by name."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self.names.append(event.command_name)


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll a condition of this process (FerretDB gives up on its own lock wait after 10 s)."""

    async def probe() -> bool:
        return condition()

    await eventually(probe, timeout=8.0, what=what)


@asynccontextmanager
async def impatient(mongo_url: str, database: str) -> AsyncIterator[tuple[Any, FailedCommands]]:
    """The collection `things` through a client that gives up on an answer after 1 s."""
    listener = FailedCommands()
    client: AsyncMongoClient[Any] = AsyncMongoClient(
        mongo_url, socketTimeoutMS=1_000, event_listeners=[listener]
    )
    try:
        yield client[database]["things"], listener
    finally:
        await client.close()


@contextmanager
def sqlite_write_lock(database: str) -> Iterator[sqlite3.Connection]:
    """FerretDB's writes to `database` wait while this is held (its reads go on: WAL)."""
    path = state_dir() / "ferretdb-data" / f"{database}.sqlite"
    assert path.exists(), f"FerretDB's SQLite file for {database} not found at {path}"
    connection = sqlite3.connect(path, timeout=5, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        yield connection
    finally:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        connection.close()


@pytest.fixture
async def things(mongo_db: Any) -> Any:
    if not await is_ferretdb(mongo_db):
        pytest.skip("FerretDB's behaviour: MongoDB checks a write's filter atomically")
    collection = mongo_db["things"]
    await collection.insert_one({"_id": "warm-up"})  # FerretDB creates the database file
    return collection


async def test_a_save_left_unanswered_keeps_its_document_until_it_lands(
    things: Any, mongo_url: str
) -> None:
    await things.insert_one({"_id": "inc-1", "version": 1, "status": "new"})
    async with impatient(mongo_url, things.database.name) as (slow_things, listener):
        with sqlite_write_lock(things.database.name) as lock:
            save = asyncio.create_task(
                update_if_unchanged(
                    slow_things, "inc-1", {"version": 1},
                    {"$set": {"version": 2, "status": "assigned"}},
                )
            )  # fmt: skip
            await until(lambda: "update" in listener.names, "the save's timeout")
            assert await things.find_one({"_id": "inc-1"}) == {
                "_id": "inc-1", "version": 1, "status": "new",
            }  # fmt: skip
            assert not save.done(), "the save gave up while FerretDB still holds it"
            # The next save of the same document waits for the first to show.
            resolve = asyncio.create_task(
                update_if_unchanged(
                    things, "inc-1", {"version": 2}, {"$set": {"version": 3, "status": "resolved"}}
                )
            )
            await until(lambda: document_lock_users(things, "inc-1") == 2, "the resolve waiting")
            lock.execute("COMMIT")
        assert await save is True  # it did land, after the timeout
        assert await resolve is True
    assert await things.find_one({"_id": "inc-1"}) == {
        "_id": "inc-1", "version": 3, "status": "resolved",
    }  # fmt: skip


async def test_an_outbox_removal_left_unanswered_does_not_undo_the_next_save(
    things: Any, mongo_url: str
) -> None:
    published = {"id": "e2", "sequence": 2}
    await things.insert_one({"_id": "inc-2", "version": 2, OUTBOX: [published]})
    async with impatient(mongo_url, things.database.name) as (slow_things, listener):
        with sqlite_write_lock(things.database.name) as lock:
            removal = asyncio.create_task(remove_entries(slow_things, {"inc-2": [published]}))
            await until(lambda: "update" in listener.names, "the removal's timeout")
            resolved = {"id": "e3", "sequence": 3}
            resolve = asyncio.create_task(
                update_if_unchanged(
                    things, "inc-2", {"version": 2},
                    {"$set": {"version": 3}, "$push": {OUTBOX: resolved}},
                )
            )  # fmt: skip
            await until(lambda: document_lock_users(things, "inc-2") == 2, "the resolve waiting")
            lock.execute("COMMIT")
        await removal
        assert await resolve is True
    assert await things.find_one({"_id": "inc-2"}) == {
        "_id": "inc-2", "version": 3, OUTBOX: [resolved],
    }  # fmt: skip


async def test_a_number_reservation_left_unanswered_is_handed_out_once(
    things: Any, mongo_url: str
) -> None:
    database = things.database
    assert list(await reserve_numbers(database, "incident", 50)) == list(range(1, 51))
    async with impatient(mongo_url, database.name) as (slow_things, listener):
        with sqlite_write_lock(database.name) as lock:
            first = asyncio.create_task(reserve_numbers(slow_things.database, "incident", 50))
            await until(lambda: "findAndModify" in listener.names, "the reservation's timeout")
            second = asyncio.create_task(reserve_numbers(database, "incident", 50))
            await until(
                lambda: document_lock_users(database[COUNTERS], "incident") == 2,
                "the next reservation waiting",
            )
            lock.execute("COMMIT")
        assert list(await first) == list(range(51, 101))  # it landed after the timeout
        assert list(await second) == list(range(101, 151))
    assert await database[COUNTERS].find_one({"_id": "incident"}) == {
        "_id": "incident",
        "value": 150,
    }
