"""A long-running asyncio task owned by a component: started once, cancelled and awaited on stop."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine
from typing import Any


class BackgroundTask:
    # On Python 3.11 a cancellation can be lost: `asyncio.wait_for` returns the inner result when
    # it completes as the outer task is cancelled (PyMongo writes to its socket that way), and the
    # task carries on. stop() therefore cancels again until the task has ended. The wait between
    # cancellations is random: with a fixed one, a loop slowed by its other work can keep each
    # cancellation in step with the task's own cycle, so that every one of them is lost.
    RECANCEL_AFTER = 0.1  # seconds, the mean wait between cancellations
    MAX_CANCELS = 100

    def __init__(self, name: str) -> None:
        self.name = name
        self._task: asyncio.Task[None] | None = None

    def start(self, work: Coroutine[Any, Any, None]) -> None:
        if self._task is not None:
            work.close()
            raise RuntimeError(f"{self.name} is already running")
        self._task = asyncio.create_task(work, name=self.name)

    async def stop(self) -> None:
        """Cancel the task and wait until it has ended. A cancellation of the caller itself
        propagates (the task stays known, so stop() can be called again)."""
        task = self._task
        if task is None:
            return
        for _ in range(self.MAX_CANCELS):
            task.cancel()
            # asyncio.wait never raises the task's outcome; it raises only the caller's own
            # cancellation, which thus propagates.
            jitter = random.uniform(0.5, 1.5)  # noqa: S311 -- not a secret
            await asyncio.wait({task}, timeout=self.RECANCEL_AFTER * jitter)
            if task.done():
                break
        else:
            raise RuntimeError(f"{self.name} still running after {self.MAX_CANCELS} cancellations")
        self._task = None
        if not task.cancelled() and (error := task.exception()) is not None:
            raise error  # it had failed before it was stopped: as awaiting it would
