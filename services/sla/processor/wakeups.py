"""The in-memory index of when each owned ticket next needs a look.

One entry per ticket of the partitions this worker owns: the instant `next_wakeup(state)`
returned when the state was last stored. A heap orders them; a replaced or dropped entry stays
in the heap until it surfaces and is recognised as stale (its instant no longer matches), and
the heap is rebuilt when stale entries outnumber live ones.

The index is derived data: it is rebuilt from the table whenever partitions are assigned and
their state recovered, so a worker that takes over a partition re-arms all of its tickets.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Wakeup:
    ticket_id: str
    partition: int
    at: datetime


class WakeupIndex:
    def __init__(self) -> None:
        self._heap: list[tuple[datetime, str]] = []
        self._entries: dict[str, Wakeup] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, ticket_id: object) -> bool:
        return ticket_id in self._entries

    def get(self, ticket_id: str) -> Wakeup | None:
        return self._entries.get(ticket_id)

    def schedule(self, ticket_id: str, partition: int, at: datetime | None) -> None:
        """Wake up for `ticket_id` at `at`; None: nothing can fall due, forget it."""
        if at is None:
            self._entries.pop(ticket_id, None)
            return
        current = self._entries.get(ticket_id)
        if current is not None and (current.at, current.partition) == (at, partition):
            return
        self._entries[ticket_id] = Wakeup(ticket_id, partition, at)
        heapq.heappush(self._heap, (at, ticket_id))
        self._maybe_compact()

    def next_at(self) -> datetime | None:
        self._drop_stale_head()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: datetime, *, retry_after: timedelta) -> list[Wakeup]:
        """The entries due by `now`, earliest first. Each is moved to `now + retry_after`, so it
        comes round again if nothing answers; storing the ticket's new state re-schedules it."""
        due: list[Wakeup] = []
        while True:
            self._drop_stale_head()
            if not self._heap or self._heap[0][0] > now:
                break
            _, ticket_id = heapq.heappop(self._heap)
            entry = self._entries[ticket_id]
            due.append(entry)
            # Moved past `now` at once: a duplicate heap item for it is stale from here on.
            self.schedule(ticket_id, entry.partition, now + retry_after)
        return due

    def retain(self, partitions: Iterable[int]) -> None:
        """Forget the tickets of every partition not in `partitions` (revoked ones)."""
        keep = set(partitions)
        for ticket_id in [t for t, e in self._entries.items() if e.partition not in keep]:
            del self._entries[ticket_id]
        self._maybe_compact()

    def forget(self, partitions: Iterable[int]) -> None:
        """Forget the tickets of `partitions` (revoked)."""
        drop = set(partitions)
        for ticket_id in [t for t, e in self._entries.items() if e.partition in drop]:
            del self._entries[ticket_id]
        self._maybe_compact()

    def rebuild(self, entries: Iterable[Wakeup]) -> None:
        self._entries = {entry.ticket_id: entry for entry in entries}
        self._heap = [(entry.at, entry.ticket_id) for entry in self._entries.values()]
        heapq.heapify(self._heap)

    def _drop_stale_head(self) -> None:
        heap = self._heap
        while heap:
            at, ticket_id = heap[0]
            entry = self._entries.get(ticket_id)
            if entry is not None and entry.at == at:
                return
            heapq.heappop(heap)

    def _maybe_compact(self) -> None:
        if len(self._heap) > 2 * len(self._entries) + 64:
            self.rebuild(self._entries.values())
