"""The relay's pure rules (which handed-off events may go out without reading the store, how
removals are grouped) and its scan schedule, on the in-memory twins."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from shared.bus.memory import InMemoryBus
from shared.contracts import Topic
from shared.contracts.envelope import sequenced
from shared.contracts.incidents import FieldChange, IncidentUpdated
from shared.store.memory import InMemoryDatabase
from shared.store.relay import (
    MAX_HANDOFF_BATCHES,
    REMOVALS_PER_COMMAND,
    SCAN_BACKOFF_LIMIT,
    Handoff,
    OutboxRelay,
    plan_handoffs,
    removal,
    removal_commands,
)
from shared.store.repository import outbox_entry
from tests.support.polling import eventually

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def entry(sequence: int, aggregate: str = "a") -> dict[str, Any]:
    return {"id": f"{aggregate}-{sequence}", "sequence": sequence, "topic": Topic.INCIDENTS}


def sequences(plan_publish: list[tuple[Any, dict[str, Any]]]) -> list[str]:
    return [e["id"] for _, e in plan_publish]


def test_a_created_document_goes_out_from_memory() -> None:
    plan = plan_handoffs([Handoff("c", "a", (entry(1), entry(2)), first=True)], {})
    assert sequences(plan.publish) == ["a-1", "a-2"] and not plan.reread


def test_a_save_right_after_what_this_relay_published_goes_out_from_memory() -> None:
    handoffs = [
        Handoff("c", "a", (entry(1),), first=True),
        Handoff("c", "a", (entry(2), entry(3))),
        Handoff("c", "b", (entry(8, "b"),)),
    ]
    plan = plan_handoffs(handoffs, {("c", "b"): 7})
    assert sequences(plan.publish) == ["a-1", "a-2", "a-3", "b-8"] and not plan.reread


def test_a_save_whose_previous_event_this_relay_did_not_publish_is_read_back() -> None:
    """Another process wrote event 4 (or its hand-off was lost): publishing 5 from memory could
    put it before 4, and consumers would then skip 4 as stale."""
    handoffs = [
        Handoff("c", "a", (entry(5),)),
        Handoff("c", "a", (entry(6),)),
        Handoff("c", "b", (entry(2, "b"),)),
    ]
    plan = plan_handoffs(handoffs, {("c", "a"): 3, ("c", "b"): 1})
    assert sequences(plan.publish) == ["b-2"]
    assert plan.reread == {("c", "a")}


def test_a_gap_later_in_the_batch_sends_the_whole_aggregate_to_the_read() -> None:
    handoffs = [Handoff("c", "a", (entry(1),), first=True), Handoff("c", "a", (entry(3),))]
    plan = plan_handoffs(handoffs, {})
    assert plan.publish == [] and plan.reread == {("c", "a")}


def test_entries_already_published_are_not_sent_again() -> None:
    plan = plan_handoffs([Handoff("c", "a", (entry(2), entry(3)))], {("c", "a"): 2})
    assert sequences(plan.publish) == ["a-3"]


def test_removals_go_one_statement_per_document_in_bounded_commands() -> None:
    published = {f"d{i:02d}": [entry(1, f"d{i:02d}"), entry(2, f"d{i:02d}")] for i in range(23)}
    commands = removal_commands(published)
    assert [len(c) for c in commands] == [REMOVALS_PER_COMMAND] * 2 + [3]
    assert commands[0]["d00"] == (entry(1, "d00"), entry(2, "d00"))
    assert sorted(d for c in commands for d in c) == sorted(published)
    statement = removal("d00", commands[0]["d00"])
    assert statement._doc == {"$pullAll": {"outbox": [entry(1, "d00"), entry(2, "d00")]}}


def updated(aggregate: str) -> dict[str, Any]:
    event = IncidentUpdated(
        incident_id=aggregate,
        actor="t",
        status="new",
        changes={"value": FieldChange(before=0, after=1)},
    )
    (envelope,) = sequenced(aggregate, 0, [event], source="/tests", time=NOW)
    return outbox_entry(envelope)


class CountingScans:
    """The collection as the relay sees it, with the time of every scan. `stranding`: every
    scan finds a new pending event, written long ago by a process whose nudges this relay does
    not get (one that crashed)."""

    def __init__(self, collection: Any, *, stranding: bool = True) -> None:
        self._collection = collection
        self._stranding = stranding
        self.name = collection.name
        self.scans: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)

    def find(self, *args: Any, **kwargs: Any) -> Any:
        self.scans.append(asyncio.get_running_loop().time())
        n = len(self.scans)
        if self._stranding:
            self._collection._docs[f"d{n}"] = {"_id": f"d{n}", "outbox": [updated(f"d{n}")]}
        return self._collection.find(*args, **kwargs)

    def strand(self, aggregate: str) -> None:
        self._collection._docs[aggregate] = {"_id": aggregate, "outbox": [updated(aggregate)]}

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.scans, self.scans[1:], strict=False)]


async def test_the_safety_scan_waits_its_interval_even_when_it_finds_events() -> None:
    bus = InMemoryBus()
    collection = CountingScans(InMemoryDatabase()["docs"])
    relay = OutboxRelay(bus, [collection], poll_interval=0.2)
    await relay.start()
    try:
        await eventually(lambda: _length(collection.scans), until=lambda n: n >= 3, timeout=10)
    finally:
        await relay.stop()
    first, _, third = collection.scans[:3]
    assert third - first >= 2 * 0.2 * 0.95, "scanned again before its interval"
    assert len(bus.records(Topic.INCIDENTS)) >= 2


async def _length(items: list[Any]) -> int:
    return len(items)


class SlowScans:
    """The collection on FerretDB, where the safety scan reads every document: the scan's
    read lasts until the test lets it end."""

    def __init__(self, collection: Any) -> None:
        self._collection = collection
        self.name = collection.name
        self.scanning = asyncio.Event()
        self.let_scan_end = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)

    def find(self, *args: Any, **kwargs: Any) -> Any:
        cursor = self._collection.find(*args, **kwargs)
        slow = self

        class SlowCursor:
            def limit(self, n: int) -> SlowCursor:
                cursor.limit(n)
                return self

            async def to_list(self) -> list[dict[str, Any]]:
                slow.scanning.set()
                await slow.let_scan_end.wait()
                found: list[dict[str, Any]] = await cursor.to_list()
                return found

        return SlowCursor()


async def test_a_handed_off_event_goes_out_while_a_scan_is_still_reading() -> None:
    bus = InMemoryBus()
    collection = SlowScans(InMemoryDatabase()["docs"])
    relay = OutboxRelay(bus, [collection], poll_interval=3600)
    await relay.start()
    try:
        await asyncio.wait_for(collection.scanning.wait(), timeout=10)  # the start-up scan
        await collection.insert_one({"_id": "a", "outbox": [written := updated("a")]})
        relay.nudge(collection.name, "a", [written], first=True)

        await eventually(lambda: _count(bus), until=lambda n: n == 1, timeout=10)
        assert not collection.let_scan_end.is_set()
    finally:
        collection.let_scan_end.set()
        await relay.stop()


async def _count(bus: InMemoryBus) -> int:
    return len(bus.records(Topic.INCIDENTS))


async def test_scans_that_find_nothing_stranded_back_off_to_their_limit() -> None:
    collection = CountingScans(InMemoryDatabase()["docs"], stranding=False)
    relay = OutboxRelay(InMemoryBus(), [collection], poll_interval=0.02)
    await relay.start()
    try:
        await eventually(lambda: _length(collection.scans), until=lambda n: n >= 7, timeout=10)
    finally:
        await relay.stop()
    longest = 0.02 * SCAN_BACKOFF_LIMIT
    gaps = collection.gaps()[:6]
    assert [round(g / 0.02) for g in gaps[:3]] == [2, 4, 8], gaps  # twice the last wait
    assert all(longest * 0.95 <= g <= longest * 1.5 for g in gaps[4:]), gaps


async def test_a_stranded_event_brings_the_scans_back_to_their_interval() -> None:
    bus = InMemoryBus()
    collection = CountingScans(InMemoryDatabase()["docs"], stranding=False)
    relay = OutboxRelay(bus, [collection], poll_interval=0.02)
    await relay.start()
    try:
        await eventually(lambda: _length(collection.scans), until=lambda n: n >= 6, timeout=10)
        backed_off = len(collection.scans)
        collection.strand("left-by-a-crash")
        await eventually(lambda: _count(bus), until=lambda n: n == 1, timeout=10)
        await eventually(
            lambda: _length(collection.scans), until=lambda n: n >= backed_off + 3, timeout=10
        )
    finally:
        await relay.stop()
    before, after = collection.gaps()[3 : backed_off - 1], collection.gaps()[backed_off:]
    assert min(before) > 0.02 * 3, before  # backed off ...
    assert min(after) < 0.02 * 1.5, after  # ... and one interval after the scan that found it


async def test_a_dropped_hand_off_makes_the_next_scan_come_at_once() -> None:
    collection = CountingScans(InMemoryDatabase()["docs"], stranding=False)
    relay = OutboxRelay(InMemoryBus(), [collection], poll_interval=3600, batch_size=1)
    await relay.start()
    try:
        await eventually(lambda: _length(collection.scans), until=lambda n: n == 1, timeout=10)
        for n in range(MAX_HANDOFF_BATCHES + 1):  # no await: the publisher cannot drain them
            relay.nudge(collection.name, f"d{n}", [updated(f"d{n}")], first=True)

        await eventually(lambda: _length(collection.scans), until=lambda n: n == 2, timeout=10)
    finally:
        await relay.stop()


class FailingOnce(InMemoryBus):
    """A broker that refuses the first publish (a leader election, say)."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = 0

    async def publish(self, topic: str, envelopes: Any) -> None:
        if not self.refused:
            self.refused += 1
            raise ConnectionError("no leader for the partition")
        await super().publish(topic, envelopes)


async def test_what_a_scan_found_and_failed_to_publish_is_retried_without_another_scan() -> None:
    bus = FailingOnce()
    collection = CountingScans(InMemoryDatabase()["docs"], stranding=False)
    collection.strand("left-by-a-crash")
    relay = OutboxRelay(bus, [collection], poll_interval=3600)
    await relay.start()
    try:
        await eventually(lambda: _count(bus), until=lambda n: n == 1, timeout=10)
    finally:
        await relay.stop()
    assert bus.refused == 1 and len(collection.scans) == 1
