"""The escalation ticker's index: when each ticket's next escalation level falls due.

Derived data: rebuilt from the stored escalations at start (and periodically, to pick up what
other replicas wrote), and updated after each write of a ticket's escalations. A heap orders the
instants; an entry replaced later stays in the heap until it surfaces and is seen to be stale.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from datetime import datetime, timedelta


class WakeupIndex:
    def __init__(self) -> None:
        self._heap: list[tuple[datetime, str]] = []
        self._at: dict[str, datetime] = {}

    def __len__(self) -> int:
        return len(self._at)

    def get(self, ticket_id: str) -> datetime | None:
        return self._at.get(ticket_id)

    def schedule(self, ticket_id: str, at: datetime | None) -> None:
        """Wake up for `ticket_id` at `at`; None forgets it (nothing left to fire)."""
        if at is None:
            self._at.pop(ticket_id, None)
            return
        if self._at.get(ticket_id) == at:
            return
        self._at[ticket_id] = at
        heapq.heappush(self._heap, (at, ticket_id))
        if len(self._heap) > 2 * len(self._at) + 64:
            self.rebuild(self._at.items())

    def next_at(self) -> datetime | None:
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: datetime, *, retry_after: timedelta) -> list[str]:
        """The tickets due by `now`, earliest first; each moves to `now + retry_after`, so a
        failed firing comes round again (a successful one re-schedules it from the store)."""
        due: list[str] = []
        while (at := self.next_at()) is not None and at <= now:
            _, ticket_id = heapq.heappop(self._heap)
            due.append(ticket_id)
            self.schedule(ticket_id, now + retry_after)
        return due

    def rebuild(self, entries: Iterable[tuple[str, datetime]]) -> None:
        self._at = dict(entries)
        self._heap = [(at, ticket_id) for ticket_id, at in self._at.items()]
        heapq.heapify(self._heap)

    def _drop_stale(self) -> None:
        while self._heap and self._at.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)
