"""Ticket numbers reserved in blocks: unique, in order within a process, one counter update per
block - on FerretDB and on the in-memory twin."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared.store.counters import COLLECTION, NumberBlocks, next_number
from shared.store.memory import InMemoryDatabase
from tests.integration.conftest import scratch_database


@pytest.fixture(params=["memory", pytest.param("ferretdb", marks=pytest.mark.infra)])
async def database(request: pytest.FixtureRequest, mongo_url: str) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield InMemoryDatabase()
        return
    async with scratch_database(mongo_url) as database:
        yield database


class CountingDatabase:
    """The database, counting the updates of the counter document."""

    def __init__(self, database: Any) -> None:
        self._database = database
        self.counter_updates = 0

    def __getitem__(self, name: str) -> Any:
        collection = self._database[name]
        outer = self

        class Counted:
            full_name = getattr(collection, "full_name", None) or collection.name
            name = collection.name

            async def find_one_and_update(self, *args: Any, **kwargs: Any) -> Any:
                outer.counter_updates += 1
                return await collection.find_one_and_update(*args, **kwargs)

        return Counted()


async def _counter(database: Any, kind: str) -> int:
    return int((await database[COLLECTION].find_one({"_id": kind}))["value"])


async def test_concurrent_creates_share_one_counter_update_per_block(database: Any) -> None:
    counting = CountingDatabase(database)
    numbers = NumberBlocks(counting, "incident", block_size=10)
    taken = await asyncio.gather(*(numbers.next() for _ in range(25)))
    assert sorted(taken) == list(range(1, 26)) and taken == sorted(taken)
    assert counting.counter_updates == 3
    assert await _counter(database, "incident") == 30  # 26..30 reserved, not yet handed out


async def test_processes_get_disjoint_blocks_and_a_restart_leaves_a_gap(database: Any) -> None:
    first = NumberBlocks(database, "change", block_size=5)
    second = NumberBlocks(database, "change", block_size=5)
    assert [await first.next(), await second.next(), await first.next()] == [1, 6, 2]
    restarted = NumberBlocks(database, "change", block_size=5)
    assert await restarted.next() == 11  # 3..5 and 7..10 are gaps
    assert await next_number(database, "change") == 16  # the one-at-a-time form, same counter


def test_a_block_holds_at_least_one_number() -> None:
    with pytest.raises(ValueError, match="block_size"):
        NumberBlocks(InMemoryDatabase(), "incident", block_size=0)
