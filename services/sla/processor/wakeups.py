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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_PARTITION_BITS = 16  # a packed entry: epoch microseconds << 16 | partition


@dataclass(frozen=True)
class Wakeup:
    ticket_id: str
    partition: int
    at: datetime


def _pack(at: datetime, partition: int) -> int:
    if not 0 <= partition < 1 << _PARTITION_BITS:
        raise ValueError(f"partition {partition} out of range")
    return ((at - _EPOCH) // _MICRO) << _PARTITION_BITS | partition


def _unpack(ticket_id: str, packed: int) -> Wakeup:
    at = _EPOCH + _MICRO * (packed >> _PARTITION_BITS)
    return Wakeup(ticket_id, packed & ((1 << _PARTITION_BITS) - 1), at)


class WakeupIndex:
    """Compact on purpose (one int per ticket in a dict, one (int, id) pair in the heap, the
    id string shared with the table's key): a worker holds one entry per open ticket."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, str]] = []  # (packed, ticket id); packed orders by instant
        self._entries: dict[str, int] = {}  # ticket id -> packed (instant, partition)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, ticket_id: object) -> bool:
        return ticket_id in self._entries

    def get(self, ticket_id: str) -> Wakeup | None:
        packed = self._entries.get(ticket_id)
        return None if packed is None else _unpack(ticket_id, packed)

    def schedule(self, ticket_id: str, partition: int, at: datetime | None) -> None:
        """Wake up for `ticket_id` at `at`; None: nothing can fall due, forget it."""
        if at is None:
            self._entries.pop(ticket_id, None)
            return
        packed = _pack(at, partition)
        if self._entries.get(ticket_id) == packed:
            return
        self._entries[ticket_id] = packed
        heapq.heappush(self._heap, (packed, ticket_id))
        self._maybe_compact()

    def next_at(self) -> datetime | None:
        self._drop_stale_head()
        return _unpack("", self._heap[0][0]).at if self._heap else None

    def pop_due(
        self,
        now: datetime,
        *,
        retry_after: timedelta,
        limit: int | None = None,
        ahead: timedelta = timedelta(0),
    ) -> list[Wakeup]:
        """The entries due by `now + ahead`, earliest first, at most `limit`. Each is moved to
        `retry_after` past the later of `now` and its instant, so it comes round again if
        nothing answers; storing the ticket's new state re-schedules it."""
        due: dict[str, Wakeup] = {}  # a ticket's heap item may be there twice: taken once
        until = now + ahead
        bound = ((until - _EPOCH) // _MICRO + 1) << _PARTITION_BITS  # every partition then
        while limit is None or len(due) < limit:
            self._drop_stale_head()
            if not self._heap or self._heap[0][0] >= bound:
                break
            _, ticket_id = heapq.heappop(self._heap)
            due.setdefault(ticket_id, _unpack(ticket_id, self._entries[ticket_id]))
        for entry in due.values():  # after the loop: a retry may fall before `until`
            self.schedule(entry.ticket_id, entry.partition, max(now, entry.at) + retry_after)
        return list(due.values())

    def retain(self, partitions: Iterable[int]) -> None:
        """Forget the tickets of every partition not in `partitions` (revoked ones)."""
        keep = set(partitions)
        self._drop(lambda partition: partition not in keep)

    def forget(self, partitions: Iterable[int]) -> None:
        """Forget the tickets of `partitions` (revoked)."""
        drop = set(partitions)
        self._drop(lambda partition: partition in drop)

    def rebuild(self, entries: Iterable[Wakeup]) -> None:
        self._entries = {e.ticket_id: _pack(e.at, e.partition) for e in entries}
        self._heapify()

    def _drop(self, partition_matches: Callable[[int], bool]) -> None:
        mask = (1 << _PARTITION_BITS) - 1
        for ticket_id in [t for t, p in self._entries.items() if partition_matches(p & mask)]:
            del self._entries[ticket_id]
        self._maybe_compact()

    def _heapify(self) -> None:
        self._heap = [(packed, ticket_id) for ticket_id, packed in self._entries.items()]
        heapq.heapify(self._heap)

    def _drop_stale_head(self) -> None:
        heap, entries = self._heap, self._entries
        while heap:
            packed, ticket_id = heap[0]
            if entries.get(ticket_id) == packed:
                return
            heapq.heappop(heap)

    def _maybe_compact(self) -> None:
        if len(self._heap) > 2 * len(self._entries) + 64:
            self._heapify()
