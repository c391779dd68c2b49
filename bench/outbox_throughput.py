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
   OutboxRelay runs on a KafkaBus, nudged after each write as services/incidents/main.py wires
   it. Throughput runs from the first write until the relay has removed the last event from the
   outbox after Kafka acknowledged it (counted exactly: `run_once` returns only after the acks
   and the $pullAll). Write latency is the time of `add`; end-to-end latency runs from the start
   of `add` until a consumer sees the record.

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

- `stock`: shared/store/relay.py as is;
- `chunked`: the relay's removal bulk_write split into commands of at most `--update-chunk`
  statements (FerretDB 1.24 never answers an update command of 100 statements or more);
- `hinted`: chunked, and the repository tells the relay which document it wrote; the relay reads
  those documents by `_id` instead of scanning the collection for pending outboxes (the scan stays
  as the safety net, at most once per poll interval).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import multiprocessing
import os
import platform
import secrets
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pymongo import UpdateOne

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
from shared.store.locks import document_locks
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
AIM_RATIO = 0.5
WARMUP = 200


# ---------------------------------------------------------------------------------------------
# Statistics and CPU accounting


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def cpu_seconds(pid: int) -> float | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def listening_pid(address: str, default_port: int) -> int | None:
    """The local process listening on a loopback address's port (None when not found)."""
    parts = urlsplit(address if "//" in address else f"//{address}")
    if parts.hostname not in {"127.0.0.1", "localhost", "::1"}:
        return None
    port = parts.port or default_port
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{cols[9]}]")
    for proc in Path("/proc").iterdir():
        if inodes and proc.name.isdigit():
            with contextlib.suppress(OSError):
                for fd in (proc / "fd").iterdir():
                    with contextlib.suppress(OSError):
                        if os.readlink(fd) in inodes:
                            return int(proc.name)
    return None


