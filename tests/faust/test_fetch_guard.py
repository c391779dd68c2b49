"""The fetch guard and the source order.

The guard: records a seek overtook are never handed over, the overtaken partitions are sought
again, and a seek that lands during a hand-over keeps its read offset. One test replays the fault
run's first failure on a model of Faust's fetcher (hand over, then write the read offset; drop
what lies below it): without the guard a stale batch handed over after the seek makes the
fetcher drop the records the broker delivers again.

The source order: each agent applies a partition's records in offset order from where the fetch
started, a hole rewinds the partition (once), nothing ahead of the hole is applied meanwhile, and
the commit never passes the next record to apply (the fault run's second failure: records the
stream skipped and Faust acknowledged unprocessed). The seek to the committed offsets makes every
seek in one step, so records handed over while the consumer thread looks the offsets up do not
leave the commit behind them (the kill -9 KPI test's stuck commit)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import NamedTuple

import pytest
from faust.transport.consumer import Consumer as FaustConsumer
from intervaltree import IntervalTree

from services.sla.processor.fetching import (
    BEGINNING,
    SeekLedger,
    SourceOrder,
    admit,
    capped_offsets,
    committed_positions,
    guarded_batch,
    seek_all_to_committed,
)


class TP(NamedTuple):
    topic: str
    partition: int


A, B = TP("itsm.incidents.v1", 0), TP("itsm.incidents.v1", 1)
CHANGELOG = TP("sla-state-changelog", 0)


async def batch_of(
    records: list[tuple[TP, int]], before: dict[int, Callable[[], None]] | None = None
) -> AsyncIterator[tuple[TP, int]]:
    """A fetched batch; `before[i]` runs just before record i comes out (a seek landing then)."""
    for index, record in enumerate(records):
        if before and index in before:
            before[index]()
        yield record


class Fetcher:
    """Faust's fetcher loop, as far as offsets go: hand over, write the read offset; drop
    records below it."""

    def __init__(self) -> None:
        self.read_offsets: dict[TP, int | None] = {}
        self.handed: list[tuple[TP, int]] = []
        self.sought_again: list[set[TP]] = []

    async def drain(
        self,
        batch: AsyncIterator[tuple[TP, int]],
        during: dict[int, Callable[[], None]] | None = None,
    ) -> None:
        async for tp, offset in batch:
            read = self.read_offsets.get(tp)
            if read is None or offset >= read:
                self.handed.append((tp, offset))
                if during and offset in during:
                    during[offset]()  # a seek lands while this record is being handed over
                self.read_offsets[tp] = offset

    async def seek_again(self, tps: set[TP]) -> None:
        self.sought_again.append(tps)


def seek(ledger: SeekLedger, fetcher: Fetcher, positions: dict[TP, int]) -> Callable[[], None]:
    """A seek as Faust makes it: the position is recorded, then the read offsets are reset."""

    def land() -> None:
        ledger.record(positions)
        for tp, position in positions.items():
            fetcher.read_offsets[tp] = position if position > 0 else None

    return land


async def test_without_seeks_every_record_is_handed_over_and_nothing_is_sought_again() -> None:
    ledger, fetcher = SeekLedger(), Fetcher()
    records = [(A, 0), (B, 0), (A, 1), (B, 1)]
    await fetcher.drain(
        guarded_batch(batch_of(records), ledger, fetcher.read_offsets, fetcher.seek_again)
    )
    assert fetcher.handed == records
    assert fetcher.sought_again == []
    assert fetcher.read_offsets == {A: 1, B: 1}


async def test_records_of_a_partition_sought_after_the_fetch_are_held_back_and_sought_again() -> (
    None
):
    ledger, fetcher = SeekLedger(), Fetcher()
    records = [(A, 7), (B, 4), (A, 8), (B, 5)]
    land = seek(ledger, fetcher, {A: 3})
    batch = batch_of(records, before={0: land})  # the seek lands after the fetch, before A:7
    await fetcher.drain(guarded_batch(batch, ledger, fetcher.read_offsets, fetcher.seek_again))

    assert fetcher.handed == [(B, 4), (B, 5)]  # B was not sought: its records go on
    assert fetcher.sought_again == [{A}]
    assert fetcher.read_offsets[A] == 3  # where the seek put it, not past the stale records


async def test_a_seek_before_the_fetch_leaves_the_batch_alone() -> None:
    ledger, fetcher = SeekLedger(), Fetcher()
    seek(ledger, fetcher, {A: 3})()
    records = [(A, 3), (A, 4)]
    await fetcher.drain(
        guarded_batch(batch_of(records), ledger, fetcher.read_offsets, fetcher.seek_again)
    )
    assert fetcher.handed == records
    assert fetcher.sought_again == []


@pytest.mark.parametrize(
    ("position", "read_offset"),
    [(3, 3), (BEGINNING, None)],
    ids=["to-an-offset", "to-the-beginning"],
)
async def test_a_seek_landing_during_a_hand_over_keeps_its_read_offset(
    position: int, read_offset: int | None
) -> None:
    ledger, fetcher = SeekLedger(), Fetcher()
    records = [(A, 6), (A, 7), (B, 2)]
    batch = guarded_batch(batch_of(records), ledger, fetcher.read_offsets, fetcher.seek_again)
    await fetcher.drain(batch, during={6: seek(ledger, fetcher, {A: position})})

    assert fetcher.handed == [(A, 6), (B, 2)]  # A:6 was already on its way; A:7 is held back
    assert fetcher.read_offsets[A] == read_offset
    assert fetcher.sought_again == [{A}]


@pytest.mark.parametrize(
    ("committed", "positions"),
    [
        ({A: 12}, {A: 12}),
        ({A: 0}, {A: BEGINNING}),
        ({A: None}, {A: BEGINNING}),
        ({CHANGELOG: None}, {}),  # Faust's recovery positions changelogs itself
        ({CHANGELOG: 40}, {CHANGELOG: 40}),
    ],
)
def test_where_seek_to_committed_leaves_each_partition(
    committed: dict[TP, int | None], positions: dict[TP, int]
) -> None:
    assert committed_positions(committed, {CHANGELOG.topic}) == positions


@pytest.mark.parametrize("guarded", [False, True], ids=["faust-alone", "with-the-guard"])
async def test_a_stale_batch_after_a_rebalance_seek_does_not_make_the_fetcher_drop_records(
    guarded: bool,
) -> None:
    """Committed offset 3; a batch fetched in the previous generation (A:5..7) comes back after
    the new generation's seek to 3; the broker then delivers A:3..7 again."""
    ledger, fetcher = SeekLedger(), Fetcher()
    land = seek(ledger, fetcher, {A: 3})
    stale = batch_of([(A, 5), (A, 6), (A, 7)], before={0: land})
    refetched = batch_of([(A, offset) for offset in range(3, 8)])
    for batch in (stale, refetched):
        drained = (
            guarded_batch(batch, ledger, fetcher.read_offsets, fetcher.seek_again)
            if guarded
            else batch
        )
        await fetcher.drain(drained)

    processed = sorted({offset for _, offset in fetcher.handed})
    if guarded:
        assert processed == [3, 4, 5, 6, 7]
    else:
        assert processed == [5, 6, 7]  # 3 and 4 dropped as already read: the fault run's skip


