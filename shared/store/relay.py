"""The outbox relay: publish pending events from aggregate documents, then remove them.

Publish-then-remove gives at-least-once delivery: a crash in between republishes the events,
and consumers drop them by sequence. The relay is nudged after each write for low latency and
also polls, so events left behind by a crash are never stranded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import structlog
from prometheus_client import Counter
from pymongo import UpdateOne

from shared.background import BackgroundTask
from shared.bus.port import Bus
from shared.contracts.envelope import Envelope
from shared.store.locks import document_locks
from shared.store.repository import OUTBOX
from shared.telemetry import producer_span

log = structlog.get_logger(__name__)

REMOVALS_PER_COMMAND = 50
PUBLISHED = Counter("itsm_outbox_published_total", "Events relayed from outboxes", ["collection"])
RELAY_ERRORS = Counter("itsm_outbox_relay_errors_total", "Failed relay passes", ["relay"])


class OutboxRelay:
    def __init__(
        self,
        bus: Bus,
        collections: Sequence[Any],
        *,
        poll_interval: float = 1.0,
        batch_size: int = 500,
        name: str = "outbox-relay",
    ) -> None:
        self._bus = bus
        self._collections = list(collections)
        self._poll_interval = poll_interval
        self._batch_size = batch_size
        self.name = name
        self._wake = asyncio.Event()
        self._worker = BackgroundTask(name)
        self._written: dict[str, set[Any]] = {}

    def nudge(self, collection_name: str | None = None, document_id: Any = None) -> None:
        """Wake the relay; naming the document just written lets it fetch that one by `_id`
        instead of scanning (an index lookup on MongoDB)."""
        if collection_name is not None:
            self._written.setdefault(collection_name, set()).add(document_id)
        self._wake.set()

    async def start(self) -> None:
        self._worker.start(self._run())

    async def stop(self) -> None:
        await self._worker.stop()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        next_scan = loop.time()  # scan at start-up: a crash may have left events behind
        while True:
            self._wake.clear()
            scan = loop.time() >= next_scan
            try:
                relayed = await self.run_once(scan=scan)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                RELAY_ERRORS.labels(self.name).inc()
                log.warning("outbox.relay_failed", relay=self.name, error=repr(exc))
                await asyncio.sleep(min(0.1 * 2**failures, self._poll_interval * 5))
                continue
            if scan and not relayed:
                next_scan = loop.time() + self._poll_interval
            if relayed:
                continue  # there may be more behind this batch
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, next_scan - loop.time()))

    async def run_once(self, *, scan: bool = True) -> int:
        """One pass over every collection; returns the number of events relayed. With `scan`,
        find every document with pending events (the safety net); otherwise only the documents
        named by nudges since the last pass."""
        relayed = 0
        for collection in self._collections:
            documents = await (self._scan(collection) if scan else self._written_to(collection))
            if not documents:
                continue
            await self._publish(documents)
            # Remove exactly what was published; entries appended meanwhile stay pending.
            removals = [
                UpdateOne({"_id": d["_id"]}, {"$pullAll": {OUTBOX: d[OUTBOX]}}) for d in documents
            ]
            # In commands of at most REMOVALS_PER_COMMAND statements: FerretDB 1.24 never answers
            # an update command of 100 or more (found by bench/outbox_throughput.py).
            for start in range(0, len(removals), REMOVALS_PER_COMMAND):
                chunk = documents[start : start + REMOVALS_PER_COMMAND]
                async with document_locks(collection, [d["_id"] for d in chunk]):
                    await collection.bulk_write(
                        removals[start : start + REMOVALS_PER_COMMAND], ordered=False
                    )
            count = sum(len(d[OUTBOX]) for d in documents)
            PUBLISHED.labels(collection.name).inc(count)
            relayed += count
        return relayed

    async def _scan(self, collection: Any) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (
            await collection.find({f"{OUTBOX}.0": {"$exists": True}}, {OUTBOX: 1})
            .limit(self._batch_size)
            .to_list()
        )
        return found

    async def _written_to(self, collection: Any) -> list[dict[str, Any]]:
        ids = self._written.pop(collection.name, set())
        found = await asyncio.gather(*(collection.find_one({"_id": i}, {OUTBOX: 1}) for i in ids))
        return [d for d in found if d and d.get(OUTBOX)]

    async def _publish(self, documents: list[dict[str, Any]]) -> None:
        by_topic: dict[str, list[Envelope]] = {}
        for document in documents:
            for entry in document[OUTBOX]:  # in write order: one aggregate's events stay ordered
                envelope = Envelope.from_document(entry)
                with producer_span(entry["topic"], envelope) as traceparent:
                    by_topic.setdefault(entry["topic"], []).append(
                        envelope.with_traceparent(traceparent)
                    )
        await asyncio.gather(*(self._bus.publish(t, es) for t, es in by_topic.items()))


__all__ = ["OutboxRelay"]
