"""Guards on Faust's fetcher, so that what it hands to the streams agrees with where it seeks.

Faust's fetcher hands records to the streams one by one and writes each partition's read offset
after each hand-over; a record below the read offset is then dropped as already read. A seek
(the end of recovery, a rebalance, a fetch while the flow is stopped) puts the fetch position and
the read offset back to the committed offset, but a batch fetched before the seek goes on being
handed over after it (13 and 29 records in one restart test and one kill -9 test). Each such
record moves the read offset past records the broker delivers again; those are dropped without
being processed, their offsets are never acked, and the commit stalls below them — or, when the
hole is one record wide, passes it (Faust lets a one-offset gap at the head of the acked offsets
through). Found by the fault run (tests/e2e/test_fault_run.py): a restarted worker never applied
three `created` events the relay had published around its reassignment.

The guard makes a seek and the hand-overs one order of events:
- every seek is written into a ledger with the position it set, once it has taken effect;
- a record of a partition sought since its batch was fetched is not handed over, and after the
  batch the partition is sought again to the ledger's position (the consumer thread may have
  fetched the batch after the seek, which moved the position past the records it held);
- when a seek lands while a record is being handed over, the seek wins: the read offset the
  fetcher writes afterwards is put back to the seek's.
A record handed over just before a seek may be processed twice; the handlers are idempotent
(at-least-once), never skipping one is the point.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import structlog
from faust.transport.drivers import aiokafka as faust_aiokafka

log = structlog.get_logger(__name__)

BEGINNING = -1
"""The position of a partition rewound to its first available record."""


@dataclass
class SeekLedger:
    """Which partitions were sought, in what order, and to which position."""

    count: int = 0
    sought: dict[Hashable, tuple[int, int]] = field(default_factory=dict)

    def record(self, positions: Mapping[Any, int]) -> None:
        if not positions:
            return
        self.count += 1
        for tp, position in positions.items():
            self.sought[tp] = (self.count, position)

    def sought_since(self, tp: Hashable, count: int) -> bool:
        seek = self.sought.get(tp)
        return seek is not None and seek[0] > count

    def position(self, tp: Hashable) -> int:
        return self.sought[tp][1]

    def read_offset(self, tp: Hashable) -> int | None:
        """The read offset a seek leaves (Faust keeps None for "from the beginning")."""
        position = self.position(tp)
        return position if position > 0 else None


async def guarded_batch(
    batch: AsyncIterator[tuple[Any, Any]],
    ledger: SeekLedger,
    read_offsets: MutableMapping[Any, int | None],
    seek_again: Callable[[set[Any]], Awaitable[None]],
) -> AsyncIterator[tuple[Any, Any]]:
    """`batch` without the records a seek overtook, and with the seeks' read offsets kept."""
    fetched_at = ledger.count
    overtaken: set[Any] = set()
    async for tp, message in batch:
        if ledger.sought_since(tp, fetched_at):
            overtaken.add(tp)
            continue
        handed_at = ledger.count
        yield tp, message  # the fetcher hands it over, then writes its read offset
        if ledger.sought_since(tp, handed_at):
            read_offsets[tp] = ledger.read_offset(tp)
            log.info("sla.fetch.read_offset_kept", topic=tp.topic, partition=tp.partition)
    if overtaken:
        await seek_again(overtaken)


Verdict = Literal["apply", "repeat", "hole"]
REWIND_RETRY = 10.0  # seconds before a rewind that brought nothing back is asked again