class Broker:
    """The consumer calls `admit` makes on a hole: where the partition starts, and a seek (which
    the ledger records, as the guarded consumer does)."""

    def __init__(self, ledger: SeekLedger, earliest: int = 0) -> None:
        self.ledger, self.earliest, self.seeks = ledger, earliest, []

    async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
        return dict.fromkeys(tps, self.earliest)

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))
        self.ledger.record({tp: offset})


async def deliver(order: SourceOrder, broker: Broker, offsets: list[int]) -> list[int]:
    """What an agent applies of the records its stream hands it, in that order."""
    done = []
    for offset in offsets:
        if await admit(order, broker, A, offset):
            order.applied(A, offset)
            done.append(offset)
    return done


async def test_records_are_applied_in_offset_order_from_where_the_fetch_started() -> None:
    ledger = SeekLedger()
    ledger.record({A: 256})
    order, broker = SourceOrder(ledger), Broker(ledger)
    assert await deliver(order, broker, [254, 255, 256, 257, 258]) == [256, 257, 258]
    assert broker.seeks == []  # 254 and 255 lie below the committed offset: done before


async def test_a_hole_rewinds_the_partition_once_and_nothing_ahead_of_it_is_applied() -> None:
    """The fault run's skip: the stream lost 262..279 (Faust acknowledged them unprocessed) and
    hands on 280. The agent applies nothing beyond 262 until the rewind brings 262 back."""
    ledger = SeekLedger()
    ledger.record({A: 256})
    order, broker = SourceOrder(ledger), Broker(ledger)
    before = [*range(256, 262), 280, 281, 282]  # then the stale rest of the stream
    assert await deliver(order, broker, before) == list(range(256, 262))
    assert broker.seeks == [(A, 262)]  # one rewind, not one per record ahead of the hole

    assert await deliver(order, broker, list(range(262, 284))) == list(range(262, 284))
    assert order.next_offset(A) == 284