class CpuMeter:
    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid is not None}

    def snapshot(self) -> dict[str, float]:
        sample = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        taken = {name: value for name, value in sample.items() if value is not None}
        taken["machine"] = machine_busy_seconds()
        return taken

    def used(self, before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        """CPU seconds per process over an interval, plus `other`: the rest of the machine."""
        used = {name: after[name] - before[name] for name in before if name in after}
        machine = used.pop("machine")
        used["other"] = max(0.0, machine - sum(used.values()))
        return used


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
    max_docs: int = 0
    pass_seconds: float = 0.0
    find_seconds: float = 0.0
    publish_seconds: float = 0.0
    remove_seconds: float = 0.0
    remove_statements: int = 0
    remove_commands: int = 0
    point_reads: int = 0
    scans: int = 0
    reads: int = 0  # scans + batches of point reads
    done_at: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class _TimedCursor:
    def __init__(self, cursor: Any, meter: RelayMeter) -> None:
        self._cursor = cursor
        self._meter = meter

    def limit(self, n: int) -> _TimedCursor:
        self._cursor = self._cursor.limit(n)
        return self

    async def to_list(self) -> list[dict[str, Any]]:
        started = time.monotonic()
        documents: list[dict[str, Any]] = await self._cursor.to_list()
        self._meter.find_seconds += time.monotonic() - started
        self._meter.scans += 1
        self._meter.reads += 1
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

    async def bulk_write(self, requests: list[Any], **kwargs: Any) -> None:
        started = time.monotonic()
        size = self._chunk or len(requests)
        for i in range(0, len(requests), size):
            await self._inner.bulk_write(requests[i : i + size], **kwargs)
            self._meter.remove_commands += 1
        self._meter.remove_statements += len(requests)
        self._meter.remove_seconds += time.monotonic() - started


class MeasuredRelay(OutboxRelay):
    def __init__(self, *args: Any, meter: RelayMeter, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.meter = meter

    async def run_once(self) -> int:
        started = time.monotonic()
        relayed = await self._pass()
        meter = self.meter
        meter.pass_seconds += time.monotonic() - started
        meter.passes += 1
        meter.empty_passes += relayed == 0
        meter.max_docs = max(meter.max_docs, relayed)
        meter.relayed += relayed
        if meter.done_at is None and meter.relayed >= meter.target:
            meter.done_at = time.monotonic()
            meter.done.set()
        return relayed

    async def _pass(self) -> int:
        return await super().run_once()

    async def _publish(self, documents: list[dict[str, Any]]) -> None:
        started = time.monotonic()
        await super()._publish(documents)
        self.meter.publish_seconds += time.monotonic() - started


class HintedRelay(MeasuredRelay):
    """Proposal: `on_write` passes the written document's id; the relay reads hinted documents
    by `_id` (point reads; FerretDB's SQLite backend pushes down only `_id` equality, every other
    filter is a full scan of the collection) and scans at most once per poll interval, for
    events a crashed process left behind."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._hints: dict[Any, None] = {}  # insertion-ordered set
        self._last_scan = -math.inf

    def hint(self, document_id: Any) -> None:
        self._hints[document_id] = None
        self.nudge()

    async def _pass(self) -> int:
        if not self._hints:
            if time.monotonic() - self._last_scan < self._poll_interval:
                return 0
            self._last_scan = time.monotonic()
            return await super()._pass()
        (collection,) = self._collections
        ids = list(itertools.islice(self._hints, self._batch_size))
        for document_id in ids:
            del self._hints[document_id]
        try:
            return await self._relay_documents(collection, ids)
        except BaseException:
            self._hints.update(dict.fromkeys(ids))  # retried by the next pass
            raise

    async def _relay_documents(self, collection: Any, ids: list[Any]) -> int:
        started = time.monotonic()
        found = await asyncio.gather(*(collection.find_one({"_id": i}, {OUTBOX: 1}) for i in ids))
        self.meter.find_seconds += time.monotonic() - started
        self.meter.point_reads += len(ids)
        self.meter.reads += 1
        documents = [d for d in found if d is not None and d.get(OUTBOX)]
        if not documents:
            return 0
        await self._publish(documents)
        removals = [
            UpdateOne({"_id": d["_id"]}, {"$pullAll": {OUTBOX: d[OUTBOX]}}) for d in documents
        ]
        async with document_locks(collection, [d["_id"] for d in documents]):
            await collection.bulk_write(removals, ordered=False)
        return sum(len(d[OUTBOX]) for d in documents)


class HintingRepository(IncidentRepository):
    hint: Any = None

    async def add(self, aggregate: Incident, *args: Any, **kwargs: Any) -> None:
        await super().add(aggregate, *args, **kwargs)
        if self.hint is not None:
            self.hint(aggregate.id)


class UnrelayedRepository(IncidentRepository):
    collection_name = "incidents_unrelayed"


# ---------------------------------------------------------------------------------------------
# Phases


@dataclass
class Phase:
    name: str
    events: int
    seconds: float = float("nan")
    write_latencies: list[float] = field(default_factory=list)
    e2e_latencies: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    duplicates: int = 0
    missing: int = 0
    completed: bool = False
    note: str = ""

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.completed and self.seconds > 0 else float("nan")


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
    ctx: Context, phase: Phase, work: Any, starts: dict[str, float] | None = None
) -> None:
    """Run `work` (a coroutine returning its elapsed seconds) under the phase timeout with the
    consumer expecting this phase's records and the CPU meter running."""
    expect = starts is not None
    if expect:
        ctx.tail.expect([item.envelope.id for item in ctx.items])
    before = ctx.cpu.snapshot()
    try:
        async with asyncio.timeout(ctx.args.timeout):
            phase.seconds = await work
        phase.completed = True
    except TimeoutError:
        phase.note = f"did not finish within --timeout {ctx.args.timeout:.0f}s"
    finally:
        phase.cpu = ctx.cpu.used(before, ctx.cpu.snapshot())
    if expect and starts is not None:
        seen, phase.duplicates, _ = await ctx.tail.collect(15 if phase.completed else 2)
        phase.missing = len(ctx.items) - len(seen)
        phase.e2e_latencies = [t - starts[i] for i, t in seen.items() if i in starts]


async def pipelined_sends(ctx: Context) -> Phase:
    phase = Phase("A raw pipelined sends", len(ctx.items))
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
    phase = Phase(f"B direct publish, {ctx.args.writers} tasks", len(ctx.items))
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
    queue = iter(items)

    async def writer() -> None:
        for item in queue:
            started = starts[item.envelope.id] = time.monotonic()
            await repo.add(item.incident, [item.envelope], append={"timeline": [item.timeline]})
            phase.write_latencies.append(time.monotonic() - started)

    await asyncio.gather(*(writer() for _ in range(writers)))


async def store_only(ctx: Context) -> Phase:
    phase = Phase(f"C store only, {ctx.args.writers} writers", len(ctx.items))
    repo = UnrelayedRepository(ctx.database)
    await repo.ensure_indexes()

    async def work() -> float:
        begun = time.monotonic()
        await add_all(repo, ctx.items, ctx.args.writers, phase, {})
        return time.monotonic() - begun

    await measured(ctx, phase, work())
    await ctx.database.drop_collection(repo.collection_name)
    return phase


async def outbox(ctx: Context, batch_size: int, chunk: int | None) -> tuple[Phase, RelayMeter]:
    args = ctx.args
    phase = Phase(f"S outbox + relay ({args.variant}), {args.writers} writers", len(ctx.items))
    meter = RelayMeter(target=len(ctx.items))
    relay_class = HintedRelay if args.variant == "hinted" else MeasuredRelay
    repo = HintingRepository(ctx.database, on_write=lambda: relay.nudge())
    await repo.ensure_indexes()
    if args.preload:
        await preload(repo, args.preload, traced=args.tracing == "sdk")
    relay = relay_class(
        ctx.bus,
        [TimedCollection(repo.collection, meter, chunk)],
        poll_interval=SERVICE_DEFAULTS["relay_poll_interval"].default,
        batch_size=batch_size,
        name="bench-outbox-relay",
        meter=meter,
    )
    if isinstance(relay, HintedRelay):
        repo.hint = relay.hint
    starts: dict[str, float] = {}
    await relay.start()

    async def work() -> float:
        begun = time.monotonic()
        await add_all(repo, ctx.items, args.writers, phase, starts)
        await meter.done.wait()
        assert meter.done_at is not None
        return meter.done_at - begun

    try:
        await measured(ctx, phase, work(), starts)
    finally:
        await relay.stop()
    if phase.completed:
        pending = await repo.collection.count_documents({f"{OUTBOX}.0": {"$exists": True}})
        if pending:
            phase.note = f"{pending} documents still have pending events"
    else:
        phase.note += f"; relayed {meter.relayed} of {meter.target} in {meter.passes} passes"
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

    def add(self, figure: str, value: float, baseline: float, against: str, unit: str) -> None:
        ratio = value / baseline if baseline and not math.isnan(baseline) else float("nan")
        self.rows.append(
            (figure, f"{value:,.{_digits(value)}f}", f"{baseline:,.{_digits(baseline)}f}",
             f"{ratio:.3f}", f"{against} ({unit})")
        )  # fmt: skip

    def print(self, title: str) -> None:
        head = ("figure", "value", "baseline", "ratio", "baseline is")
        widths = [max(len(r[i]) for r in [head, *self.rows]) for i in range(5)]
        print(f"\n{title}")
        for n, row in enumerate([head, *self.rows]):
            cells = [row[0].ljust(widths[0]), *(row[i].rjust(widths[i]) for i in (1, 2, 3))]
            print("  " + "  ".join(cells) + "  " + row[4])
            if n == 0:
                print("  " + "  ".join("-" * w for w in widths[:4]) + "  " + "-" * widths[4])


def _digits(value: float) -> int:
    return 0 if math.isnan(value) or abs(value) >= 100 else 2 if abs(value) >= 1 else 3


def report(
    ctx: Context, a: Phase, b: Phase, c: Phase, s: Phase, meter: RelayMeter, batch: int
) -> None:
    for phase in (a, b, c, s):
        status = "ok" if phase.completed else "INCOMPLETE"
        extra = []
        if phase.missing:
            extra.append(f"{phase.missing} records not seen by the consumer")
        if phase.duplicates:
            extra.append(f"{phase.duplicates} duplicate records")
        if phase.note:
            extra.append(phase.note)
        print(f"  {phase.name}: {status} {phase.seconds:.2f}s {'; '.join(extra)}")

    main = Table()
    main.add("throughput, events/s", s.rate, a.rate, "A raw pipelined sends", "events/s")
    for q in (50, 99):
        main.add(
            f"write latency p{q}, ms (add)",
            ms(percentile(s.write_latencies, q)),
            ms(percentile(b.write_latencies, q)),
            "B send->ack",
            "ms",
        )
    for q in (50, 99):
        main.add(
            f"end-to-end p{q}, ms (add start->consumer)",
            ms(percentile(s.e2e_latencies, q)),
            ms(percentile(b.e2e_latencies, q)),
            "B send->consumer",
            "ms",
        )
    main.print(f"Outbox throughput (aim: ratio >= {AIM_RATIO} for throughput)")

    diag = Table()
    diag.add("B direct publish, events/s", b.rate, a.rate, "A", "events/s")
    diag.add("C store only (no relay), events/s", c.rate, a.rate, "A", "events/s")
    diag.add("S outbox + relay, events/s", s.rate, c.rate, "C store only", "events/s")
    for q in (50, 99):
        diag.add(
            f"C add() p{q}, ms",
            ms(percentile(c.write_latencies, q)),
            ms(percentile(b.write_latencies, q)),
            "B send->ack",
            "ms",
        )
    diag.add("A end-to-end p50, ms (queued sends)", ms(percentile(a.e2e_latencies, 50)),
             ms(percentile(b.e2e_latencies, 50)), "B send->consumer", "ms")  # fmt: skip
    diag.print("Where the time goes: the store's ceiling")

    relay = Table()
    wall = s.seconds if s.completed else float("nan")
    busy = meter.pass_seconds
    relay.add("relay busy (in passes), s", busy, wall, "S wall time", "s")
    relay.add("  outbox reads (scan/point), s", meter.find_seconds, wall, "S wall time", "s")
    relay.add("  publish (encode, span, acks), s", meter.publish_seconds, wall, "S wall time", "s")
    relay.add("  removals (bulk_write), s", meter.remove_seconds, wall, "S wall time", "s")
    other = busy - meter.find_seconds - meter.publish_seconds - meter.remove_seconds
    relay.add("  other (locks, bookkeeping), s", other, wall, "S wall time", "s")
    full = max(1, meter.passes - meter.empty_passes)
    relay.add("events per non-empty pass", meter.relayed / full, batch, "batch size", "events")
    relay.add(
        "removal per statement, ms",
        ms(meter.remove_seconds / max(1, meter.remove_statements)),
        ms(meter.publish_seconds / max(1, meter.relayed)),
        "publish per event",
        "ms",
    )
    relay.add(
        "outbox read per read, ms",
        ms(meter.find_seconds / max(1, meter.reads)),
        ms(meter.publish_seconds / full),
        "publish per non-empty pass",
        "ms",
    )
    relay.print(
        f"Relay passes: {meter.passes} ({meter.empty_passes} empty), largest "
        f"{meter.max_docs} events, {meter.scans} scans, {meter.point_reads} point reads, "
        f"{meter.remove_commands} removal commands"
    )

    cpu = Table()
    for name in sorted(set(s.cpu) | set(a.cpu)):
        cpu.add(
            f"{name}, CPU ms per event",
            ms(s.cpu.get(name, 0) / s.events),
            ms(a.cpu.get(name, 0) / a.events),
            "A",
            "ms",
        )
    for name in sorted(set(s.cpu)):
        cores = s.cpu[name] / s.seconds if s.completed and s.seconds else float("nan")
        cpu.add(f"{name}, cores busy during S", cores, os.cpu_count() or 1, "cores", "cores")
    cpu.print("CPU (this process = writers + relay; tail = consumer process)")


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
    parser.add_argument(
        "--variant", choices=("stock", "chunked", "hinted"), default="stock", help="relay"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help=f"relay batch size (service default {SERVICE_DEFAULTS['relay_batch_size'].default}; "
        f"stock on FerretDB: {FERRETDB_MAX_UPDATES}, as larger batches hang it)",
    )
    parser.add_argument(
        "--update-chunk", type=int, default=50, help="chunked/hinted: statements per bulk_write"
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
    parser.add_argument("--timeout", type=float, default=300, help="per phase, seconds (300)")
    args = parser.parse_args(argv)
    if args.events < 1 or args.writers < 1 or args.update_chunk < 1:
        parser.error("--events, --writers and --update-chunk must be positive")
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


async def run(args: argparse.Namespace) -> int:
    install_tracing(args.tracing)
    unique = uuid7().replace("-", "")[-12:]
    topic = f"bench.outbox.{unique}"
    database_name = f"bench_outbox_{unique}"
    client = create_client(args.mongo, app_name="bench-outbox")
    store, ferretdb = await server_description(client)
    default_batch = SERVICE_DEFAULTS["relay_batch_size"].default
    if args.batch_size is None:
        args.batch_size = (
            FERRETDB_MAX_UPDATES if ferretdb and args.variant == "stock" else default_batch
        )
    chunk = None if args.variant == "stock" else args.update_chunk
    if ferretdb and (chunk or args.batch_size) > FERRETDB_MAX_UPDATES:
        print(
            f"warning: removal commands of up to {chunk or args.batch_size} statements; "
            f"{store} hangs on >= 100 (the phase then times out)",
            file=sys.stderr,
        )

    print(
        f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}; store: {store} at {args.mongo}; "
        f"Kafka at {args.kafka}"
    )
    print(
        f"run: {args.events} events, {args.writers} writers, topic {topic} "
        f"({args.partitions} partitions), relay {args.variant} batch {args.batch_size}"
        + (f" chunk {chunk}" if chunk else "")
        + f", tracing {args.tracing}, preload {args.preload}, database {database_name}"
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
        await tail.receive(60)  # ready
        traced = args.tracing == "sdk"
        items = workload(args.events, first_number=1, traced=traced)
        database = client[database_name]
        cpu = CpuMeter(
            {
                "bench": os.getpid(),
                "tail": tail.process.pid,
                "kafka": listening_pid(args.kafka.split(",")[0], 9092),
                "store": listening_pid(args.mongo, 27017),
            }
        )
        ctx = Context(args, topic, producer, bus, database, tail, cpu, items)
        with created_events_to(topic):
            await warm_up(ctx, traced)
            a = await pipelined_sends(ctx)
            b = await direct_sends(ctx)
            c = await store_only(ctx)
            s, meter = await outbox(ctx, args.batch_size, chunk)
        print("\nphases:")
        report(ctx, a, b, c, s, meter, args.batch_size)
        ok = all(p.completed and not p.missing for p in (a, b, c, s))
        return 0 if ok else 1
    finally:
        if tail is not None:
            tail.close()
        await producer.stop()
        await bus.stop()
        # Dropping also releases a FerretDB database stuck on an oversized update command.
        with contextlib.suppress(Exception):
            await client.drop_database(database_name)
        await client.close()
        if topic_created:
            with contextlib.suppress(Exception):
                await delete_topic(args.kafka, topic)


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


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
