"""The escalation ticker: fires escalation levels when they fall due.

It sleeps until the earliest wake-up in its index (or until a write schedules an earlier one),
fires what is due ticket by ticket, and re-reads the wake-ups from the store at start and every
`resync_interval`, which picks up what other replicas stored and anything a crash left behind.
Replicas may fire the same ticket: the version guard and the dedup keys make that harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog

from services.notify.handlers import Notify, fire_due
from services.notify.wakeups import WakeupIndex
from shared.background import BackgroundTask

log = structlog.get_logger(__name__)


class EscalationTicker:
    def __init__(
        self,
        notify: Notify,
        clock: Callable[[], datetime],
        *,
        resync_interval: float = 30.0,
        retry_after: timedelta = timedelta(seconds=5),
    ) -> None:
        self._notify = notify
        self._clock = clock
        self._resync_interval = resync_interval
        self._retry_after = retry_after
        self.index = WakeupIndex()
        self._wake = asyncio.Event()
        self._task = BackgroundTask("notify-escalation-ticker")

    def schedule(self, ticket_id: str, at: datetime | None) -> None:
        """Told after each write of a ticket's escalations (Notify.on_wakeup)."""
        current = self.index.next_at()
        earlier = at is not None and (current is None or at < current)
        self.index.schedule(ticket_id, at)
        if earlier:
            self._wake.set()

    async def resync(self) -> None:
        self.index.rebuild(await self._notify.escalations.wakeups())
        # housekeeping on the same slow beat: used ack-link ids are kept only until they expire
        await self._notify.tokens.forget_expired(self._clock())

    async def tick(self, now: datetime | None = None) -> int:
        """Fire every ticket due by `now`; returns how many were due."""
        now = now or self._clock()
        due = self.index.pop_due(now, retry_after=self._retry_after)
        for ticket_id in due:
            try:
                await fire_due(self._notify, ticket_id, now=now)
            except Exception as exc:  # it comes round again after retry_after
                log.warning("notify.escalation_fire_failed", ticket=ticket_id, error=repr(exc))
        return len(due)

    async def start(self) -> None:
        await self.resync()
        self._task.start(self._run())

    async def stop(self) -> None:
        await self._task.stop()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_resync = loop.time() + self._resync_interval
        while True:
            self._wake.clear()
            if loop.time() >= next_resync:
                try:
                    await self.resync()
                except Exception as exc:
                    log.warning("notify.ticker_resync_failed", error=repr(exc))
                next_resync = loop.time() + self._resync_interval
            await self.tick()
            wait = next_resync - loop.time()
            upcoming = self.index.next_at()
            if upcoming is not None:
                wait = min(wait, (upcoming - self._clock()).total_seconds())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(wait, 0.005))
