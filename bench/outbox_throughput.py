"""Outbox throughput benchmark on the real local stack (Kafka + MongoDB-compatible server).

    python -m bench.outbox_throughput --events 5000 --writers 16

One bounded run; every figure is printed beside a baseline measured in the same run, as a ratio.

A. baseline: raw aiokafka sends of exactly the records the relay produces (same key, value,
   headers, topic and producer config: idempotent, acks=all, linger 5 ms), all N pipelined
   (`await producer.send()` each, then every future awaited) -> events/s;
B. direct publish: W tasks, each awaiting its own record's ack before the next -> the latency
   baselines (what a writer would wait if it published to Kafka itself, without an outbox);
C. store only: the same W writers adding the same incidents through the repository into a second
   collection nobody relays -> the database's ceiling for these writes;
S. subject: W writers add incidents through IncidentRepository.add (one `created` event each, in
   the document's outbox, as incident creation writes it, timeline included) while the
   OutboxRelay runs on a KafkaBus, handed each write's entries as services/incidents/main.py
   wires it. Throughput: from the first write until Kafka acknowledged the last event (counted
   exactly: `publish_pass` returns after the acks) - the figure against A; "drained": until the
   relay has also removed the last of them from its document (removal runs after publishing, in
   batches). Write latency is the time of `add`; end-to-end latency runs from the start of `add`
   until a consumer sees the record.

The consumer runs in its own process (so its receive times are not delayed by the load), assigned
to every partition of the topic and positioned at the end before anything is sent; records are
matched by CloudEvents id. CPU per process (this one, the consumer, the broker, the database, and
everything else on the machine) is measured per phase.

Topic: the relay publishes each event to the topic of its contract, which it stores in the
outbox entry. The run uses a fresh topic (6 partitions, deleted at the end) by pointing the
`IncidentCreated` contract at it for the duration of the run (this process only): the events,
repository, documents and relay are the real ones, and nothing else writes to the topic, so the
consumer's count is exact. (Sharing `itsm.incidents.events.v1` would mix in other traffic and
another partition count.) The database is a scratch one, dropped at the end.

Variants (`--variant`), proposals measured with the stock relay code otherwise unchanged:

- `stock`: shared/store/relay.py as is. FerretDB 1.24 never answers an update command of 100
  statements or more (and the database stays wedged until dropped); the relay sends its
  removals in commands of at most `REMOVALS_PER_COMMAND` (10). Against a relay without that
  bound (one command per pass) the bench defaults to batch 99 on FerretDB.
- `chunked`: each removal command split further, into at most `--update-chunk` statements.

A phase still running after `--timeout` seconds is stopped; for the subject, the events relayed
by then (exact) over the time taken are reported as a partial throughput, and events never seen
by the consumer count as infinitely late in the latency percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import math
import multiprocessing
import os
import platform
import secrets
import signal
import sys
import time
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.common import CpuMeter, listening_pid, percentile, port_of
from services.incidents.domain import Incident, OpenIncident, Policy, open_incident
from services.incidents.domain.timeline import entry as timeline_entry
from services.incidents.store import IncidentRepository
from shared.bus.kafka import KafkaBus
from shared.bus.port import TopicSpec
from shared.contracts.codec import KafkaRecord, encode
from shared.contracts.envelope import Envelope, sequenced
from shared.contracts.incidents import IncidentCreated
from shared.ids import uuid7
from shared.settings import ServiceSettings
from shared.store import relay as relay_module
from shared.store.mongo import create_client
from shared.store.relay import OutboxRelay
from shared.store.repository import OUTBOX

SOURCE = "/itsm/incidents"  # as services/incidents/handlers.py
PRODUCER_CONFIG: dict[str, Any] = {  # as KafkaBus.start
    "enable_idempotence": True,
    "acks": "all",
    "linger_ms": 5,
    "request_timeout_ms": 15_000,
}
SERVICE_DEFAULTS = ServiceSettings.model_fields
FERRETDB_MAX_UPDATES = 99  # FerretDB 1.24 (SQLite): an update command of >= 100 never answers
# Statements per removal command of the stock relay (None: one command per pass, however large).
STOCK_REMOVALS_PER_COMMAND: int | None = getattr(relay_module, "REMOVALS_PER_COMMAND", None)
AIM_RATIO = 0.5
WARMUP = 200


# ---------------------------------------------------------------------------------------------
# Statistics and CPU accounting


# ---------------------------------------------------------------------------------------------
# Workload: the incidents, their `created` envelopes and the records the relay will produce


@dataclass(frozen=True)
class Item:
    incident: Incident
    envelope: Envelope
    timeline: dict[str, Any]
    record: KafkaRecord


def stand_in_traceparent() -> str:
    """A W3C traceparent of the length the relay's producer span puts on each record."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def workload(count: int, *, first_number: int, traced: bool) -> list[Item]:
    # BSON keeps milliseconds: with a whole-millisecond time the relay re-encodes the event read
    # back from the outbox to the very bytes encoded here.
    now = datetime.now(UTC)
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)
    policy = Policy()
    items = []
    for i in range(count):
        command = OpenIncident(
            title=f"Outgoing mail queued for minutes at site {i % 40:02d}",
            requester=f"user{i % 500:03d}@example.com",
            impact=1 + i % 3,
            urgency=1 + (i // 3) % 3,
            description="Users report that mail stays in the outbox for several minutes.",
            category="email",
            service="mail",
        )
        incident, events = open_incident(
            command,
            incident_id=uuid7(),
            number=f"INC{first_number + i:07d}",
            now=now,
            policy=policy,
        )
        (envelope,) = sequenced(incident.id, 0, list(events), source=SOURCE, time=now)
        traceparent = stand_in_traceparent() if traced else None
        items.append(
            Item(
                incident=incident,
                envelope=envelope,
                timeline=timeline_entry(None, incident, list(events), at=now),
                record=encode(envelope.with_traceparent(traceparent)),
            )
        )
    return items


@contextlib.contextmanager
def created_events_to(topic: str) -> Iterator[None]:
    """Point the `created` contract (hence new outbox entries) at the benchmark's topic."""
    contract: Any = IncidentCreated
    original = contract.topic
    contract.topic = topic
    try:
        yield
    finally:
        contract.topic = original


# ---------------------------------------------------------------------------------------------
# The consumer, in its own process


def tail_process(conn: Connection, bootstrap: str, topic: str) -> None:
    """Receive time (time.monotonic, one clock for every process) of each expected event id.

    Parent -> child: ("expect", ids) before a phase; ("collect", seconds): answer
    ("arrivals", {id: time}, duplicates, strays) once every expected id was seen or the time
    passed; ("stop", None)."""
    try:
        asyncio.run(_tail(conn, bootstrap, topic))
    except Exception as exc:
        conn.send(("error", repr(exc)))


async def _tail(conn: Connection, bootstrap: str, topic: str) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id="bench-outbox-tail",
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
    )
    await consumer.start()
    try:
        partitions: set[int] = set()
        for _ in range(20):
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
            if partitions:
                break
            await asyncio.sleep(0.5)
        if not partitions:
            conn.send(("error", f"topic {topic} not found on {bootstrap}"))
            return
        assignment = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assignment)
        await consumer.seek_to_end(*assignment)
        for tp in assignment:  # resolve the end offsets now, before anything is sent
            await consumer.position(tp)
        conn.send(("ready", len(assignment)))
        expected: set[str] = set()
        seen: dict[str, float] = {}
        duplicates = strays = 0
        collect_until: float | None = None
        while True:
            batches = await consumer.getmany(timeout_ms=5)
            received = time.monotonic()
            # Commands before records: an "expect" sent before a phase's first record is read
            # before that record is counted.
            while conn.poll():
                command, argument = conn.recv()
                if command == "expect":
                    expected, seen, duplicates, strays = set(argument), {}, 0, 0
                elif command == "collect":
                    collect_until = time.monotonic() + argument
                elif command == "stop":
                    return
            for batch in batches.values():
                for record in batch:
                    event_id = next(
                        (v.decode() for k, v in record.headers or () if k == "ce_id"), None
                    )
                    if event_id not in expected:
                        strays += 1
                    elif event_id in seen:
                        duplicates += 1
                    else:
                        seen[event_id] = received
            if collect_until is not None and (
                len(seen) == len(expected) or time.monotonic() > collect_until
            ):
                conn.send(("arrivals", seen, duplicates, strays))
                collect_until = None
    finally:
        await consumer.stop()