async def test_the_commit_never_passes_the_next_record_to_apply() -> None:
    ledger = SeekLedger()
    ledger.record({A: 256})
    order, broker = SourceOrder(ledger), Broker(ledger)
    await deliver(order, broker, [256, 257, 280])  # 280 acked by Faust, never applied
    assert order.commit_cap(A, 281) == 258
    assert order.commit_cap(A, 250) == 250
    assert order.commit_cap(B, 99) == 99  # a partition it knows nothing of: Faust's offset


async def test_records_gone_from_the_broker_are_skipped_once_and_logged() -> None:
    ledger = SeekLedger()
    ledger.record({A: 100})
    order, broker = SourceOrder(ledger), Broker(ledger, earliest=150)
    assert await deliver(order, broker, [150, 151]) == [150, 151]  # retention took 100..149
    assert broker.seeks == []


async def test_a_rewind_that_brought_nothing_back_is_asked_again_after_a_while() -> None:
    ledger = SeekLedger()
    ledger.record({A: 10})
    order = SourceOrder(ledger)
    assert order.rewind_due(A, now=0.0) == 10
    assert order.rewind_due(A, now=5.0) is None
    assert order.rewind_due(A, now=11.0) == 10


async def test_a_seek_restarts_the_expectation_where_it_went() -> None:
    ledger = SeekLedger()
    ledger.record({A: 5})
    order, broker = SourceOrder(ledger), Broker(ledger)
    assert await deliver(order, broker, [5, 6, 7]) == [5, 6, 7]
    ledger.record({A: 6})  # a rebalance went back to the committed offset
    assert await deliver(order, broker, [6, 7, 8]) == [6, 7, 8]  # applied again: idempotent
    ledger.record({A: BEGINNING})
    assert await deliver(order, broker, [0, 1]) == [0, 1]


class CommitBooks:
    """Faust's commit bookkeeping of one consumer (its own methods), without a broker."""

    _new_offset = FaustConsumer._new_offset
    _should_commit = FaustConsumer._should_commit
    _filter_committable_offsets = FaustConsumer._filter_committable_offsets

    def __init__(self) -> None:
        self._acked: dict[TP, list[int]] = defaultdict(list)
        self._acked_index: dict[TP, set[int]] = defaultdict(set)
        self._gap: dict[TP, IntervalTree] = defaultdict(IntervalTree)
        self._committed_offset: dict[TP, int | None] = defaultdict(lambda: None)

    def ack(self, tp: TP, offsets: range) -> None:
        for offset in offsets:
            self._acked[tp].append(offset)
            self._acked_index[tp].add(offset)

    def commit(self, order: SourceOrder) -> dict[TP, int]:
        """One commit round as the guarded consumer makes it; returns what it commits."""
        offsets = capped_offsets(self, order, self._filter_committable_offsets([A]))
        done = {tp: o for tp, o in offsets.items() if self._should_commit(tp, o)}
        self._committed_offset.update(done)
        return done


