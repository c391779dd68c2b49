"""KeyedLocks: one holder per key at a time, other keys free, nothing kept once released, and
several keys taken in one order so that two holders of overlapping sets cannot deadlock."""

from __future__ import annotations

import asyncio

from shared.store.locks import KeyedLocks
from tests.support.polling import eventually


async def test_a_key_has_one_holder_and_other_keys_are_free() -> None:
    locks, released = KeyedLocks(), asyncio.Event()
    order: list[str] = []

    async def first() -> None:
        async with locks.hold("INC-1"):
            order.append("first in")
            await released.wait()
            order.append("first out")

    async def second() -> None:
        async with locks.hold("INC-1"):
            order.append("second in")

    async def holders() -> int:
        return locks.holders("INC-1")

    holding = asyncio.create_task(first())
    await eventually(holders, until=lambda n: n == 1, timeout=5, interval=0.001)
    waiting = asyncio.create_task(second())
    await eventually(holders, until=lambda n: n == 2, timeout=5, interval=0.001)
    async with locks.hold("INC-2"):  # another key: not held up
        order.append("other key")
    released.set()
    await asyncio.gather(holding, waiting)

    assert order == ["first in", "other key", "first out", "second in"]
    assert len(locks) == 0 and locks.holders("INC-1") == 0  # forgotten once released


async def test_overlapping_sets_taken_in_any_order_do_not_deadlock() -> None:
    locks = KeyedLocks()
    held = asyncio.Event()

    async def take(keys: list[str]) -> None:
        async with locks.hold_all(keys):
            held.set()
            await asyncio.sleep(0)  # let the other holder try meanwhile

    await asyncio.wait_for(
        asyncio.gather(take(["a", "b", "c"]), take(["c", "b", "a"]), take(["b", "b"])), 5
    )
    assert held.is_set() and len(locks) == 0