@dataclass
class SourceOrder:
    """The agents apply each source partition's records in offset order, without a hole, and
    the consumer never commits past the next record to apply.

    The last line of defence behind `guarded_batch`: whatever drops a record between the broker
    and the agent (a stale batch, a stream skipping a record while the flow is stopped, which
    Faust acknowledges as if processed), the next record the agent sees is then beyond the one it
    expects. It is not applied; the partition is sought back to the expected record (once, and
    again only after `REWIND_RETRY`), and the commit stays below it meanwhile. Where the fetch
    starts anew (a seek in the ledger), the expectation restarts there.
    """

    ledger: SeekLedger
    next_offsets: dict[Hashable, tuple[int, int | None]] = field(default_factory=dict)
    rewinds: dict[Hashable, tuple[int, float]] = field(default_factory=dict)
    # More reasons not to commit past a record (name -> the offset to stay at, or None): e.g.
    # records whose KPI plans are held in memory (kpis.py), which a restart must read again.
    holds: dict[str, Callable[[Any], int | None]] = field(default_factory=dict)

    def next_offset(self, tp: Hashable) -> int | None:
        """The offset the agent applies next (None: whatever comes first)."""
        sought_at, position = self.ledger.sought.get(tp, (0, BEGINNING))
        stamp, offset = self.next_offsets.get(tp, (-1, None))
        if sought_at > stamp:  # the fetch restarted where that seek put it
            offset = None if position == BEGINNING else position
            self.next_offsets[tp] = (sought_at, offset)
        return offset

    def verdict(self, tp: Hashable, offset: int) -> Verdict:
        expected = self.next_offset(tp)
        if expected is None or offset == expected:
            return "apply"
        return "repeat" if offset < expected else "hole"

    def applied(self, tp: Hashable, offset: int) -> None:
        self.next_offsets[tp] = (self.ledger.sought.get(tp, (0, BEGINNING))[0], offset + 1)
        self.rewinds.pop(tp, None)

    def rewind_due(self, tp: Hashable, now: float) -> int | None:
        """Where to seek `tp` back to for a hole, unless a rewind there is already under way."""
        expected = self.next_offset(tp)
        if expected is None:
            return None
        asked = self.rewinds.get(tp)
        if asked is not None and asked[0] == expected and now - asked[1] < REWIND_RETRY:
            return None
        self.rewinds[tp] = (expected, now)
        return expected

    def skip_to(self, tp: Hashable, offset: int) -> None:
        """The records before `offset` are gone from the broker (retention): go on from it."""
        self.applied(tp, offset - 1)

    def commit_cap(self, tp: Hashable, offset: int) -> int:
        expected = self.next_offset(tp)
        caps = [hold(tp) for hold in self.holds.values()]
        return min([offset, *(cap for cap in (expected, *caps) if cap is not None)])


async def admit(order: SourceOrder, consumer: Any, tp: Any, offset: int) -> bool:
    """Whether an agent applies the record at `offset` of `tp` now (see `SourceOrder`)."""
    verdict = order.verdict(tp, offset)
    if verdict == "apply":
        return True
    if verdict == "repeat":
        return False  # at or below what this worker applied since the fetch started: done
    expected = order.rewind_due(tp, time.monotonic())
    if expected is None:
        return False  # a rewind is under way: the records ahead of it come again after it
    earliest = (await consumer.earliest_offsets(tp)).get(tp, 0)
    if earliest > expected:
        log.error(
            "sla.source.records_expired", topic=tp.topic, partition=tp.partition,
            expected=expected, earliest=earliest,
        )  # fmt: skip
        order.skip_to(tp, earliest)
        return order.verdict(tp, offset) == "apply"
    log.warning(
        "sla.source.hole", topic=tp.topic, partition=tp.partition, expected=expected, got=offset
    )
    await consumer.seek(tp, expected)
    return False


def committed_positions(
    committed: Mapping[Any, int | None], changelogs: set[str]
) -> dict[Any, int]:
    """Where `seek_to_committed` (with `rewind_uncommitted_partitions`) left each partition.

    aiokafka seeks a partition with a committed offset above 0 to it; the rewind takes the others
    to their beginning, except changelog partitions, which Faust's recovery positions itself.
    """
    positions: dict[Any, int] = {}
    for tp, offset in committed.items():
        if offset and offset > 0:
            positions[tp] = offset
        elif tp.topic not in changelogs:
            positions[tp] = BEGINNING
    return positions


