"""Poll-until helpers: tests wait for a condition, never for a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]],
    *,
    until: Callable[[T], bool] = bool,
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Call `probe` until `until(result)` holds; fail with the last result after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if until(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {result!r}")
        await asyncio.sleep(interval)


async def while_progressing(
    probe: Callable[[], Awaitable[T]],
    progress: Callable[[], Awaitable[object]],
    *,
    until: Callable[[T], bool] = bool,
    stall: float = 60.0,
    interval: float = 1.0,
    what: str = "condition",
) -> T:
    """`eventually` for a pipeline whose speed depends on the machine's load: wait as long as
    `progress()` (a consumer's lag, a count) keeps changing; fail once it has stood still for
    `stall` seconds without `until(probe())` holding."""
    last_change, seen = time.monotonic(), await progress()
    while True:
        result = await probe()
        if until(result):
            return result
        now_seen = await progress()
        if now_seen != seen:
            last_change, seen = time.monotonic(), now_seen
        elif time.monotonic() - last_change > stall:
            raise AssertionError(
                f"no progress for {stall}s waiting for {what} (progress stuck at {seen!r}); "
                f"last: {result!r}"
            )
        await asyncio.sleep(interval)
