"""Both shapes of a conditional write by `_id` mean the same thing (on the in-memory twin here;
on the real server in tests/integration/test_store_filter_shapes.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest
from pymongo.errors import NetworkTimeout

from shared.store.memory import InMemoryDatabase
from shared.store.mongo import answered_or_landed, is_ferretdb, until_settled, update_if_unchanged
from shared.store.projection import is_newer


@pytest.mark.parametrize(
    ("sequence", "stored", "newer"),
    [(2, 1, True), (2, 1.0, True), (2, 2, False), (2, 3, False), (1, None, False), (1, "0", False)],
)
def test_a_sequence_is_newer_only_than_a_smaller_stored_number(
    sequence: int, stored: object, newer: bool
) -> None:
    assert is_newer(sequence, stored) is newer


def test_a_boolean_is_not_a_stored_sequence() -> None:
    assert is_newer(2, False) is False  # `{$lt: 2}` does not match false in MongoDB either


@pytest.mark.parametrize("by_id_only", [True, False])
async def test_either_shape_writes_only_over_the_expected_state(by_id_only: bool) -> None:
    collection = InMemoryDatabase()["docs"]
    await collection.insert_one({"_id": "d", "version": 1})

    async def bump(expected: int, document_id: str = "d") -> bool:
        change = {"$set": {"version": expected + 1}}
        return await update_if_unchanged(
            collection, document_id, {"version": expected}, change, by_id_only=by_id_only
        )

    assert [await bump(1), await bump(1), await bump(2), await bump(1, "none")] == [
        True,
        False,
        True,
        False,
    ]
    assert await collection.find_one({"_id": "d"}) == {"_id": "d", "version": 3}
    assert await collection.count_documents({}) == 1


async def test_the_in_memory_twin_keeps_the_mongodb_shape() -> None:
    assert await is_ferretdb(InMemoryDatabase()) is False
    assert await is_ferretdb(InMemoryDatabase()["docs"]) is False


async def test_an_unanswered_write_is_awaited_until_it_shows_or_the_wait_ends() -> None:
    collection = InMemoryDatabase()["docs"]
    await collection.insert_one({"_id": "a", "version": 1})
    await collection.insert_one({"_id": "b", "version": 1})

    def moved_on(_: object, doc: Mapping[str, Any] | None) -> bool:
        return doc is not None and doc["version"] > 1

    async def lands_later() -> None:  # FerretDB finishing a write its client gave up on
        await collection.update_one({"_id": "a"}, {"$set": {"version": 2}})
        await collection.update_one({"_id": "b"}, {"$set": {"version": 2}})

    landing = asyncio.create_task(lands_later())
    assert await until_settled(collection, ["a", "b"], moved_on, within=5.0) is True
    await landing
    # a write that never shows: False once the wait is over, and the caller reports it
    assert await until_settled(collection, ["a"], lambda _, doc: False, within=0.1) is False


async def test_an_unanswered_write_off_ferretdb_fails_at_once() -> None:
    """MongoDB checks the write's filter when it applies it: nothing to wait for."""
    collection = InMemoryDatabase()["docs"]

    async def unanswered() -> None:
        raise NetworkTimeout("timed out")

    with pytest.raises(NetworkTimeout):
        await answered_or_landed(collection, "a", unanswered(), lambda doc: True)