async def seek_all_to_committed(consumer: Any, changelogs: set[str]) -> Mapping[Any, int | None]:
    """aiokafka's `seek_to_committed`, with every seek in one step, inside the consumer thread.

    aiokafka seeks partition by partition, each after awaiting its committed offset (the call
    took 1.5 s for 30 partitions in one restart), while the fetch goes on: a partition sought
    early had its records fetched again and handed over before the call returned, and the
    ledger, written when the call returns, put the expectation back below records the broker
    would not deliver again (the commit then stayed there on a quiet partition: one in two runs
    of the kill -9 KPI test). Here the offsets are all looked up first and the seeks follow
    without an await between them, so every fetch returns either before all of them or after;
    the call returns before any record fetched after them is handed over (the thread resolves
    the call's promise first). The partitions without a committed offset are rewound to their
    beginning (see `rewind_uncommitted_partitions`)."""
    committed: dict[Any, int | None] = {}
    for tp in consumer.assignment():
        committed[tp] = await consumer.committed(tp)
    for tp, offset in committed.items():
        if offset and offset > 0:
            consumer.seek(tp, offset)
    uncommitted = [
        tp for tp, offset in committed.items() if not offset and tp.topic not in changelogs
    ]
    if uncommitted:
        await consumer.seek_to_beginning(*uncommitted)
    return committed


def rewind_uncommitted_partitions() -> None:
    """Make Faust's seek to the committed offsets also rewind partitions that have none.

    After a rebalance Faust drops the records fetched meanwhile and seeks back to the committed
    offsets; aiokafka leaves a partition without one (or at 0) where the dropped fetch left it.
    """
    thread = faust_aiokafka.AIOKafkaConsumerThread

    async def seek_to_committed(self: Any) -> Mapping[Any, int | None]:
        consumer = self._ensure_consumer()
        changelogs = set(self.app.tables.changelog_topics)  # positioned by Faust's recovery

        async def seek() -> Mapping[Any, int | None]:
            return await seek_all_to_committed(consumer, changelogs)

        return cast(Mapping[Any, int | None], await self.call_thread(seek))

    setattr(thread, "seek_to_committed", seek_to_committed)  # noqa: B010 -- a method, on purpose


def ledger_of(consumer: Any) -> SeekLedger:
    ledger = consumer.__dict__.get("_itsm_seek_ledger")
    if ledger is None:
        ledger = consumer.__dict__["_itsm_seek_ledger"] = SeekLedger()
    return cast(SeekLedger, ledger)


def order_of(consumer: Any) -> SourceOrder | None:
    """The consumer's source order, where the worker installed the guards (not in unit tests of
    the agents, whose test consumers neither seek nor commit)."""
    if not getattr(type(consumer), "_itsm_fetches_guarded", False):
        return None
    order = consumer.__dict__.get("_itsm_source_order")
    if order is None:
        order = consumer.__dict__["_itsm_source_order"] = SourceOrder(ledger_of(consumer))
    return cast(SourceOrder, order)


async def in_order(consumer: Any, tp: Any, offset: int) -> bool:
    """Whether an agent applies this record now; call `applied` after it did."""
    order = order_of(consumer)
    return True if order is None else await admit(order, consumer, tp, offset)


def hold_commits(consumer: Any, name: str, hold: Callable[[Any], int | None]) -> None:
    """Keep the consumer's commits at or below `hold(tp)` (where the worker guards fetches)."""
    order = order_of(consumer)
    if order is not None:
        order.holds[name] = hold


def applied(consumer: Any, tp: Any, offset: int) -> None:
    order = order_of(consumer)
    if order is not None:
        order.applied(tp, offset)


