"""The aggregate repository, outbox and idempotent projection — on the real MongoDB-compatible
server (FerretDB) and on the in-memory twin, with the same assertions, so the twin stays honest."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.bus.memory import InMemoryBus
from shared.contracts import Topic
from shared.contracts.codec import decode
from shared.contracts.envelope import sequenced
from shared.contracts.incidents import FieldChange, IncidentUpdated
from shared.store.errors import AlreadyExists, ConcurrencyConflict
from shared.store.memory import InMemoryDatabase
from shared.store.projection import apply_if_newer
from shared.store.relay import REMOVALS_PER_COMMAND, OutboxRelay
from shared.store.repository import AggregateRepository
from tests.integration.conftest import scratch_database
from tests.support.polling import eventually

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Counter:
    id: str
    value: int
    version: int


class CounterRepository(AggregateRepository[Counter]):
    collection_name = "counters_under_test"

    def to_document(self, aggregate: Counter) -> dict[str, Any]:
        return {"_id": aggregate.id, "value": aggregate.value, "version": aggregate.version}

    def from_document(self, document: dict[str, Any]) -> Counter:
        return Counter(document["_id"], document["value"], document["version"])


def bumped(counter_id: str, after: int, count: int = 1) -> list:
    events = [
        IncidentUpdated(
            incident_id=counter_id,
            actor="t",
            status="new",
            changes={"value": FieldChange(before=after + i - 1, after=after + i)},
        )
        for i in range(1, count + 1)
    ]
    return sequenced(counter_id, after, events, source="/tests", time=NOW)


@pytest.fixture(params=["memory", pytest.param("ferretdb", marks=pytest.mark.infra)])
async def database(request: pytest.FixtureRequest, mongo_url: str) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield InMemoryDatabase()
        return
    async with scratch_database(mongo_url) as database:
        yield database


@pytest.fixture
def repo(database: Any) -> CounterRepository:
    return CounterRepository(database)


async def test_add_stores_state_and_pending_events_in_one_document(
    repo: CounterRepository,
) -> None:
    await repo.add(Counter("c1", 0, 1), bumped("c1", 0))
    assert await repo.get("c1") == Counter("c1", 0, 1)
    raw = await repo.collection.find_one({"_id": "c1"})
    assert [e["sequence"] for e in raw["outbox"]] == [1]
    assert raw["outbox"][0]["topic"] == Topic.INCIDENTS


async def test_adding_an_existing_id_is_refused(repo: CounterRepository) -> None:
    await repo.add(Counter("c1", 0, 1), bumped("c1", 0))
    with pytest.raises(AlreadyExists):
        await repo.add(Counter("c1", 5, 1), bumped("c1", 0))
    assert (await repo.get("c1")).value == 0


async def test_a_stale_version_is_refused_and_nothing_is_written(repo: CounterRepository) -> None:
    await repo.add(Counter("c1", 0, 1), bumped("c1", 0))
    await repo.save(Counter("c1", 1, 2), 1, bumped("c1", 1))
    with pytest.raises(ConcurrencyConflict):
        await repo.save(Counter("c1", 99, 2), 1, bumped("c1", 1))
    raw = await repo.collection.find_one({"_id": "c1"})
    assert raw["value"] == 1 and raw["version"] == 2
    assert [e["sequence"] for e in raw["outbox"]] == [1, 2]


async def test_find_pages_and_counts(repo: CounterRepository) -> None:
    for i in range(5):
        await repo.add(Counter(f"c{i}", i, 1), [])
    page, total = await repo.find({}, sort=(("_id", 1),), skip=1, limit=2)
    assert total == 5 and [c.id for c in page] == ["c1", "c2"]


async def test_relay_publishes_in_order_then_removes(repo: CounterRepository) -> None:
    bus = InMemoryBus()
    await repo.add(Counter("c1", 0, 1), bumped("c1", 0))
    await repo.save(Counter("c1", 3, 4), 1, bumped("c1", 1, count=3))
    relay = OutboxRelay(bus, [repo.collection])
    assert await relay.run_once() == 4
    assert await relay.run_once() == 0
    assert [decode(r).sequence for r in bus.records(Topic.INCIDENTS)] == [1, 2, 3, 4]
    assert (await repo.collection.find_one({"_id": "c1"}))["outbox"] == []


async def test_relay_is_nudged_by_writes_without_waiting_for_its_poll(
    database: Any,
) -> None:
    bus = InMemoryBus()
    relay = OutboxRelay(bus, [], poll_interval=3600)
    repo = CounterRepository(database, on_write=relay.nudge)
    relay._collections.append(repo.collection)
    await relay.start()
    try:
        await repo.add(Counter("c1", 0, 1), bumped("c1", 0))
        await eventually(lambda: _count(bus), until=lambda n: n == 1, timeout=5, what="relay")
    finally:
        await relay.stop()


async def _count(bus: InMemoryBus) -> int:
    return len(bus.records(Topic.INCIDENTS))


class CrashAfterPublish:
    """The collection as the relay sees it, failing once between publish and removal."""

    def __init__(self, collection: Any) -> None:
        self._collection = collection
        self.name = collection.name
        self.crashed = False

    def find(self, *args: Any, **kwargs: Any) -> Any:
        return self._collection.find(*args, **kwargs)

    async def bulk_write(self, *args: Any, **kwargs: Any) -> Any:
        if not self.crashed:
            self.crashed = True
            raise ConnectionError("relay died before removing what it published")
        return await self._collection.bulk_write(*args, **kwargs)


async def test_crash_between_publish_and_removal_loses_nothing_and_applies_nothing_twice(
    repo: CounterRepository, database: Any
) -> None:
    bus = InMemoryBus()
    await repo.add(Counter("c1", 0, 1), bumped("c1", 0))
    await repo.save(Counter("c1", 2, 3), 1, bumped("c1", 1, count=2))
    crashing = CrashAfterPublish(repo.collection)
    with pytest.raises(ConnectionError):
        await OutboxRelay(bus, [crashing]).run_once()
    assert (await repo.collection.find_one({"_id": "c1"}))["outbox"], "still pending"
    restarted = OutboxRelay(bus, [repo.collection])
    assert await restarted.run_once() == 3  # publishes them again, same sequences

    delivered = [decode(r) for r in bus.records(Topic.INCIDENTS)]
    assert [e.sequence for e in delivered] == [1, 2, 3, 1, 2, 3]
    projection = database["projection_under_test"]
    applied = [
        await apply_if_newer(projection, e.subject, e.sequence, {"$inc": {"applied": 1}})
        for e in delivered
    ]
    assert applied == [True, True, True, False, False, False]
    assert (await projection.find_one({"_id": "c1"}))["applied"] == 3


async def test_apply_if_newer_skips_stale_and_duplicate_sequences(database: Any) -> None:
    projection = database["projection_under_test"]
    outcomes = [
        await apply_if_newer(projection, "k", seq, {"$set": {"seen": seq}})
        for seq in (1, 2, 2, 1, 4, 3)
    ]
    assert outcomes == [True, True, False, False, True, False]
    document = await projection.find_one({"_id": "k"})
    assert document["last_sequence"] == 4 and document["seen"] == 4


async def test_saving_without_advancing_the_version_is_a_programming_error(
    repo: CounterRepository,
) -> None:
    await repo.add(Counter("c", 1, 1), [])
    with pytest.raises(ValueError, match="must advance"):
        await repo.save(Counter("c", 1, 1), 1, [])


async def test_concurrent_writers_and_the_relay_lose_no_update(
    repo: CounterRepository,
) -> None:
    """Version-guarded saves racing each other and the relay's removals: every save that
    succeeded is in the final state, and every event it wrote is relayed exactly once."""
    bus = InMemoryBus()
    relay = OutboxRelay(bus, [repo.collection], poll_interval=0.01)
    repo._on_write = relay.nudge
    await repo.add(Counter("c1", 0, 1), bumped("c1", 0))
    await relay.start()
    successes = 0

    async def writer() -> None:
        nonlocal successes
        for _ in range(10):
            while True:
                current = await repo.get("c1")
                try:
                    await repo.save(
                        Counter("c1", current.value + 1, current.version + 1),
                        current.version,
                        bumped("c1", current.version),
                    )
                except ConcurrencyConflict:
                    continue
                successes += 1
                break

    try:
        await asyncio.gather(*(writer() for _ in range(5)))

        async def relayed() -> int:
            return len(bus.records(Topic.INCIDENTS))

        await eventually(relayed, until=lambda n: n == 51, what="every event relayed")
    finally:
        await relay.stop()
    final = await repo.get("c1")
    assert successes == 50 and final.value == 50 and final.version == 51
    assert sorted(decode(r).sequence for r in bus.records(Topic.INCIDENTS)) == list(range(1, 52))


async def test_the_relay_drains_hundreds_of_pending_documents_in_one_pass(
    repo: CounterRepository,
) -> None:
    """More pending documents than one removal command may carry (FerretDB never answers an
    update command of 100 or more statements)."""
    bus = InMemoryBus()
    for i in range(230):
        await repo.add(Counter(f"c{i:03d}", 0, 1), bumped(f"c{i:03d}", 0))
    relay = OutboxRelay(bus, [repo.collection], batch_size=500)
    assert await asyncio.wait_for(relay.run_once(), timeout=60) == 230
    assert await repo.collection.count_documents({"outbox.0": {"$exists": True}}) == 0


class WatchedCollection:
    """The collection as the relay sees it: reads by `_id` are refused (the fast path must not
    read the store), removals wait for `removals_open` and are recorded."""

    def __init__(self, collection: Any) -> None:
        self._collection = collection
        self.name = collection.name
        self.removals_open = asyncio.Event()
        self.removal_commands: list[int] = []

    def find(self, *args: Any, **kwargs: Any) -> Any:
        return self._collection.find(*args, **kwargs)

    async def find_one(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the relay read a document back on the fast path")

    async def bulk_write(self, requests: list[Any], **kwargs: Any) -> Any:
        await self.removals_open.wait()
        self.removal_commands.append(len(requests))
        return await self._collection.bulk_write(requests, **kwargs)


async def _pending(repo: CounterRepository) -> int:
    return await repo.collection.count_documents({"outbox.0": {"$exists": True}})


async def test_written_events_are_published_at_once_and_removed_afterwards(
    database: Any,
) -> None:
    """The lag path does not touch the store: the events go out while their removal waits."""
    bus = InMemoryBus()
    relay = OutboxRelay(bus, [], poll_interval=3600)
    repo = CounterRepository(database, on_write=relay.nudge)
    watched = WatchedCollection(repo.collection)
    relay._collections.append(watched)
    await relay.start()
    try:
        await repo.add(Counter("c1", 0, 1), bumped("c1", 0))
        await repo.save(Counter("c1", 2, 3), 1, bumped("c1", 1, count=2))
        await repo.add(Counter("c2", 0, 1), bumped("c2", 0))
        await eventually(lambda: _count(bus), until=lambda n: n == 4, timeout=10, what="publish")
        assert await _pending(repo) == 2, "removal waits; the events are already out"
        assert relay.awaiting_removal == 4
        watched.removals_open.set()
        await eventually(lambda: _pending(repo), until=lambda n: n == 0, timeout=10)
    finally:
        await relay.stop()
    by_key = sorted((decode(r).subject, decode(r).sequence) for r in bus.records(Topic.INCIDENTS))
    assert by_key == [("c1", 1), ("c1", 2), ("c1", 3), ("c2", 1)]
    assert [decode(r).sequence for r in bus.records(Topic.INCIDENTS) if r.key == b"c1"] == [1, 2, 3]
    assert relay.awaiting_removal == 0


async def test_removals_are_grouped_per_document_in_bounded_commands(database: Any) -> None:
    bus = InMemoryBus()
    relay = OutboxRelay(bus, [], batch_size=500)
    repo = CounterRepository(database, on_write=relay.nudge)
    watched = WatchedCollection(repo.collection)
    watched.removals_open.set()
    relay._collections.append(watched)
    for i in range(23):
        await repo.add(Counter(f"c{i:02d}", 0, 1), bumped(f"c{i:02d}", 0))
        await repo.save(Counter(f"c{i:02d}", 1, 2), 1, bumped(f"c{i:02d}", 1))
    assert await relay.publish_pass(scan=False) == 46
    assert await _pending(repo) == 23
    assert await relay.remove_published() == 23
    assert watched.removal_commands == [REMOVALS_PER_COMMAND] * 2 + [3]
    assert await _pending(repo) == 0


async def test_events_whose_relay_died_before_publishing_go_out_with_the_next_one(
    repo: CounterRepository,
) -> None:
    bus = InMemoryBus()
    dead = OutboxRelay(bus, [repo.collection])
    repo._on_write = dead.nudge  # handed over, never published: the process dies
    await repo.add(Counter("c1", 0, 1), bumped("c1", 0))
    await repo.save(Counter("c1", 1, 2), 1, bumped("c1", 1))
    assert bus.records(Topic.INCIDENTS) == []
    restarted = OutboxRelay(bus, [repo.collection], poll_interval=3600)
    await restarted.start()  # its start-up scan is the safety net
    try:
        await eventually(lambda: _pending(repo), until=lambda n: n == 0, timeout=10)
    finally:
        await restarted.stop()
    assert [decode(r).sequence for r in bus.records(Topic.INCIDENTS)] == [1, 2]


async def test_a_crash_after_publishing_before_removal_republishes_the_same_sequences(
    repo: CounterRepository, database: Any
) -> None:
    bus = InMemoryBus()
    crashed = OutboxRelay(bus, [repo.collection])
    repo._on_write = crashed.nudge
    await repo.add(Counter("c1", 0, 1), bumped("c1", 0, count=2))
    assert await crashed.publish_pass(scan=False) == 2  # ... and dies before removing them
    assert await OutboxRelay(bus, [repo.collection]).run_once() == 2
    delivered = [decode(r) for r in bus.records(Topic.INCIDENTS)]
    assert [(e.id, e.sequence) for e in delivered[2:]] == [
        (e.id, e.sequence) for e in delivered[:2]
    ]
    projection = database["projection_under_test"]
    applied = [
        await apply_if_newer(projection, e.subject, e.sequence, {"$inc": {"applied": 1}})
        for e in delivered
    ]
    assert applied == [True, True, False, False]
    assert await _pending(repo) == 0


async def test_an_event_after_one_another_process_wrote_keeps_their_order(
    database: Any,
) -> None:
    """Event 1 was written by another process (not yet relayed); this one writes event 2 and
    hands it over. Sent alone, 2 would reach consumers first and 1 would be skipped as stale."""
    bus = InMemoryBus()
    other_process = CounterRepository(database)
    await other_process.add(Counter("c1", 0, 1), bumped("c1", 0))
    relay = OutboxRelay(bus, [])
    repo = CounterRepository(database, on_write=relay.nudge)
    relay._collections.append(repo.collection)
    await repo.save(Counter("c1", 1, 2), 1, bumped("c1", 1))
    assert await relay.run_once(scan=False) == 2
    assert [decode(r).sequence for r in bus.records(Topic.INCIDENTS)] == [1, 2]
    assert await _pending(repo) == 0