class Tail:
    def __init__(self, bootstrap: str, topic: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self.process = context.Process(
            target=tail_process, args=(child, bootstrap, topic), daemon=True
        )
        self.process.start()
        child.close()

    async def receive(self, within: float) -> tuple[Any, ...]:
        def recv() -> tuple[Any, ...]:
            if not self._conn.poll(within):
                raise RuntimeError(f"the consumer process did not answer within {within:.0f}s")
            message: tuple[Any, ...] = self._conn.recv()
            return message

        message = await asyncio.to_thread(recv)
        if message[0] == "error":
            raise RuntimeError(f"consumer process: {message[1]}")
        return message

    def expect(self, ids: Sequence[str]) -> None:
        self._conn.send(("expect", list(ids)))

    async def collect(self, within: float) -> tuple[dict[str, float], int, int]:
        self._conn.send(("collect", within))
        _, seen, duplicates, strays = await self.receive(within + 30)
        return seen, duplicates, strays

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send(("stop", None))
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)


# ---------------------------------------------------------------------------------------------
# Instrumented relay (stock code; timing around it) and the proposals


@dataclass
class RelayMeter:
    target: int
    relayed: int = 0
    passes: int = 0
    empty_passes: int = 0
    failed_passes: int = 0
    point_reads: int = 0  # find_one by _id (the relay's nudged path)
    point_read_seconds: float = 0.0
    on_done: Any = None
    halted: bool = False
    max_docs: int = 0
    pass_seconds: float = 0.0
    scan_seconds: float = 0.0  # finding pending events by scanning the collection
    nudged_read_seconds: float = 0.0  # reading the nudged documents by _id
    nudged_reads: int = 0
    publish_seconds: float = 0.0
    remove_seconds: float = 0.0
    remove_statements: int = 0
    remove_commands: int = 0
    scans: int = 0
    # per non-empty pass: (documents in the collection, removal statements, removal seconds)
    removal_log: list[tuple[int, int, float]] = field(default_factory=list)
    documents: Any = None  # () -> documents in the collection now
    published_at: float | None = None  # Kafka acknowledged the last event
    done_at: float | None = None  # ... and the relay removed the last of them
    done: asyncio.Event = field(default_factory=asyncio.Event)


