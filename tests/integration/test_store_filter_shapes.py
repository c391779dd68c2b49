"""The shape of by-`_id` writes: on FerretDB 1.24 every hot-path query is `{_id}` alone (the only
filter it pushes down to SQLite), and the version / sequence checks keep their meaning with
either shape - on the real server and on the in-memory twin."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring

from shared.bus.memory import InMemoryBus
from shared.ids import uuid7
from shared.store.errors import ConcurrencyConflict
from shared.store.memory import InMemoryDatabase
from shared.store.mongo import is_ferretdb, update_if_unchanged
from shared.store.projection import apply_if_newer
from shared.store.relay import OutboxRelay
from tests.integration.conftest import scratch_database
from tests.integration.test_repository_contract import Counter, CounterRepository, bumped

pytestmark = pytest.mark.infra


class Filters(monitoring.CommandListener):
    """The filters of the reads and writes a client sends: (command, collection, filter)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name, command = event.command_name, event.command
        if name == "find":
            self.sent.append((name, command[name], dict(command["filter"])))
        elif name == "update":
            self.sent += [(name, command[name], dict(u["q"])) for u in command["updates"]]
        elif name == "findAndModify":
            self.sent.append((name, command[name], dict(command["query"])))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
async def watched(mongo_url: str) -> AsyncIterator[tuple[Any, Filters]]:
    filters = Filters()
    client: AsyncMongoClient[Any] = AsyncMongoClient(
        mongo_url, tz_aware=True, serverSelectionTimeoutMS=3_000, event_listeners=[filters]
    )
    name = f"t_{uuid7().replace('-', '')[-16:]}"
    try:
        yield client[name], filters
        await client.drop_database(name)
    finally:
        await client.close()


async def test_ferretdb_is_recognised_from_its_build_info(mongo_db: Any) -> None:
    info = await mongo_db.client.admin.command("buildInfo")
    expected = "ferretdbVersion" in info
    assert await is_ferretdb(mongo_db) is expected
    assert await is_ferretdb(mongo_db["any"]) is expected
    assert await is_ferretdb(mongo_db.client) is expected
    assert await is_ferretdb(InMemoryDatabase()) is False
    assert await is_ferretdb(InMemoryDatabase()["any"]) is False


async def test_hot_paths_query_by_id_alone_on_ferretdb_and_it_pushes_them_down(
    watched: tuple[Any, Filters],
) -> None:
    database, filters = watched
    on_ferretdb = await is_ferretdb(database)
    repo = CounterRepository(database)
    await repo.add(Counter("c1", 0, 1), bumped("c1", 0))
    await repo.save(Counter("c1", 1, 2), 1, bumped("c1", 1))
    with pytest.raises(ConcurrencyConflict):
        await repo.save(Counter("c1", 9, 2), 1, bumped("c1", 1))
    assert await repo.get("c1") == Counter("c1", 1, 2)
    await apply_if_newer(database["projection"], "k", 1, {"$set": {"seen": 1}})
    await apply_if_newer(database["projection"], "k", 2, {"$set": {"seen": 2}})
    repo._on_write = (relay := OutboxRelay(InMemoryBus(), [repo.collection])).nudge
    await repo.save(Counter("c1", 2, 3), 2, bumped("c1", 2))
    assert await relay.run_once(scan=False) == 3  # read back by `_id`, then removed by `_id`

    assert {command for command, _, _ in filters.sent} == {"find", "update"}
    guarded = [f for _, _, f in filters.sent if set(f) != {"_id"}]
    if on_ferretdb:
        assert guarded == []
        for _, collection, query in filters.sent:
            explained = await database.command("explain", {"find": collection, "filter": query})
            assert explained["filterPushdown"] is True, query
    else:  # MongoDB: the checks stay in the filters, atomic on the server
        assert {"_id": "c1", "version": 1} in guarded
        assert {"_id": "k", "last_sequence": {"$lt": 2}} in guarded


@pytest.fixture(params=[True, False], ids=["by-id-only", "guarded-filter"])
def by_id_only(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


async def test_a_conditional_update_applies_only_to_the_expected_state(
    mongo_db: Any, by_id_only: bool
) -> None:
    collection = mongo_db["docs"]
    await collection.insert_one({"_id": "d", "version": 1, "value": "a"})

    async def update(expected: int, value: str, document_id: str = "d") -> bool:
        change = {"$set": {"version": expected + 1, "value": value}}
        return await update_if_unchanged(
            collection, document_id, {"version": expected}, change, by_id_only=by_id_only
        )

    assert await update(1, "b") is True
    assert await update(1, "stale") is False
    assert await update(1, "absent", document_id="nobody") is False
    assert await collection.find_one({"_id": "d"}) == {"_id": "d", "version": 2, "value": "b"}
    assert await collection.count_documents({}) == 1


async def test_racing_conditional_updates_in_one_process_let_exactly_one_win(
    mongo_db: Any, by_id_only: bool
) -> None:
    collection = mongo_db["docs"]
    await collection.insert_one({"_id": "d", "version": 1, "winners": []})

    async def racer(n: int) -> bool:
        change = {"$set": {"version": 2}, "$push": {"winners": n}}
        return await update_if_unchanged(
            collection, "d", {"version": 1}, change, by_id_only=by_id_only
        )

    outcomes = await asyncio.gather(*(racer(n) for n in range(12)))
    assert outcomes.count(True) == 1
    stored = await collection.find_one({"_id": "d"})
    assert stored["version"] == 2 and stored["winners"] == [outcomes.index(True)]


@pytest.fixture(params=["memory", "ferretdb"])
async def database(request: pytest.FixtureRequest, mongo_url: str) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield InMemoryDatabase()
        return
    async with scratch_database(mongo_url) as database:
        yield database


async def test_a_read_model_without_a_last_sequence_is_never_overwritten(database: Any) -> None:
    projection = database["projection"]
    await projection.insert_one({"_id": "k", "seen": "by another writer"})
    assert await apply_if_newer(projection, "k", 1, {"$set": {"seen": 1}}) is False
    assert (await projection.find_one({"_id": "k"}))["seen"] == "by another writer"
    assert await apply_if_newer(projection, "new", 1, {"$set": {"seen": 1}}) is True
    assert await projection.find_one({"_id": "new"}) == {
        "_id": "new",
        "seen": 1,
        "last_sequence": 1,
    }
