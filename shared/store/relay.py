"""The outbox relay: publish pending events from aggregate documents, then remove them.

Two ways in. The fast path: a write hands the relay the outbox entries it just wrote (they are in
memory), the relay publishes them at once and removes them from their documents afterwards, in
batches, off the latency path. The safety net: at start-up and then periodically the relay
scans for documents with pending entries, so events whose hand-off was lost (a crash, a failed
publish) are never stranded. The scan reads in a task of its own and queues what it found for
the publisher: on FerretDB it reads the whole collection (about 0.65 s at 5,000 incidents), and
the hand-offs must not wait for it. While scans find nothing stranded they back off.

Publish-then-remove gives at-least-once delivery: a crash in between republishes the events with
the same sequence, and consumers drop them by sequence. Per aggregate, an event is published only
once every earlier event of that aggregate has been published (see `plan_handoffs`), so the
consumers' sequence check never skips a first delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import structlog
from prometheus_client import Counter, Gauge
from pymongo import UpdateOne
from pymongo.errors import NetworkTimeout

from shared.background import BackgroundTask
from shared.bus.port import Bus
from shared.contracts.envelope import Envelope
from shared.store.locks import document_locks
from shared.store.mongo import is_ferretdb, until_settled
from shared.store.repository import OUTBOX

log = structlog.get_logger(__name__)

# FerretDB 1.24 never answers an update command of 100 or more statements, and each statement is
# a scan of the collection there: small commands keep every one short (bench/outbox_throughput.py).
REMOVALS_PER_COMMAND = 10
# Hand-offs beyond this many waiting entries are dropped: the scan finds their events instead.
MAX_HANDOFF_BATCHES = 20
# Aggregates whose last published sequence the relay remembers (the fast path's order check).
REMEMBERED_AGGREGATES = 10_000
# While scans find no stranded event, each waits twice as long as the last, up to this many
# poll intervals: on FerretDB (and on MongoDB, without an index on the outbox) a scan reads the
# whole collection, and after the start-up scan only a crash elsewhere or a dropped hand-off
# strands an event.
SCAN_BACKOFF_LIMIT = 12
PUBLISHED = Counter("itsm_outbox_published_total", "Events relayed from outboxes", ["collection"])
RELAY_ERRORS = Counter("itsm_outbox_relay_errors_total", "Failed relay passes", ["relay"])
AWAITING_REMOVAL = Gauge(
    "itsm_outbox_awaiting_removal", "Published events not yet removed from outboxes", ["relay"]
)
# Measured from what each safety-net scan reads anyway (a count query per scrape would be one
# more full collection scan on FerretDB): at most `batch_size` documents, so a lower bound.
OUTBOX_PENDING = Gauge(
    "itsm_outbox_pending_events",
    "Events stored in outboxes at the relay's last scan (published ones awaiting removal too)",
    ["collection"],
)
OUTBOX_OLDEST_AGE = Gauge(
    "itsm_outbox_oldest_pending_age_seconds",
    "Age of the oldest event stored in an outbox at the relay's last scan (0: none)",
    ["collection"],
)

T = TypeVar("T")
Key = tuple[str, Any]  # (collection name, document id)
Entry = dict[str, Any]  # an outbox entry: an event document plus its topic


@dataclass(frozen=True)
class Handoff:
    """Outbox entries one write just stored in one document, in write order. `first`: the write
    created the document, so no earlier event of it can be pending."""

    collection: str
    document_id: Any
    entries: tuple[Entry, ...]
    first: bool = False

    @property
    def key(self) -> Key:
        return (self.collection, self.document_id)


@dataclass(frozen=True)
class HandoffPlan:
    publish: list[tuple[Key, Entry]]  # entries to publish now, in order
    reread: set[Key]  # documents to read back: an earlier event may not be published yet


def plan_handoffs(handoffs: Iterable[Handoff], published_through: Mapping[Key, int]) -> HandoffPlan:
    """Which handed-off entries can go out now without reading the store.

    An entry is published from memory only if every earlier event of its aggregate is known to be
    out: the hand-off created the document, or this relay published the sequence just before it
    (here or earlier in the same plan). Anything else (another process wrote the previous event,
    a gap, a failed publish) reads the document, whose outbox holds every pending entry in order.
    Entries at or below the published sequence are dropped: the relay already sent them.
    """
    # What this plan publishes, over what the relay published before: copying the relay's
    # memory of up to REMEMBERED_AGGREGATES would cost more than the pass itself.
    planned: dict[Key, int] = {}
    reread: set[Key] = set()
    ready: list[tuple[Key, Entry]] = []
    for handoff in handoffs:
        key = handoff.key
        if key in reread:
            continue
        done = planned[key] if key in planned else published_through.get(key, 0)
        entries = [e for e in handoff.entries if e["sequence"] > done]
        if not entries:
            continue
        if not handoff.first and entries[0]["sequence"] != done + 1:
            reread.add(key)
            continue
        ready += [(key, e) for e in entries]
        planned[key] = entries[-1]["sequence"]
    return HandoffPlan([(k, e) for k, e in ready if k not in reread], reread)


def removal_commands(
    published: Mapping[Any, Sequence[Entry]], per_command: int = REMOVALS_PER_COMMAND
) -> list[dict[Any, tuple[Entry, ...]]]:
    """The published entries grouped into removal commands: one statement per document, at most
    `per_command` statements per command."""
    items = [(document_id, tuple(entries)) for document_id, entries in published.items()]
    return [dict(items[i : i + per_command]) for i in range(0, len(items), per_command)]


def outbox_backlog(documents: Iterable[Mapping[str, Any]], now: datetime) -> tuple[int, float]:
    """How many events the documents' outboxes hold, and the age in seconds of the oldest by
    its event time (0 when there is none)."""
    times = [entry["time"] for document in documents for entry in document.get(OUTBOX, ())]
    if not times:
        return 0, 0.0
    oldest = min(_aware(t) for t in times)
    return len(times), max(0.0, (now - oldest).total_seconds())


def _aware(time: datetime) -> datetime:
    """BSON dates come back naive (UTC) unless the client is tz-aware."""
    return time if time.tzinfo else time.replace(tzinfo=UTC)


def removal(document_id: Any, entries: Sequence[Entry]) -> UpdateOne:
    """Pull exactly the published entries; entries appended meanwhile stay. `$pullAll` compares
    whole entries (FerretDB 1.24's `$pull` ignores conditions such as `{id: {$in: ...}}`): the
    hand-off's entries are the very dicts the write stored, times cut to milliseconds. The
    filter stays `{_id}` alone: the only one FerretDB 1.24 pushes down (shared/store/mongo.py)."""
    return UpdateOne({"_id": document_id}, {"$pullAll": {OUTBOX: list(entries)}})


async def remove_entries(collection: Any, command: Mapping[Any, Sequence[Entry]]) -> None:
    """Remove published entries from their documents in one command, under the documents'
    locks. Unanswered on FerretDB, it is awaited until it shows: FerretDB writes each document
    back whole after the timeout, from a read made before it, and would undo a save made
    meanwhile (shared/store/mongo.py)."""
    async with document_locks(collection, command):
        await _remove_locked(collection, command)


async def _remove_locked(collection: Any, command: Mapping[Any, Sequence[Entry]]) -> None:
    statements = [removal(document_id, entries) for document_id, entries in command.items()]
    try:
        await collection.bulk_write(statements, ordered=False)
    except NetworkTimeout:
        if not await is_ferretdb(collection):
            raise
        removed = {doc: {entry["id"] for entry in entries} for doc, entries in command.items()}

        def landed(document_id: Any, document: Mapping[str, Any] | None) -> bool:
            left = (entry.get("id") for entry in (document or {}).get(OUTBOX, []))
            return removed[document_id].isdisjoint(left)

        if not await until_settled(collection, command, landed, projection=(OUTBOX,)):
            raise


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
        self._removals_due = asyncio.Event()
        self._removing = asyncio.Lock()
        self._publisher = BackgroundTask(name)
        self._remover = BackgroundTask(f"{name}-removals")
        self._scanner = BackgroundTask(f"{name}-scans")
        self._scan_soon = asyncio.Event()
        self._handoffs: deque[Handoff] = deque()
        # What scans found, waiting for the publisher: (collection name, documents).
        self._found: deque[tuple[str, list[dict[str, Any]]]] = deque()
        self._reread: dict[str, set[Any]] = {}
        self._published_through: OrderedDict[Key, int] = OrderedDict()
        # Published (acknowledged), not yet removed: collection -> document id -> id -> entry.
        self._unremoved: dict[str, dict[Any, dict[str, Entry]]] = {}
        self._unremoved_count = 0

    def nudge(
        self,
        collection_name: str | None = None,
        document_id: Any = None,
        entries: Sequence[Entry] = (),
        first: bool = False,
    ) -> None:
        """Told by a repository after each write (`AggregateRepository(on_write=relay.nudge)`):
        the entries it just wrote go out on the next pass, without reading the store. Without
        entries, the named document is read back by `_id`; without a name, only a wake-up."""
        if collection_name is not None and entries:
            if len(self._handoffs) < MAX_HANDOFF_BATCHES * self._batch_size:
                self._handoffs.append(Handoff(collection_name, document_id, tuple(entries), first))
            else:  # publishing is stuck (broker away): memory stays bounded, the scan finds it
                log.warning("outbox.handoff_dropped", relay=self.name, document=str(document_id))
                self._scan_soon.set()
        elif collection_name is not None:
            self._queue_reread(collection_name, [document_id])
        self._wake.set()

    @property
    def awaiting_removal(self) -> int:
        """Events published and not yet removed from their documents."""
        return self._unremoved_count

    async def start(self) -> None:
        self._publisher.start(self._run())
        self._remover.start(self._remove_continuously())
        self._scanner.start(self._scan_continuously())

    async def stop(self) -> None:
        await self._scanner.stop()
        await self._publisher.stop()
        await self._remover.stop()

    async def run_once(self, *, scan: bool = True) -> int:
        """One whole pass: publish everything handed off (and, with `scan`, every pending event
        in the collections), then remove everything published. Returns the events published."""
        published = 0
        while self._pending_work():
            published += await self.publish_pass(scan=False)
        published += await self.publish_pass(scan=scan)
        await self.remove_published()
        return published

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            published = await self._retrying(
                lambda: self.publish_pass(scan=False), "outbox.relay_failed"
            )
            if published or self._pending_work():
                continue  # there may be more behind this batch
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_interval)

    async def _retrying(self, step: Callable[[], Awaitable[T]], failed: str) -> T:
        """One step of a loop, until it succeeds: a failure is counted, logged as `failed` and
        tried again after a pause that grows with each failure in a row."""
        failures = 0
        while True:
            try:
                return await step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                RELAY_ERRORS.labels(self.name).inc()
                log.warning(failed, relay=self.name, error=repr(exc))
                await asyncio.sleep(min(0.1 * 2**failures, self._poll_interval * 5))

    def _pending_work(self) -> bool:
        return bool(self._handoffs or self._reread or self._found)

    async def _scan_continuously(self) -> None:
        """The safety net: scan at start-up (a crash may have left events behind), then one
        `poll_interval` after each scan that found a stranded event, and twice as long as the
        last wait after one that did not (up to SCAN_BACKOFF_LIMIT intervals). A dropped
        hand-off makes the next scan come at once."""
        wait = self._poll_interval
        while True:
            self._scan_soon.clear()
            stranded = await self._retrying(self._scan_all, "outbox.scan_failed")
            longest = self._poll_interval * SCAN_BACKOFF_LIMIT
            wait = self._poll_interval if stranded else min(wait * 2, longest)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._scan_soon.wait(), timeout=wait)
            if self._scan_soon.is_set():
                wait = self._poll_interval

    async def _scan_all(self) -> int:
        """Read every collection's pending documents and queue them for the publisher; returns
        how many of their events are stranded."""
        stranded = 0
        now = datetime.now(UTC)
        for collection in self._collections:
            found = await self._scan(collection)
            self._measure_backlog(collection.name, found)
            stranded += self._stranded(collection.name, found, now)
            if found and len(self._found) < MAX_HANDOFF_BATCHES:
                self._found.append((collection.name, found))
                self._wake.set()
        return stranded

    def _stranded(
        self, collection_name: str, documents: list[dict[str, Any]], now: datetime
    ) -> int:
        """Events this relay has not published that are older than a poll interval: younger
        ones may still be on their way here as hand-offs."""
        old = now - timedelta(seconds=self._poll_interval)
        return sum(
            1
            for document in documents
            for entry in document[OUTBOX]
            if not self._published_before((collection_name, document["_id"]), entry)
            and _aware(entry["time"]) < old
        )

    async def _remove_continuously(self) -> None:
        while True:
            await self._removals_due.wait()
            self._removals_due.clear()
            await self._retrying(self.remove_published, "outbox.removal_failed")

    async def publish_pass(self, *, scan: bool) -> int:
        """Publish one batch of handed-off entries and documents to read back, then what scans
        found (with `scan`, after scanning every collection now); returns the events published.
        Removal is left to `remove_published`."""
        published = 0
        if self._handoffs or self._reread:
            published += await self._publish_handoffs()
        if scan:
            await self._scan_all()
        while self._found:
            # A document read by a scan may be older than what the hand-offs published since:
            # `_publish_documents` skips every sequence this relay has published. What fails
            # to go out stays queued for the retry, not for a scan that may be a minute away.
            collection_name, found = self._found[0]
            published += await self._publish_documents(collection_name, found)
            self._found.popleft()
        return published

    @staticmethod
    def _measure_backlog(collection_name: str, found: list[dict[str, Any]]) -> None:
        pending, oldest_age = outbox_backlog(found, datetime.now(UTC))
        OUTBOX_PENDING.labels(collection_name).set(pending)
        OUTBOX_OLDEST_AGE.labels(collection_name).set(oldest_age)

    async def remove_published(self) -> int:
        """Remove every published entry from its document, in bounded commands; returns the
        documents updated. What a failed command held stays queued for the next call."""
        removed = 0
        async with self._removing:
            for collection in self._collections:
                pending = self._unremoved.get(collection.name)
                while pending:
                    batch = dict(list(pending.items())[: self._batch_size])
                    commands = removal_commands({d: list(e.values()) for d, e in batch.items()})
                    for command in commands:
                        await remove_entries(collection, command)
                        for document_id, entries in command.items():
                            left = pending[document_id]
                            for entry in entries:
                                del left[entry["id"]]
                            if not left:  # nothing was published while this command ran
                                del pending[document_id]
                            self._unremoved_count -= len(entries)
                        removed += len(command)
                        AWAITING_REMOVAL.labels(self.name).set(self._unremoved_count)
        return removed

    async def _publish_handoffs(self) -> int:
        handoffs: list[Handoff] = []
        while self._handoffs and len(handoffs) < self._batch_size:
            handoffs.append(self._handoffs.popleft())
        plan = plan_handoffs(handoffs, self._published_through)
        reread, self._reread = self._reread, {}
        for collection_name, document_id in plan.reread:
            reread.setdefault(collection_name, set()).add(document_id)
        try:
            published = await self._publish(plan.publish)
            for collection in self._collections:
                ids = reread.pop(collection.name, set())
                if ids:
                    found = await self._read(collection, ids)
                    published += await self._publish_documents(collection.name, found)
        except Exception:
            # Read these documents back next time: their outboxes hold what did not go out.
            for (collection_name, document_id), _ in plan.publish:
                self._queue_reread(collection_name, [document_id])
            for collection_name, ids in reread.items():
                self._queue_reread(collection_name, ids)
            raise
        return published

    def _queue_reread(self, collection_name: str, document_ids: Iterable[Any]) -> None:
        ids = self._reread.setdefault(collection_name, set())
        ids.update(document_ids)
        if len(ids) > MAX_HANDOFF_BATCHES * self._batch_size:
            ids.clear()  # publishing is stuck: memory stays bounded, the scan finds them
            self._scan_soon.set()

    async def _publish_documents(
        self, collection_name: str, documents: list[dict[str, Any]]
    ) -> int:
        """Publish what read documents hold that this relay has not published yet (a
        document's outbox holds every pending entry of its aggregate, in order)."""
        entries: list[tuple[Key, Entry]] = []
        for document in documents:
            key = (collection_name, document["_id"])
            for entry in document[OUTBOX]:
                if not self._published_before(key, entry):
                    entries.append((key, entry))
                else:  # published before (removal pending or lost): remove it as stored
                    self._note_unremoved(key, entry, replace=True)
        return await self._publish(entries)

    def _published_before(self, key: Key, entry: Entry) -> bool:
        """This relay published the entry (its removal may be pending, or lost)."""
        if entry["sequence"] <= self._published_through.get(key, 0):
            return True
        return entry["id"] in self._unremoved.get(key[0], {}).get(key[1], ())

    async def _publish(self, entries: list[tuple[Key, Entry]]) -> int:
        if not entries:
            return 0
        by_topic: dict[str, list[Envelope]] = {}
        for _, entry in entries:  # in write order: one aggregate's events stay ordered
            by_topic.setdefault(entry["topic"], []).append(Envelope.from_document(entry))
        await asyncio.gather(*(self._bus.publish(t, es) for t, es in by_topic.items()))
        for key, entry in entries:
            self._note_unremoved(key, entry)
            self._remember(key, entry["sequence"])
            PUBLISHED.labels(key[0]).inc()
        AWAITING_REMOVAL.labels(self.name).set(self._unremoved_count)
        return len(entries)

    def _note_unremoved(self, key: Key, entry: Entry, *, replace: bool = False) -> None:
        entries = self._unremoved.setdefault(key[0], {}).setdefault(key[1], {})
        if entry["id"] not in entries:
            self._unremoved_count += 1
        elif not replace:
            return
        entries[entry["id"]] = entry
        self._removals_due.set()

    def _remember(self, key: Key, sequence: int) -> None:
        if sequence > self._published_through.get(key, 0):
            self._published_through[key] = sequence
        self._published_through.move_to_end(key)
        if len(self._published_through) > REMEMBERED_AGGREGATES:
            self._published_through.popitem(last=False)

    async def _scan(self, collection: Any) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (
            await collection.find({f"{OUTBOX}.0": {"$exists": True}}, {OUTBOX: 1})
            .limit(self._batch_size)
            .to_list()
        )
        return found

    async def _read(self, collection: Any, ids: set[Any]) -> list[dict[str, Any]]:
        found = await asyncio.gather(*(collection.find_one({"_id": i}, {OUTBOX: 1}) for i in ids))
        return [d for d in found if d and d.get(OUTBOX)]


__all__ = [
    "Handoff",
    "OutboxRelay",
    "outbox_backlog",
    "plan_handoffs",
    "removal",
    "removal_commands",
]