class _TimedCursor:
    def __init__(self, cursor: Any, meter: RelayMeter) -> None:
        self._cursor = cursor
        self._meter = meter

    def limit(self, n: int) -> _TimedCursor:
        self._cursor = self._cursor.limit(n)
        return self

    async def to_list(self) -> list[dict[str, Any]]:
        self._meter.scans += 1
        documents: list[dict[str, Any]] = await self._cursor.to_list()
        return documents


class TimedCollection:
    """The relay's view of the collection: times the outbox scan and the removals; with `chunk`,
    sends the removals as bulk_writes of at most `chunk` statements (the `chunked` proposal)."""

    def __init__(self, inner: Any, meter: RelayMeter, chunk: int | None) -> None:
        self._inner = inner
        self._meter = meter
        self._chunk = chunk

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def find(self, *args: Any, **kwargs: Any) -> _TimedCursor:
        return _TimedCursor(self._inner.find(*args, **kwargs), self._meter)

    async def find_one(self, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        try:
            return await self._inner.find_one(*args, **kwargs)
        finally:  # concurrent point reads overlap: this sums their latencies
            self._meter.point_read_seconds += time.monotonic() - started
            self._meter.point_reads += 1

    async def bulk_write(self, requests: list[Any], **kwargs: Any) -> None:
        started = time.monotonic()
        size = self._chunk or len(requests)
        try:
            for i in range(0, len(requests), size):
                if self._meter.halted:  # see MeasuredRelay.halt
                    raise asyncio.CancelledError
                await self._inner.bulk_write(requests[i : i + size], **kwargs)
                self._meter.remove_commands += 1
        finally:  # a removal cancelled by the phase timeout still counts its time
            elapsed = time.monotonic() - started
            self._meter.remove_seconds += elapsed
        self._meter.remove_statements += len(requests)
        documents = self._meter.documents() if self._meter.documents else 0
        self._meter.removal_log.append((documents, len(requests), elapsed))


class MeasuredRelay(OutboxRelay):
    def __init__(self, *args: Any, meter: RelayMeter, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.meter = meter
        self._halted = False

    async def halt(self) -> None:
        """stop(), made reliable. On Python 3.11 a task cancelled just as pymongo sends a command
        loses the cancellation (pymongo's `asyncio.wait_for(conn.write(...))` returns the finished
        write instead of raising), so the relay loop would go on and stop() wait forever; here
        the next pass raises CancelledError instead."""
        self._halted = self.meter.halted = True
        self.nudge()
        await self.stop()

    async def publish_pass(self, *, scan: bool) -> int:
        if self._halted:
            raise asyncio.CancelledError
        started = time.monotonic()
        meter = self.meter
        try:
            relayed = await super().publish_pass(scan=scan)
        except Exception:
            meter.failed_passes += 1  # the relay logs it, backs off and retries
            raise
        finally:  # a failed or cancelled pass still counts its time
            meter.pass_seconds += time.monotonic() - started
        meter.passes += 1
        meter.empty_passes += relayed == 0
        meter.max_docs = max(meter.max_docs, relayed)
        meter.relayed += relayed
        if meter.published_at is None and meter.relayed >= meter.target:
            meter.published_at = time.monotonic()
        self._check_drained()
        return relayed

    async def remove_published(self) -> int:
        if self._halted:
            raise asyncio.CancelledError
        removed = await super().remove_published()
        self._check_drained()
        return removed

    def _check_drained(self) -> None:
        meter = self.meter
        if meter.done_at is None and meter.relayed >= meter.target and not self.awaiting_removal:
            meter.done_at = time.monotonic()
            meter.done.set()
            if meter.on_done is not None:
                meter.on_done()

    # The relay's two ways to find pending events in the store: the safety-net scan, and
    # documents read back by _id (a hand-off it could not publish from memory).
    async def _scan(self, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        try:
            return await super()._scan(*args, **kwargs)
        finally:
            self.meter.scan_seconds += time.monotonic() - started

    async def _read(self, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        try:
            return await super()._read(*args, **kwargs)
        finally:
            self.meter.nudged_read_seconds += time.monotonic() - started
            self.meter.nudged_reads += 1

    async def _publish(self, *args: Any, **kwargs: Any) -> int:
        started = time.monotonic()
        try:
            return await super()._publish(*args, **kwargs)
        finally:
            self.meter.publish_seconds += time.monotonic() - started


class UnrelayedRepository(IncidentRepository):
    collection_name = "incidents_unrelayed"


# ---------------------------------------------------------------------------------------------
# Phases


@dataclass
class Phase:
    name: str
    events: int  # events the phase set out to deliver
    done: int = 0  # events delivered (all of them unless the phase timed out)
    seconds: float = float("nan")
    write_latencies: list[float] = field(default_factory=list)
    e2e_latencies: list[float] = field(default_factory=list)  # inf: never seen
    cpu: dict[str, float] = field(default_factory=dict)
    duplicates: int = 0
    missing: int = 0
    errors: list[str] = field(default_factory=list)  # failed writes (the API would answer 503)
    cpu_end: dict[str, float] | None = None  # CPU sample at the end of the measured interval
    writes_end: float = math.nan  # when the last add() returned
    published_seconds: float = math.nan  # S: until Kafka acknowledged the last event
    completed: bool = False
    note: str = ""

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class Context:
    args: argparse.Namespace
    topic: str
    producer: AIOKafkaProducer
    bus: KafkaBus
    database: Any
    tail: Tail
    cpu: CpuMeter
    items: list[Item]


async def measured(
    ctx: Context,
    phase: Phase,
    work: Coroutine[Any, Any, float],
    starts: dict[str, float] | None = None,
) -> None:
    """Run `work` (returning its elapsed seconds) under the phase timeout, with the CPU meter
    and, when `starts` is given, the consumer expecting this phase's records."""
    if starts is not None:
        ctx.tail.expect([item.envelope.id for item in ctx.items])
    before = ctx.cpu.snapshot()
    begun = time.monotonic()
    try:
        async with asyncio.timeout(ctx.args.timeout):
            phase.seconds = await work
        phase.completed = True
        phase.done = phase.events
    except TimeoutError:
        phase.seconds = time.monotonic() - begun
        phase.note = f"timed out after {ctx.args.timeout:.0f}s (--timeout)"
    finally:
        phase.cpu = ctx.cpu.used(before, phase.cpu_end or ctx.cpu.snapshot())
    if starts is not None:
        seen, phase.duplicates, _ = await ctx.tail.collect(15 if phase.completed else 2)
        phase.missing = len(ctx.items) - len(seen)
        phase.e2e_latencies = [
            seen[i] - starts[i] if i in seen and i in starts else math.inf
            for i in (item.envelope.id for item in ctx.items)
        ]


async def pipelined_sends(ctx: Context) -> Phase:
    phase = Phase("A raw sends, pipelined", len(ctx.items))
    starts: dict[str, float] = {}

    async def work() -> float:
        begun = time.monotonic()
        futures = []
        for item in ctx.items:
            starts[item.envelope.id] = time.monotonic()
            record = item.record
            futures.append(
                await ctx.producer.send(
                    ctx.topic, value=record.value, key=record.key, headers=list(record.headers)
                )
            )
        await asyncio.gather(*futures)
        return time.monotonic() - begun

    await measured(ctx, phase, work(), starts)
    return phase


async def direct_sends(ctx: Context) -> Phase:
    phase = Phase(f"B raw sends, {ctx.args.writers} tasks awaiting each ack", len(ctx.items))
    starts: dict[str, float] = {}
    queue = iter(ctx.items)

    async def sender() -> None:
        for item in queue:
            started = starts[item.envelope.id] = time.monotonic()
            record = item.record
            future = await ctx.producer.send(
                ctx.topic, value=record.value, key=record.key, headers=list(record.headers)
            )
            await future
            phase.write_latencies.append(time.monotonic() - started)

    async def work() -> float:
        begun = time.monotonic()
        await asyncio.gather(*(sender() for _ in range(ctx.args.writers)))
        return time.monotonic() - begun

    await measured(ctx, phase, work(), starts)
    return phase


async def add_all(
    repo: IncidentRepository,
    items: list[Item],
    writers: int,
    phase: Phase,
    starts: dict[str, float],
) -> None:
    """`writers` tasks adding the incidents, one `add` (one document, one event) at a time."""
    queue = iter(items)

    async def writer() -> None:
        for item in queue:
            started = starts[item.envelope.id] = time.monotonic()
            try:
                await repo.add(item.incident, [item.envelope], append={"timeline": [item.timeline]})
            except Exception as exc:  # the API would answer 503; the run goes on and says so
                phase.errors.append(repr(exc))
                continue
            phase.write_latencies.append(time.monotonic() - started)

    await asyncio.gather(*(writer() for _ in range(writers)))
    phase.writes_end = time.monotonic()


async def store_only(ctx: Context) -> Phase:
    phase = Phase(f"C store only (no relay), {ctx.args.writers} writers", len(ctx.items))
    repo = UnrelayedRepository(ctx.database)
    await repo.ensure_indexes()

    async def work() -> float:
        begun = time.monotonic()
        await add_all(repo, ctx.items, ctx.args.writers, phase, {})
        return time.monotonic() - begun

    await measured(ctx, phase, work())
    phase.done = len(phase.write_latencies)
    await ctx.database.drop_collection(repo.collection_name)
    return phase


async def outbox(ctx: Context, batch_size: int, chunk: int | None) -> tuple[Phase, RelayMeter]:
    args = ctx.args
    phase = Phase(f"S outbox + relay ({args.variant}), {args.writers} writers", len(ctx.items))
    meter = RelayMeter(target=len(ctx.items))
    repo = IncidentRepository(ctx.database, on_write=lambda *written: relay.nudge(*written))
    await repo.ensure_indexes()
    if args.preload:
        await preload(repo, args.preload, traced=args.tracing == "sdk")
    meter.documents = lambda: args.preload + len(phase.write_latencies)
    meter.on_done = lambda: setattr(phase, "cpu_end", ctx.cpu.snapshot())
    relay = MeasuredRelay(
        ctx.bus,
        [TimedCollection(repo.collection, meter, chunk)],
        poll_interval=SERVICE_DEFAULTS["relay_poll_interval"].default,
        batch_size=batch_size,
        name="bench-outbox-relay",
        meter=meter,
    )
    starts: dict[str, float] = {}
    await relay.start()

    async def work() -> float:
        begun = time.monotonic()
        try:
            await add_all(repo, ctx.items, args.writers, phase, starts)
            await meter.done.wait()
        finally:
            await relay.halt()  # at once, also on the timeout: the meter stops with the clock
        assert meter.done_at is not None and meter.published_at is not None
        phase.published_seconds = meter.published_at - begun
        return meter.done_at - begun

    try:
        await measured(ctx, phase, work(), starts)
    finally:
        await relay.halt()
    if phase.completed:
        assert meter.done_at is not None
        pending = await repo.collection.count_documents({f"{OUTBOX}.0": {"$exists": True}})
        if pending:
            phase.note = f"{pending} documents still have pending events"
        if phase.writes_end > meter.done_at + 1:
            phase.note = (
                f"the last add() returned {phase.writes_end - meter.done_at:.0f}s after the relay "
                "had removed every event (its reply came late; not counted in the throughput)"
            )
    else:
        phase.done = meter.relayed  # exact: removed after Kafka acknowledged them
        phase.note += f"; PARTIAL: {meter.relayed} of {meter.target} events relayed"
    return phase, meter


async def preload(repo: IncidentRepository, count: int, *, traced: bool) -> None:
    """Incidents whose events were relayed long ago: what every relay scan also reads."""
    items = workload(count, first_number=5_000_000, traced=traced)
    for i in range(0, count, 500):
        documents = []
        for item in items[i : i + 500]:
            document = repo.to_document(item.incident)
            document[OUTBOX] = []
            document["timeline"] = [item.timeline]
            documents.append(document)
        await repo.collection.insert_many(documents, ordered=False)


# ---------------------------------------------------------------------------------------------
# Report


def ms(seconds: float) -> float:
    return seconds * 1000


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, str]] = []

    def add(self, figure: str, value: float, baseline: float, against: str) -> None:
        ratio = value / baseline if baseline and math.isfinite(baseline) else float("nan")
        self.rows.append((figure, _num(value), _num(baseline), _num(ratio, ratio=True), against))

    def print(self, title: str) -> None:
        head = ("figure", "value", "baseline", "ratio", "baseline is")
        widths = [max(len(r[i]) for r in [head, *self.rows]) for i in range(5)]
        print(f"\n{title}")
        for n, row in enumerate([head, *self.rows]):
            cells = [row[0].ljust(widths[0]), *(row[i].rjust(widths[i]) for i in (1, 2, 3))]
            print("  " + "  ".join(cells) + "  " + row[4])
            if n == 0:
                print("  " + "  ".join("-" * w for w in widths[:4]) + "  " + "-" * widths[4])


def _num(value: float, *, ratio: bool = False) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "unseen"
    if ratio:
        return f"{value:.4f}" if value < 0.1 else f"{value:.3f}" if value < 100 else f"{value:,.0f}"
    digits = 0 if abs(value) >= 100 else 2 if abs(value) >= 1 else 3
    return f"{value:,.{digits}f}"


def report(
    a: Phase, b: Phase, c: Phase, s: Phase, meter: RelayMeter, batch: int, cores: int
) -> None:
    print("\nphases:")
    for phase in (a, b, c, s):
        extra = [f"{phase.done} of {phase.events} events in {phase.seconds:.2f}s"]
        if phase.missing:
            extra.append(f"{phase.missing} records not seen by the consumer")
        if phase.duplicates:
            extra.append(f"{phase.duplicates} duplicate records")
        if phase.errors:
            extra.append(f"{len(phase.errors)} failed writes (first: {phase.errors[0]})")
        if phase.note:
            extra.append(phase.note)
        print(f"  {phase.name}: {'ok' if phase.completed else 'INCOMPLETE'}; {'; '.join(extra)}")

    partial = "" if s.completed else " (partial)"
    main = Table()
    main.add(
        f"throughput{partial} (write -> acked by Kafka), events/s",
        s.done / s.published_seconds if s.completed else s.rate,
        a.rate,
        "A: raw sends, pipelined",
    )
    main.add(
        f"drained{partial} (... and removed from the outbox), events/s",
        s.rate,
        a.rate,
        "A: raw sends, pipelined",
    )
    for q in (50, 99):
        main.add(
            f"write latency p{q} (add), ms",
            ms(percentile(s.write_latencies, q)),
            ms(percentile(b.write_latencies, q)),
            "B: send -> ack",
        )
    for q in (50, 99):
        main.add(
            f"end-to-end p{q} (add start -> consumer), ms",
            ms(percentile(s.e2e_latencies, q)),
            ms(percentile(b.e2e_latencies, q)),
            "B: send start -> consumer",
        )
    main.print(f"Outbox (S) against raw Kafka sends (aim: throughput ratio >= {AIM_RATIO})")

    store = Table()
    store.add("B raw sends awaiting each ack, events/s", b.rate, a.rate, "A")
    store.add("C store only (no relay), events/s", c.rate, a.rate, "A")
    store.add(f"S outbox + relay{partial}, events/s", s.rate, c.rate, "C: store only")
    for q in (50, 99):
        store.add(
            f"C add() p{q}, ms",
            ms(percentile(c.write_latencies, q)),
            ms(percentile(b.write_latencies, q)),
            "B: send -> ack",
        )
    store.print("The store's ceiling: the same writes without a relay")

    relay = Table()
    busy = meter.pass_seconds
    reads = meter.scan_seconds + meter.nudged_read_seconds
    relay.add("relay busy in publish passes, s", busy, s.seconds, "S wall time")
    relay.add("  scan for pending outboxes, s", meter.scan_seconds, s.seconds, "S wall time")
    relay.add("  read documents back by _id, s", meter.nudged_read_seconds, s.seconds,
              "S wall time")  # fmt: skip
    relay.add("  publish (decode, span, encode, acks), s", meter.publish_seconds, s.seconds,
              "S wall time")  # fmt: skip
    other = busy - reads - meter.publish_seconds
    relay.add("  other (planning, bookkeeping), s", other, s.seconds, "S wall time")
    relay.add("removal task ($pullAll bulk_write), s", meter.remove_seconds, s.seconds,
              "S wall time")  # fmt: skip
    full = max(1, meter.passes - meter.empty_passes)
    relay.add("events per non-empty pass", meter.relayed / full, batch, "relay batch size")
    relay.add(
        "publish per event, ms",
        ms(meter.publish_seconds / max(1, meter.relayed)),
        ms(a.seconds / max(1, a.done)),
        "A: wall time per event",
    )
    log = [entry for entry in meter.removal_log if entry[1]]  # completed removals
    relay.add(
        "removal per statement (completed removals), ms",
        ms(sum(e[2] for e in log) / max(1, sum(e[1] for e in log))),
        ms(percentile(c.write_latencies, 50)),
        "C: add() p50",
    )
    for n in sorted({0, len(log) // 2, len(log) - 1}) if log else []:
        documents, statements, seconds = log[n]
        relay.add(
            f"  removal {n + 1}/{len(log)}, {documents:,} documents in collection, ms",
            ms(seconds / statements),
            ms(percentile(c.write_latencies, 50)),
            "C: add() p50",
        )
    relay.add(
        "scan per scan, ms",
        ms(meter.scan_seconds / max(1, meter.scans)),
        ms(meter.publish_seconds / full),
        "publish per non-empty pass",
    )
    relay.add(
        "read by _id per document (latency), ms",
        ms(meter.point_read_seconds / max(1, meter.point_reads)),
        ms(percentile(c.write_latencies, 50)),
        "C: add() p50",
    )
    relay.print(
        f"Relay: {meter.passes} passes ({meter.empty_passes} empty) and {meter.failed_passes} "
        f"failed (retried); largest {meter.max_docs} events; {meter.scans} scans, "
        f"{meter.nudged_reads} read-backs of {meter.point_reads} documents; "
        f"{meter.remove_commands} removal commands of {meter.remove_statements} statements"
    )

    cpu = Table()
    for name in sorted(set(s.cpu) | set(a.cpu)):
        cpu.add(
            f"{name}, CPU ms per event",
            ms(s.cpu.get(name, 0) / max(1, s.done)),
            ms(a.cpu.get(name, 0) / max(1, a.done)),
            "A",
        )
    cpu.add(
        "bench, CPU ms per event, C (writers only)",
        ms(c.cpu.get("bench", 0) / max(1, c.done)),
        ms(a.cpu.get("bench", 0) / max(1, a.done)),
        "A",
    )
    for name in sorted(s.cpu):
        cpu.add(f"{name}, cores busy during S", s.cpu[name] / s.seconds, cores, "cores")
    cpu.print(
        "CPU (bench = this process: writers + relay; tail = consumer process; store, kafka = "
        "servers; other = rest of the machine)"
    )


# ---------------------------------------------------------------------------------------------
# Main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.outbox_throughput", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--events", type=int, default=5000, help="events per phase (5000)")
    parser.add_argument("--writers", type=int, default=16, help="concurrent writers (16)")
    parser.add_argument(
        "--kafka",
        default=os.environ.get("ITSM_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        help="bootstrap servers (ITSM_KAFKA_BOOTSTRAP, else 127.0.0.1:9092)",
    )
    parser.add_argument(
        "--mongo",
        default=os.environ.get("ITSM_MONGO_URL", "mongodb://127.0.0.1:27017"),
        help="MongoDB URL (ITSM_MONGO_URL, else mongodb://127.0.0.1:27017)",
    )
    parser.add_argument("--partitions", type=int, default=6, help="partitions of the topic (6)")
    parser.add_argument("--variant", choices=("stock", "chunked"), default="stock", help="relay")
    parser.add_argument(
        "--batch-size",
        type=int,
        help=f"relay batch size (service default {SERVICE_DEFAULTS['relay_batch_size'].default};"
        f" {FERRETDB_MAX_UPDATES} on FerretDB if the stock relay sends a pass's removals as one"
        " command)",
    )
    parser.add_argument(
        "--update-chunk",
        type=int,
        default=10,
        help="chunked: at most this many statements per removal command (10)",
    )
    parser.add_argument(
        "--tracing",
        choices=("sdk", "off"),
        default="sdk",
        help="sdk: a tracer provider as the services install (no exporter); off: no-op spans",
    )
    parser.add_argument(
        "--preload", type=int, default=0, help="relayed incidents already in the collection (0)"
    )
    parser.add_argument(
        "--mongo-timeout-ms",
        type=int,
        default=SERVICE_DEFAULTS["mongo_timeout_ms"].default,
        help="the client's timeouts as in the services (5000: socket timeout 10 s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300,
        help="seconds per phase (300); a subject still running is reported as partial",
    )
    args = parser.parse_args(argv)
    if min(args.events, args.writers, args.update_chunk, args.partitions) < 1:
        parser.error("--events, --writers, --update-chunk and --partitions must be positive")
    return args


async def server_description(client: Any) -> tuple[str, bool]:
    info = await client.admin.command("buildInfo")
    if "ferretdbVersion" in info:
        return f"FerretDB {info['ferretdbVersion']} (wire {info.get('version')})", True
    return f"MongoDB {info.get('version')}", False


def install_tracing(mode: str) -> None:
    if mode == "sdk":  # as shared.telemetry.setup_tracing without an OTLP endpoint
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider

        resource = Resource.create({"service.name": "bench-outbox"})
        trace.set_tracer_provider(TracerProvider(resource=resource))


async def delete_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-outbox-admin")
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()


async def warm_up(ctx: Context, traced: bool) -> None:
    """Connections, metadata and code paths of both producers and the store, off the clock."""
    items = workload(WARMUP, first_number=9_000_000, traced=traced)
    futures = [
        await ctx.producer.send(
            ctx.topic, value=i.record.value, key=i.record.key, headers=list(i.record.headers)
        )
        for i in items
    ]
    await asyncio.gather(*futures)
    await ctx.bus.publish(ctx.topic, [i.envelope for i in items])
    repo = UnrelayedRepository(ctx.database)
    for item in items[:50]:
        await repo.add(item.incident, [item.envelope], append={"timeline": [item.timeline]})
    await ctx.database.drop_collection(repo.collection_name)


async def drop_database(url: str, name: str) -> None:
    """Drop the scratch database, and again if it comes back: a server still busy with commands
    the run gave up on (timed-out inserts) runs them later, which re-creates the database.
    Dropping also releases a FerretDB database wedged by an oversized update command."""
    client = create_client(url, app_name="bench-outbox-cleanup", timeout_ms=30_000)
    error: Exception | None = None
    try:
        for _ in range(10):
            try:
                await client.drop_database(name)
                await asyncio.sleep(3)
                if not await client[name].list_collection_names():
                    return
            except Exception as exc:
                error = exc
                await asyncio.sleep(3)
        print(f"warning: database {name} still there after 10 drops ({error!r})", file=sys.stderr)
    finally:
        await client.close()


async def run(args: argparse.Namespace) -> int:
    install_tracing(args.tracing)
    unique = uuid7().replace("-", "")[-12:]
    topic = f"bench.outbox.{unique}"
    database_name = f"bench_outbox_{unique}"
    client = create_client(args.mongo, app_name="bench-outbox", timeout_ms=args.mongo_timeout_ms)
    store, ferretdb = await server_description(client)
    chunk = args.update_chunk if args.variant == "chunked" else None
    unbounded = STOCK_REMOVALS_PER_COMMAND is None and chunk is None
    if args.batch_size is None:
        default = SERVICE_DEFAULTS["relay_batch_size"].default
        args.batch_size = FERRETDB_MAX_UPDATES if ferretdb and unbounded else default
    largest = min([n for n in (chunk, STOCK_REMOVALS_PER_COMMAND) if n] + [args.batch_size])
    if ferretdb and largest > FERRETDB_MAX_UPDATES:
        print(
            f"warning: removal commands of up to {largest} statements; {store} never answers one"
            " of 100 or more, so the subject will time out",
            file=sys.stderr,
        )
    cores = os.cpu_count() or 1
    print(
        f"machine: {cores} cores ({platform.machine()}), Python {platform.python_version()}; "
        f"store: {store} at {args.mongo}; Kafka at {args.kafka}"
    )
    print(
        f"run: {args.events} events, {args.writers} writers, topic {topic} "
        f"({args.partitions} partitions), relay {args.variant} batch {args.batch_size}"
        + (f" chunk {chunk}" if chunk else "")
        + f", tracing {args.tracing}, preload {args.preload}, timeout {args.timeout:.0f}s/phase"
        f", mongo timeout {args.mongo_timeout_ms} ms"
    )

    bus = KafkaBus(args.kafka, client_id=f"bench-outbox-{unique}", start_timeout=15)
    producer = AIOKafkaProducer(
        bootstrap_servers=args.kafka, client_id=f"bench-outbox-raw-{unique}", **PRODUCER_CONFIG
    )
    tail: Tail | None = None
    topic_created = False
    try:
        await bus.start()
        await producer.start()
        await bus.ensure_topics([TopicSpec(topic, args.partitions)])
        topic_created = True
        tail = Tail(args.kafka, topic)
        await tail.receive(60)  # ready: positioned at the end of every partition
        traced = args.tracing == "sdk"
        items = workload(args.events, first_number=1, traced=traced)
        cpu = CpuMeter.of(
            {
                "bench": os.getpid(),
                "tail": tail.process.pid,
                "kafka": listening_pid(port_of(args.kafka, 9092)),
                "store": listening_pid(port_of(args.mongo, 27017)),
            }
        )
        ctx = Context(args, topic, producer, bus, client[database_name], tail, cpu, items)
        with created_events_to(topic):
            await warm_up(ctx, traced)
            a = await pipelined_sends(ctx)
            b = await direct_sends(ctx)
            c = await store_only(ctx)
            s, meter = await outbox(ctx, args.batch_size, chunk)
        report(a, b, c, s, meter, args.batch_size, cores)
        ok = all(p.completed and not p.missing and not p.errors for p in (a, b, c, s))
        return 0 if ok else 1
    finally:
        if tail is not None:
            tail.close()
        await producer.stop()
        await bus.stop()
        await client.close()
        await drop_database(args.mongo, database_name)
        if topic_created:
            with contextlib.suppress(Exception):
                await delete_topic(args.kafka, topic)


async def _main(args: argparse.Namespace) -> int:
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    return await run(args)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Last resort for a hang outside the phase timeouts: print every stack and exit.
    faulthandler.dump_traceback_later(args.timeout * 4 + 300, exit=True)
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
