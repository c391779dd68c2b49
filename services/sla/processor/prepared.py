"""Alerts prepared before they fall due, sent at their instant (issue 4: a burst of deadlines).

Applying a due ticket costs the worker about 650 µs (load, engine, encode, send, store), so a
burst of 10,000 deadlines in one second would take seconds to drain. Instead, a ticket whose next
wake-up is less than `prepare_ahead` away is loaded, run through the engine at that instant and
its facts encoded in advance, by the due agent (a prepare record, see `send_due`). At the
instant, the firing loop sends the prepared facts of every ticket due together, in one batch per
partition, and queues an ordinary due record for them, which stores their states. The work left
at the deadline is the send.

What keeps this as safe as the due path (the handlers enforce it under the ticket locks):

- a *prepared* entry is dropped whenever its ticket's state is stored, by any path: its facts
  came from a state that is gone, and the ticket is re-scheduled from the new one;
- a *fired* entry (sent, its state not yet stored) is where the next reader of the ticket
  starts: the due record stores it, and an incident event starts from its state, alerts
  applied, so its own facts are numbered after them;
- a crash loses both kinds: the table still holds the state from before the alerts, the new
  owner re-arms the ticket and sends the same alerts with the same sequence numbers, which
  consumers drop (the due path's own crash window, moved to the firing).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.sla.domain import SlaState
from services.sla.domain.kpis import TicketKpiView
from shared.contracts.codec import KafkaRecord
from shared.contracts.envelope import Envelope
from shared.contracts.sla import SlaEvent


@dataclass(eq=False)
class PreparedAlerts:
    """One ticket's alerts due at `at`, computed from the state stored when they were prepared."""

    ticket_id: str
    partition: int
    at: datetime
    state: SlaState  # after the alerts
    alerts: list[SlaEvent]
    envelopes: list[Envelope]
    records: list[KafkaRecord]
    view: TicketKpiView | None
    trace: str
    catalog: object  # the policy catalog they were computed with
    delivered: asyncio.Future[Any] | None = None  # set when fired


class AlertSchedule:
    """The prepared entries by ticket (ordered by instant) and the fired ones awaiting their
    store. Plain data: the processor decides what to do with them."""

    def __init__(self) -> None:
        self._prepared: dict[str, PreparedAlerts] = {}
        self._fired: dict[str, PreparedAlerts] = {}
        self._heap: list[tuple[datetime, int, PreparedAlerts]] = []
        self._order = itertools.count()  # ties at one instant: first prepared, first fired
        self.changed = asyncio.Event()  # set when an entry is added: the firing loop re-plans

    def __len__(self) -> int:
        return len(self._prepared)

    def prepared(self, ticket_id: str) -> PreparedAlerts | None:
        return self._prepared.get(ticket_id)

    def fired(self, ticket_id: str) -> PreparedAlerts | None:
        return self._fired.get(ticket_id)

    def fired_count(self) -> int:
        return len(self._fired)

    def deliveries(self) -> set[asyncio.Future[Any]]:
        """The sends of the fired entries not stored yet."""
        return {e.delivered for e in self._fired.values() if e.delivered is not None}

    def holds(self, ticket_id: str) -> bool:
        """Whether the ticket is prepared or fired."""
        return ticket_id in self._prepared or ticket_id in self._fired

    def add(self, entry: PreparedAlerts) -> None:
        """Prepare `entry`, replacing any earlier preparation of its ticket."""
        self._prepared[entry.ticket_id] = entry
        heapq.heappush(self._heap, (entry.at, next(self._order), entry))
        if len(self._heap) > 2 * len(self._prepared) + 64:
            self._heap = [(e.at, next(self._order), e) for e in self._prepared.values()]
            heapq.heapify(self._heap)
        self.changed.set()

    def discard(self, ticket_id: str) -> None:
        """The ticket's state was stored: neither its preparation nor its firing is current."""
        self._prepared.pop(ticket_id, None)
        self._fired.pop(ticket_id, None)

    def next_at(self) -> datetime | None:
        self._drop_stale_head()
        return self._heap[0][0] if self._heap else None

    def take_due(self, now: datetime) -> list[PreparedAlerts]:
        """The prepared entries due by `now`, earliest first, no longer prepared."""
        due: list[PreparedAlerts] = []
        while True:
            self._drop_stale_head()
            if not self._heap or self._heap[0][0] > now:
                return due
            entry = heapq.heappop(self._heap)[2]
            del self._prepared[entry.ticket_id]
            due.append(entry)

    def mark_fired(self, entry: PreparedAlerts, delivered: asyncio.Future[Any]) -> None:
        entry.delivered = delivered
        self._fired[entry.ticket_id] = entry

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the entries of `partitions` (revoked: their tickets are another worker's)."""
        drop = set(partitions)
        for entries in (self._prepared, self._fired):
            for ticket_id in [t for t, e in entries.items() if e.partition in drop]:
                del entries[ticket_id]

    def clear_prepared(self) -> None:
        """Drop every preparation (the wake-up index was rebuilt: they are prepared again)."""
        self._prepared.clear()
        self._heap.clear()

    def _drop_stale_head(self) -> None:
        heap, prepared = self._heap, self._prepared
        while heap and prepared.get(heap[0][2].ticket_id) is not heap[0][2]:
            heapq.heappop(heap)
