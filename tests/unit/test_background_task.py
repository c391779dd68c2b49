"""BackgroundTask.stop(): ends the task even when a cancellation is lost, and never swallows the
caller's own cancellation."""

from __future__ import annotations

import asyncio
import time

import pytest

from shared.background import BackgroundTask


class WritesLikePymongo:
    """A loop of `asyncio.wait_for(write)`, as PyMongo sends its commands. When a cancellation
    lands in the loop step in which the write completes, Python 3.11's wait_for returns the
    write's result instead of raising: the cancellation is lost and the loop goes on."""

    def __init__(self) -> None:
        self.write: asyncio.Future[int] | None = None
        self.writing = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.write = loop.create_future()
            if self.writing.is_set():  # the relay goes on with its next writes
                loop.call_later(0.01, self.write.set_result, 1)
            self.writing.set()
            await asyncio.wait_for(self.write, timeout=3600)


async def stop_as_a_write_completes(what: str) -> BackgroundTask:
    """Start a relay-like task and stop it so that the first cancellation arrives in the loop
    step in which its write completes, and is lost; stop() must end within 5 s all the same."""
    writes = WritesLikePymongo()
    worker = BackgroundTask("relay-like")
    worker.start(writes.run())
    await writes.writing.wait()
    assert writes.write is not None
    asyncio.get_running_loop().call_soon(writes.write.set_result, 1)
    stopping = asyncio.create_task(worker.stop())
    done, _ = await asyncio.wait({stopping}, timeout=5)
    assert done, f"stop() still waiting for {what}"
    await stopping
    return worker


async def test_stop_ends_a_task_whose_cancellation_was_lost() -> None:
    worker = await stop_as_a_write_completes("a task that carries on")
    await worker.stop()  # stopped: a second stop is a no-op


async def busy_neighbour(blocks_for: float) -> None:
    """Another component's work that holds the loop for a while at every step, as a loaded CI
    runner or a CPU-heavy task does."""
    while True:
        time.sleep(blocks_for)  # noqa: ASYNC251 -- holds the loop on purpose
        await asyncio.sleep(0)


@pytest.mark.parametrize("blocks_for", [0.011, 0.02, 0.05])
async def test_stop_ends_the_task_when_a_slow_loop_keeps_its_cancellations_in_step(
    blocks_for: float,
) -> None:
    # These loop step times made every re-cancellation after a fixed 0.1 s land in the step in
    # which the next 10 ms write completes, so all 100 were lost.
    neighbour = asyncio.create_task(busy_neighbour(blocks_for))
    try:
        await stop_as_a_write_completes("a task whose cancellations are lost in step")
    finally:
        neighbour.cancel()
        await asyncio.wait({neighbour})


class Stubborn:
    """Swallows the first `lost` cancellations, as a lost cancellation looks from outside."""

    def __init__(self, lost: int) -> None:
        self.lost = lost
        self.running = asyncio.Event()

    async def run(self) -> None:
        self.running.set()
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if self.lost == 0:
                    raise
                self.lost -= 1


async def test_stop_cancels_again_until_the_task_ends() -> None:
    stubborn = Stubborn(lost=3)
    worker = BackgroundTask("stubborn")
    worker.start(stubborn.run())
    await stubborn.running.wait()
    await asyncio.wait_for(worker.stop(), timeout=10)
    assert stubborn.lost == 0


async def test_stop_gives_up_with_an_error_after_its_bounded_attempts() -> None:
    stubborn = Stubborn(lost=10)
    worker = BackgroundTask("stuck")
    worker.MAX_CANCELS, worker.RECANCEL_AFTER = 3, 0.01
    worker.start(stubborn.run())
    await stubborn.running.wait()
    with pytest.raises(RuntimeError, match="stuck still running after 3 cancellations"):
        await worker.stop()
    worker.MAX_CANCELS = 100
    await worker.stop()  # still known, so it can be stopped later


async def test_the_callers_own_cancellation_propagates() -> None:
    stubborn = Stubborn(lost=1_000_000)
    worker = BackgroundTask("slow-to-stop")
    worker.start(stubborn.run())
    await stubborn.running.wait()
    stopping = asyncio.create_task(worker.stop())
    await asyncio.sleep(0)  # let stop() begin waiting
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert stopping.cancelled()
    stubborn.lost = 0
    await asyncio.wait_for(worker.stop(), timeout=10)


async def test_stop_reports_a_task_that_had_failed() -> None:
    async def failing() -> None:
        raise ValueError("broken")

    worker = BackgroundTask("failing")
    worker.start(failing())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="broken"):
        await worker.stop()