def capped_offsets(consumer: Any, order: SourceOrder, offsets: Mapping[Any, int]) -> dict[Any, int]:
    """The commit offsets Faust computed, each capped by the source order.

    Faust's `_new_offset` removes the acknowledged offsets it turns into a commit offset. Where
    the commit is capped below it, they go back into Faust's list: forgotten, the commit would
    stay at the cap for good, since Faust sees a gap at the head of the list (no acknowledgement
    right after the committed offset) and never commits that partition again, so a restart would
    read everything after the cap again. Kept, they are committed once the cap lifts."""
    capped: dict[Any, int] = {}
    for tp, offset in offsets.items():
        cap = order.commit_cap(tp, offset)
        acked, index = consumer._acked[tp], consumer._acked_index[tp]
        for kept in range(cap, offset):
            if kept not in index:
                bisect.insort(acked, kept)
                index.add(kept)
        capped[tp] = cap
    return capped


def guard_fetches() -> None:
    """Install the seek ledger and the batch guard on Faust's aiokafka consumer (once)."""
    consumer_class: Any = faust_aiokafka.Consumer
    if getattr(consumer_class, "_itsm_fetches_guarded", False):
        return
    consumer_class._itsm_fetches_guarded = True
    fetch = consumer_class.getmany
    seek_to_committed = consumer_class.seek_to_committed
    seek_wait = consumer_class.seek_wait
    committable = consumer_class._filter_committable_offsets

    async def seek_again(consumer: Any, tps: set[Any]) -> None:
        ledger = ledger_of(consumer)
        assigned = consumer.assignment()
        for tp in tps & assigned:
            position = ledger.position(tp)
            log.info("sla.fetch.sought_again", topic=tp.topic, partition=tp.partition, to=position)
            if position == BEGINNING:
                await consumer._thread.seek_to_beginning(tp)
                ledger.record({tp: BEGINNING})
            else:
                await consumer.seek(tp, position)

    async def guarded_getmany(self: Any, **fetch_options: Any) -> AsyncIterator[tuple[Any, Any]]:
        batch = fetch(self, **fetch_options)  # Faust passes `timeout=` by keyword
        guarded = guarded_batch(
            batch, ledger_of(self), self._read_offset, lambda tps: seek_again(self, tps)
        )
        async for item in guarded:
            yield item

    async def recorded_seek_to_committed(self: Any) -> Mapping[Any, int | None]:
        committed = await seek_to_committed(self)
        ledger_of(self).record(
            committed_positions(committed, set(self.app.tables.changelog_topics))
        )
        return cast(Mapping[Any, int | None], committed)

    async def recorded_seek(self: Any, partition: Any, offset: int) -> None:
        # In the consumer thread, as Faust's `seek_wait`: Faust's own `seek` changes aiokafka's
        # fetcher from the event loop's thread, which can break the consumer thread's drain of
        # fetched records mid-way (a KeyError in aiokafka's `fetched_records` crashed a worker).
        await self.seek_wait({partition: offset})  # recorded_seek_wait: into the ledger
        self._read_offset[partition] = offset if offset else None

    async def recorded_seek_wait(self: Any, partitions: Mapping[Any, int]) -> None:
        await seek_wait(self, partitions)
        ledger_of(self).record(partitions)

    def capped_committable(self: Any, tps: Any) -> dict[Any, int]:
        order = order_of(self)
        assert order is not None  # the class is guarded: this very function is the guard
        offsets = capped_offsets(self, order, committable(self, tps))
        return {tp: offset for tp, offset in offsets.items() if self._should_commit(tp, offset)}

    consumer_class._filter_committable_offsets = capped_committable
    consumer_class.getmany = guarded_getmany
    consumer_class.seek_to_committed = recorded_seek_to_committed
    consumer_class.seek = recorded_seek
    consumer_class.seek_wait = recorded_seek_wait


def install_consumer_guards() -> None:
    """Everything the worker changes in Faust's consumer, in one call from the entry point."""
    rewind_uncommitted_partitions()
    guard_fetches()