async def test_a_held_commit_is_made_in_full_once_the_hold_lifts() -> None:
    books, order = CommitBooks(), SourceOrder(SeekLedger())
    held: list[int | None] = [15]  # records from 15 on must be read again after a crash
    order.holds["kpi-plans"] = lambda tp: held[0]
    books._committed_offset[A] = 10
    books.ack(A, range(10, 20))

    assert books.commit(order) == {A: 15}
    assert books.commit(order) == {}  # still held
    held[0] = None
    books.ack(A, range(20, 22))

    assert books.commit(order) == {A: 22}  # 15..21, not stuck at 15 behind a gap


class ThreadConsumer:
    """aiokafka's consumer in Faust's consumer thread, for one partition that two other
    partitions' committed-offset lookups follow: each lookup awaits the broker, and while it
    does the fetch goes on and hands records over to the agent (`fetch_the_rest`)."""

    def __init__(self, order: SourceOrder, broker: Broker, end: int) -> None:
        self.order, self.broker, self.end = order, broker, end
        self.position = {A: 137, B: 0, CHANGELOG: 0}  # aiokafka starts at the committed offset
        self.committed_offsets: dict[TP, int | None] = {A: 137, B: None, CHANGELOG: None}
        self.rewound: list[TP] = []

    def assignment(self) -> set[TP]:
        return {A, B, CHANGELOG}

    async def fetch_the_rest(self) -> list[int]:
        offsets = list(range(self.position[A], self.end))
        self.position[A] = self.end
        return await deliver(self.order, self.broker, offsets)

    async def committed(self, tp: TP) -> int | None:
        await self.fetch_the_rest()  # the round trip to the group coordinator
        return self.committed_offsets[tp]

    def seek(self, tp: TP, offset: int) -> None:
        self.position[tp] = offset

    async def seek_to_beginning(self, *tps: TP) -> None:
        self.rewound.extend(tps)

    async def seek_to_committed(self) -> dict[TP, int | None]:
        """aiokafka's: each partition sought right after its own lookup."""
        done: dict[TP, int | None] = {}
        for tp in sorted(self.assignment()):
            done[tp] = offset = await self.committed(tp)
            if offset:
                self.seek(tp, offset)
        return done


@pytest.mark.parametrize("one_step", [False, True], ids=["aiokafka", "seeks-in-one-step"])
async def test_records_handed_over_during_the_seek_to_committed_do_not_hold_the_commit(
    one_step: bool,
) -> None:
    """The restart in the kill -9 KPI test: committed offset 137 on A, seeks made by the consumer
    thread while the fetch goes on, the ledger written when the call returns, and A quiet
    afterwards. Sought partition by partition, A's records 137..140 are fetched again after its
    seek and applied before the call returns; the ledger then puts the expectation back at 137,
    where the commit stays."""
    ledger = SeekLedger()
    order = SourceOrder(ledger)
    consumer = ThreadConsumer(order, Broker(ledger), end=141)
    committed = await (
        seek_all_to_committed(consumer, {CHANGELOG.topic})
        if one_step
        else consumer.seek_to_committed()
    )
    ledger.record(committed_positions(committed, {CHANGELOG.topic}))
    again = await consumer.fetch_the_rest()
    if one_step:
        assert again == [137, 138, 139, 140]  # applied again: idempotent
        assert order.commit_cap(A, 141) == 141
        assert consumer.rewound == [B]  # no committed offset: from its beginning
    else:
        assert again == []  # not delivered again ...
        assert order.commit_cap(A, 141) == 137  # ... and the commit stays below them
