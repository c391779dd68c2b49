"""Change conflict checks on the real local stack (MongoDB-compatible server).

    python -m bench.change_conflicts --changes 10000 --checks 500 \
        --mongo mongodb://127.0.0.1:27017

One bounded run in a scratch database (dropped at the end). Every figure is printed beside a
baseline measured in the same run, on the same candidates, as a ratio.

Seed: `--changes` scheduled changes written through `ChangeRepository.to_document` (plus the
empty `outbox` and `timeline` arrays `add` writes) with insert_many, then
`ChangeRepository.ensure_indexes()`. About 2,000 configuration items (mildly skewed: a few hot
items carry many changes), 1-3 items per change, windows of 1-4 hours starting on a 15-minute
grid over 90 days.

Candidates: `--checks` new changes drawn from the same distributions; one in four is placed next
to a seeded change (one of its items, start within +-3 h) so that the conflict path is exercised.

S. subject, exactly what `handlers.schedule_context` + `scheduling.check_schedule` do:
   `repo.holding(candidate.configuration_items, candidate.window)` then
   `conflicting(candidate, found)`, one check at a time;
B. baseline, naive full scan: load every holding change (`repo.find` on status, limit 20,000)
   and run `conflicting` over all of them, per check;
M. reference: `conflicting(candidate, all seeded changes)` in memory (no database).
S and B alternate per candidate (S-B, then B-S) so drift on a shared machine hits both alike;
both must name the same conflicting changes for every candidate (asserted).

Variants (`--variant`), proposals measured beside the stock code, which stays unchanged:

- `stock`: S, B and M only;
- `slots`: also P, a prototype of a per-item-per-day slot collection (`change_slots`, `_id` =
  "<item>|<UTC day>", `holds` = [{change, start, end}] of the holding changes touching that item
  that day). A check reads its keys by `_id` equality (the one filter FerretDB 1.x pushes down
  to SQLite), keeps the holds whose window overlaps, loads those changes by `_id` (`repo.get`)
  and runs the same `conflicting`. Also measured: the write it adds, one `$push` upsert per
  (item, day) of a change when it is scheduled, against the version-guarded update by `_id`
  that `repo.save` does anyway.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from services.changes.domain.model import (
    Approval,
    Change,
    Plan,
    Requirement,
    Risk,
    RiskAnswers,
    Window,
)
from services.changes.domain.scheduling import HOLDING_STATUSES, conflicting
from services.changes.store import ChangeRepository
from shared.ids import uuid7
from shared.store.mongo import create_client

EPOCH = datetime(2027, 1, 4, tzinfo=UTC)  # a Monday
DAYS = 90
ITEM_KINDS = ("srv", "db", "vm", "lb", "sw", "app", "fw", "stor")
NAIVE_LIMIT = 20_000
INSERT_BATCH = 500
WARMUP = 5
NEAR_EVERY = 4  # one candidate in NEAR_EVERY is placed next to a seeded change
SLOTS = "change_slots"


# ---------------------------------------------------------------------------------------------
# Statistics and CPU accounting


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process (0 when it cannot be read)."""
    if pid is None:
        return 0.0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def machine_busy_seconds() -> float:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


class Busy:
    """Cores busy over a pass: this process, the store (all its clients) and everything else
    (other work sharing the machine, e.g. colleagues' benchmarks)."""

    def __init__(self, store_pid: int | None) -> None:
        self.store_pid = store_pid
        self.start = self._sample()

    def _sample(self) -> tuple[float, float, float, float]:
        return (time.monotonic(), machine_busy_seconds(), time.process_time(),
                cpu_seconds(self.store_pid))  # fmt: skip

    def summary(self) -> str:
        end = self._sample()
        wall, machine, bench, store = (e - s for e, s in zip(end, self.start, strict=True))
        others = max(0.0, machine - bench - store)
        return (
            f"{wall:.0f}s, cores busy: bench {bench / wall:.2f}, store {store / wall:.2f}, "
            f"others {others / wall:.2f} of {os.cpu_count()}; load average "
            + " ".join(f"{x:.2f}" for x in os.getloadavg())
        )


@dataclass
class Series:
    """Per-check wall times, CPU of this process and of the store, and rows read."""

    name: str
    store_pid: int | None
    seconds: list[float] = field(default_factory=list)
    query_seconds: list[float] = field(default_factory=list)
    bench_cpu: float = 0.0
    store_cpu: float = 0.0
    rows: int = 0

    async def timed(
        self, check: Callable[[Change], Awaitable[tuple[list[Change], int, float]]], c: Change
    ) -> list[Change]:
        cpu0, store0 = time.process_time(), cpu_seconds(self.store_pid)
        start = time.perf_counter()
        clashes, rows, query = await check(c)
        self.seconds.append(time.perf_counter() - start)
        self.bench_cpu += time.process_time() - cpu0
        self.store_cpu += cpu_seconds(self.store_pid) - store0
        self.query_seconds.append(query)
        self.rows += rows
        return clashes

    @property
    def rate(self) -> float:
        total = sum(self.seconds)
        return len(self.seconds) / total if total else float("nan")

    def per_check(self, value: float) -> float:
        return value / len(self.seconds) if self.seconds else float("nan")


# ---------------------------------------------------------------------------------------------
# Workload


@dataclass(frozen=True)
class Catalog:
    items: tuple[str, ...]
    weights: tuple[float, ...]

    @classmethod
    def build(cls, count: int) -> Catalog:
        items = tuple(f"{ITEM_KINDS[i % len(ITEM_KINDS)]}-{i:05d}" for i in range(count))
        # Mild power law: the hottest item carries ~25x the changes of the median one.
        return cls(items, tuple(1 / (rank + 10) ** 0.8 for rank in range(count)))

    def pick(self, rng: random.Random, n: int) -> tuple[str, ...]:
        chosen: list[str] = []
        while len(chosen) < n:
            (item,) = rng.choices(self.items, self.weights)
            if item not in chosen:
                chosen.append(item)
        return tuple(chosen)


def random_window(rng: random.Random) -> Window:
    start = EPOCH + timedelta(minutes=15 * rng.randrange(DAYS * 96))
    return Window(start, start + timedelta(minutes=rng.choice(range(60, 241, 30))))


def make_change(
    rng: random.Random, n: int, items: tuple[str, ...], window: Window, status: str
) -> Change:
    created = window.start - timedelta(days=rng.randint(3, 20))
    requester = f"user{rng.randrange(400):03d}@example.com"
    approved = status == "scheduled"
    return Change(
        id=uuid7(),
        number=f"CHG{n:07d}",
        title=f"Patch and restart {items[0]} (maintenance {n % 97})",
        description="Apply the vendor's cumulative update, restart the service and verify "
        "the health checks; the service is degraded for a few minutes during the restart.",
        change_type="normal",
        status=status,  # type: ignore[arg-type]
        requester=requester,
        created_at=created,
        updated_at=created + timedelta(days=1),
        version=6 if approved else 1,
        implementer=f"ops{rng.randrange(60):02d}@example.com",
        services=(f"service-{rng.randrange(150):03d}",),
        configuration_items=items,
        plan=Plan(
            implementation="1. Drain traffic. 2. Apply the update. 3. Restart. 4. Re-enable.",
            backout="Reinstall the previous package version from the local cache and restart.",
            test="Synthetic checks green for 15 minutes; error rate below 0.1%.",
            backout_tested=True,
        ),
        window=window,
        answers=RiskAnswers(user_impact="medium", complexity="low"),
        risk=Risk("medium", 4, ("user impact medium", "outside a maintenance window"))
        if approved
        else None,
        requirements=(Requirement("cab-infrastructure", 1, ("alice", "bob", "carol")),)
        if approved
        else (),
        approvals=(
            Approval("bob", "cab-infrastructure", "approve", "ok", created + timedelta(days=1)),
        )
        if approved
        else (),
    )


def seeded_changes(rng: random.Random, catalog: Catalog, count: int) -> list[Change]:
    changes = []
    for n in range(1, count + 1):
        items = catalog.pick(rng, rng.choices((1, 2, 3), (50, 35, 15))[0])
        changes.append(make_change(rng, n, items, random_window(rng), "scheduled"))
    return changes


def candidates(
    rng: random.Random, catalog: Catalog, seeded: Sequence[Change], count: int
) -> list[Change]:
    found = []
    for i in range(count):
        n = 9_000_000 + i
        if i % NEAR_EVERY == NEAR_EVERY - 1:
            other = rng.choice(seeded)
            assert other.window is not None
            items: tuple[str, ...] = (rng.choice(other.configuration_items),)
            if rng.random() < 0.5:
                items += tuple(x for x in catalog.pick(rng, 1) if x not in items)
            start = other.window.start + timedelta(minutes=15 * rng.randint(-12, 12))
            window = Window(start, start + timedelta(minutes=rng.choice(range(60, 241, 30))))
        else:
            items = catalog.pick(rng, rng.choices((1, 2, 3), (50, 35, 15))[0])
            window = random_window(rng)
        found.append(make_change(rng, n, items, window, "assessment"))
    return found


# ---------------------------------------------------------------------------------------------
# The checks


def ids(changes: Sequence[Change]) -> list[str]:
    return sorted(c.id for c in changes)


async def indexed_check(repo: ChangeRepository, c: Change) -> tuple[list[Change], int, float]:
    """What the service does: the index-backed query, then the domain rule."""
    assert c.window is not None
    start = time.perf_counter()
    found = await repo.holding(c.configuration_items, c.window)
    query = time.perf_counter() - start
    return conflicting(c, found), len(found), query


async def naive_check(repo: ChangeRepository, c: Change) -> tuple[list[Change], int, float]:
    """Every holding change loaded, then the same rule over all of them."""
    start = time.perf_counter()
    everything, _ = await repo.find(
        {"status": {"$in": sorted(HOLDING_STATUSES)}}, limit=NAIVE_LIMIT, count=False
    )
    query = time.perf_counter() - start
    return conflicting(c, everything), len(everything), query


def memory_check(everything: Sequence[Change]) -> Callable[[Change], Awaitable[Any]]:
    async def check(c: Change) -> tuple[list[Change], int, float]:
        return conflicting(c, everything), len(everything), 0.0

    return check


def days_of(window: Window) -> list[date]:
    first, last = window.start.date(), (window.end - timedelta(microseconds=1)).date()
    return [first + timedelta(days=d) for d in range((last - first).days + 1)]


def slot_keys(items: Sequence[str], window: Window) -> list[str]:
    return [f"{item}|{day.isoformat()}" for item in items for day in days_of(window)]


def slot_entry(c: Change) -> dict[str, Any]:
    assert c.window is not None
    return {"change": c.id, "start": c.window.start, "end": c.window.end}


def slot_documents(changes: Sequence[Change]) -> list[dict[str, Any]]:
    slots: dict[str, list[dict[str, Any]]] = {}
    for c in changes:
        assert c.window is not None
        for key in slot_keys(c.configuration_items, c.window):
            slots.setdefault(key, []).append(slot_entry(c))
    return [{"_id": key, "holds": holds} for key, holds in slots.items()]


async def slot_check(
    repo: ChangeRepository, slots: Any, c: Change
) -> tuple[list[Change], int, float]:
    """Prototype: slot documents by `_id`, then the overlapping changes by `_id`, then the rule."""
    assert c.window is not None
    window = c.window
    start = time.perf_counter()
    documents = await asyncio.gather(
        *(slots.find_one({"_id": key}) for key in slot_keys(c.configuration_items, window))
    )
    wanted = {
        hold["change"]
        for document in documents
        if document is not None
        for hold in document["holds"]
        if hold["start"] < window.end and hold["end"] > window.start
    }
    loaded = await asyncio.gather(*(repo.get(change_id) for change_id in sorted(wanted)))
    found = [x for x in loaded if x is not None]
    query = time.perf_counter() - start
    return conflicting(c, found), len(documents) + len(found), query


# ---------------------------------------------------------------------------------------------
# Report


def ms(seconds: float) -> float:
    return seconds * 1000


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, str]] = []

    def add(self, figure: str, value: float, baseline: float, against: str) -> None:
        ratio = value / baseline if baseline and not math.isnan(baseline) else float("nan")
        self.rows.append(
            (figure, f"{value:,.{_digits(value)}f}", f"{baseline:,.{_digits(baseline)}f}",
             f"{ratio:.3f}" if ratio < 100 else f"{ratio:,.0f}", against)
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
    if math.isnan(value) or abs(value) >= 100:
        return 0
    return 2 if abs(value) >= 1 else 3 if abs(value) >= 0.01 else 4


def latency_rows(table: Table, s: Series, b: Series, against: str) -> None:
    for q, label in ((50, "p50"), (99, "p99"), (100, "max")):
        table.add(
            f"{s.name} per check {label}, ms",
            ms(percentile(s.seconds, q)),
            ms(percentile(b.seconds, q)),
            f"{b.name} {label}",
        )
    table.add(f"{s.name} checks/s (one at a time)", s.rate, b.rate, f"{b.name} checks/s")


def report(s: Series, b: Series, m: Series, p: Series | None, changes: int) -> None:
    main = Table()
    latency_rows(main, s, b, "B")
    main.add(
        "S query part p50, ms (holding)",
        ms(percentile(s.query_seconds, 50)),
        ms(percentile(b.query_seconds, 50)),
        "B find p50",
    )
    main.add("S documents read per check", s.per_check(s.rows), b.per_check(b.rows), "B")
    main.add("store CPU per check, ms", ms(s.per_check(s.store_cpu)),
             ms(b.per_check(b.store_cpu)), "B")  # fmt: skip
    main.add("bench CPU per check, ms", ms(s.per_check(s.bench_cpu)),
             ms(b.per_check(b.bench_cpu)), "B")  # fmt: skip
    main.print("Conflict checks: S = holding() + conflicting(), B = naive full scan")

    ref = Table()
    ref.add(
        f"M conflicting() over {changes:,} in memory p50, ms",
        ms(percentile(m.seconds, 50)),
        ms(percentile(b.seconds, 50)),
        "B p50",
    )
    ref.add("M p99, ms", ms(percentile(m.seconds, 99)), ms(percentile(b.seconds, 99)), "B p99")
    ref.add("M p50 against S, ms", ms(percentile(m.seconds, 50)),
            ms(percentile(s.seconds, 50)), "S p50")  # fmt: skip
    ref.print("Reference: the rule alone, no database")

    if p is not None:
        slots = Table()
        latency_rows(slots, p, b, "B")
        for q, label in ((50, "p50"), (99, "p99")):
            slots.add(
                f"P per check {label}, ms",
                ms(percentile(p.seconds, q)),
                ms(percentile(s.seconds, q)),
                f"S {label}",
            )
        slots.add("P documents read per check", p.per_check(p.rows), s.per_check(s.rows), "S")
        slots.add("store CPU per check, ms", ms(p.per_check(p.store_cpu)),
                  ms(s.per_check(s.store_cpu)), "S")  # fmt: skip
        slots.print("Prototype P = per-item-per-day slots read by _id (--variant slots)")


# ---------------------------------------------------------------------------------------------
# Main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.change_conflicts", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--changes", type=int, default=10_000, help="seeded changes (10000)")
    parser.add_argument("--checks", type=int, default=500, help="conflict checks (500)")
    parser.add_argument("--items", type=int, default=2_000, help="configuration items (2000)")
    parser.add_argument(
        "--mongo",
        default=os.environ.get("ITSM_MONGO_URL", "mongodb://127.0.0.1:27017"),
        help="MongoDB URL (ITSM_MONGO_URL, else mongodb://127.0.0.1:27017)",
    )
    parser.add_argument("--variant", choices=("stock", "slots"), default="stock")
    parser.add_argument("--seed", type=int, default=1, help="random seed (1)")
    parser.add_argument(
        "--slot-writes", type=int, default=200, help="slots: changes whose slot upserts are timed"
    )
    parser.add_argument(
        "--timeout", type=float, default=7200, help="bound on the measured checks, seconds (7200)"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.changes <= NAIVE_LIMIT:
        parser.error(f"--changes must be 1..{NAIVE_LIMIT} (the naive scan's limit)")
    if args.checks < 1 or args.items < 3:
        parser.error("--checks must be positive and --items at least 3")
    return args


async def server_description(client: Any) -> str:
    info = await client.admin.command("buildInfo")
    if "ferretdbVersion" in info:
        return f"FerretDB {info['ferretdbVersion']} (wire {info.get('version')})"
    return f"MongoDB {info.get('version')}"


async def explain(database: Any, c: Change) -> str:
    assert c.window is not None
    query = {
        "configuration_items": {"$in": list(c.configuration_items)},
        "status": {"$in": sorted(HOLDING_STATUSES)},
        "window.start": {"$lt": c.window.end},
        "window.end": {"$gt": c.window.start},
    }
    try:
        plan = await database.command("explain", {"find": ChangeRepository.collection_name,
                                                  "filter": query})  # fmt: skip
    except Exception as error:  # the plan is informative only
        return f"explain failed: {error}"
    if "filterPushdown" in plan:
        return (
            f"filterPushdown={plan['filterPushdown']}, "
            f"plan={plan.get('queryPlanner', {}).get('Plan')}"
        )
    winning = plan.get("queryPlanner", {}).get("winningPlan", {})
    return f"winningPlan={winning}"


async def settle(store_pid: int | None, idle: float = 0.1, limit: float = 15) -> float:
    """Wait until the store uses less than `idle` cores (at most `limit` seconds)."""
    start = time.monotonic()
    while store_pid is not None and time.monotonic() - start < limit:
        before = cpu_seconds(store_pid)
        await asyncio.sleep(0.5)
        if (cpu_seconds(store_pid) - before) / 0.5 < idle:
            break
    return time.monotonic() - start


async def seed(database: Any, repo: ChangeRepository, seeded: Sequence[Change]) -> float:
    start = time.perf_counter()
    for i in range(0, len(seeded), INSERT_BATCH):
        documents = []
        for c in seeded[i : i + INSERT_BATCH]:
            document = repo.to_document(c)
            document["outbox"] = []
            document["timeline"] = []
            documents.append(document)
        await repo.collection.insert_many(documents, ordered=False)
    await repo.ensure_indexes()
    return time.perf_counter() - start


async def slot_writes(
    repo: ChangeRepository,
    slots: Any,
    changes: Sequence[Change],
    saved: Sequence[Change],
    store_pid: int | None,
) -> tuple[Series, Series]:
    """Time the slot upserts a scheduled change would add, beside the save it does anyway
    (`saved`: seeded changes, each saved once with its version advanced)."""
    w = Series("W", store_pid)
    u = Series("U", store_pid)

    async def upserts(c: Change) -> tuple[list[Change], int, float]:
        assert c.window is not None
        keys = slot_keys(c.configuration_items, c.window)
        for key in keys:
            await slots.update_one({"_id": key}, {"$push": {"holds": slot_entry(c)}}, upsert=True)
        return [], len(keys), 0.0

    async def save(c: Change) -> tuple[list[Change], int, float]:
        # The write that scheduling does anyway: ChangeRepository.save, version-guarded.
        after = replace(c, version=c.version + 1, updated_at=c.updated_at + timedelta(hours=1))
        await repo.save(after, c.version, [])
        return [], 1, 0.0

    for new, old in zip(changes, saved, strict=False):
        await u.timed(save, old)
        await w.timed(upserts, new)
    return w, u


async def run(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    catalog = Catalog.build(args.items)
    unique = uuid7().replace("-", "")[-12:]
    database_name = f"bench_conflicts_{unique}"
    client = create_client(args.mongo, app_name="bench-change-conflicts", timeout_ms=30_000)
    try:
        store = await server_description(client)
        store_pid = listening_pid(args.mongo, 27017)
        print(
            f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
            f"Python {platform.python_version()}; store: {store} at {args.mongo}"
            + ("" if store_pid else " (store CPU not measured: not a local process)")
        )
        print(
            f"run: {args.changes} scheduled changes on {args.items} items over {DAYS} days, "
            f"{args.checks} checks, variant {args.variant}, seed {args.seed}, "
            f"database {database_name}"
        )
        database = client[database_name]
        repo = ChangeRepository(database)
        seeded = seeded_changes(rng, catalog, args.changes)
        picked = candidates(rng, catalog, seeded, args.checks)
        took = await seed(database, repo, seeded)
        print(f"seeded {args.changes} changes + indexes in {took:.1f}s")
        slots = None
        if args.variant == "slots":
            slots = database[SLOTS]
            start = time.perf_counter()
            documents = slot_documents(seeded)
            for i in range(0, len(documents), INSERT_BATCH):
                await slots.insert_many(documents[i : i + INSERT_BATCH], ordered=False)
            print(f"seeded {len(documents)} slot documents in {time.perf_counter() - start:.1f}s")
        print(f"holding() plan: {await explain(database, picked[0])}")

        everything, _ = await repo.find({}, limit=NAIVE_LIMIT, count=False)
        assert len(everything) == args.changes
        s, b, m = Series("S", store_pid), Series("B", store_pid), Series("M", None)
        p = Series("P", store_pid) if slots is not None else None

        def indexed(c: Change) -> Awaitable[tuple[list[Change], int, float]]:
            return indexed_check(repo, c)

        def naive(c: Change) -> Awaitable[tuple[list[Change], int, float]]:
            return naive_check(repo, c)

        def slotted(c: Change) -> Awaitable[tuple[list[Change], int, float]]:
            return slot_check(repo, slots, c)

        for c in picked[:WARMUP]:  # connections, code paths, caches: off the clock
            await indexed(c)
            await naive(c)
            if slots is not None:
                await slotted(c)

        deadline = time.monotonic() + args.timeout
        with_conflicts = 0
        expected: dict[str, list[str]] = {}
        busy = Busy(store_pid)
        for i, c in enumerate(picked):
            if time.monotonic() > deadline:
                print(f"timeout: stopped after {i} of {args.checks} checks", file=sys.stderr)
                break
            if i % 2 == 0:
                subject = await s.timed(indexed, c)
                baseline = await b.timed(naive, c)
            else:
                baseline = await b.timed(naive, c)
                subject = await s.timed(indexed, c)
            memory = await m.timed(memory_check(everything), c)
            assert ids(subject) == ids(baseline) == ids(memory), c.number
            expected[c.id] = ids(subject)
            with_conflicts += bool(subject)
            if (i + 1) % 50 == 0:
                print(f"  {i + 1} checks, S p50 {ms(percentile(s.seconds, 50)):,.0f} ms, "
                      f"B p50 {ms(percentile(b.seconds, 50)):,.0f} ms", flush=True)  # fmt: skip
        done = len(s.seconds)
        print(
            f"S/B/M pass: {done} checks, {with_conflicts} candidates with conflicts; S, B and M "
            f"named the same conflicting changes for every candidate; {busy.summary()}"
        )
        if p is not None:  # its own pass: not right behind a full scan the store still digests
            print(f"store settled after {await settle(store_pid):.1f}s")
            busy = Busy(store_pid)
            for c in picked[:done]:
                assert ids(await p.timed(slotted, c)) == expected[c.id], c.number
            print(f"P pass: {done} checks, same conflicts as S for every one; {busy.summary()}")
        report(s, b, m, p, args.changes)
        if slots is not None:
            await settle(store_pid)
            count = min(args.slot_writes, len(picked), len(seeded))
            w, u = await slot_writes(repo, slots, picked[:count], seeded[:count], store_pid)
            writes = Table()
            for q, label in ((50, "p50"), (99, "p99")):
                writes.add(
                    f"W slot upserts per scheduled change {label}, ms",
                    ms(percentile(w.seconds, q)),
                    ms(percentile(u.seconds, q)),
                    f"repo.save {label}",
                )
            writes.add("W slot upserts per change", w.per_check(w.rows), 1, "one save")
            writes.print(f"Write cost of the slots ({len(w.seconds)} changes, alternating)")
        return 0 if done == args.checks else 1
    finally:
        with contextlib.suppress(Exception):
            await client.drop_database(database_name)
        await client.close()


async def terminable(args: argparse.Namespace) -> int:
    """`run`, cancelled on SIGTERM/SIGINT (e.g. `timeout`) so the scratch database is dropped."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(number, task.cancel)
    try:
        return await run(args)
    except asyncio.CancelledError:
        print("terminated: scratch database dropped", file=sys.stderr)
        return 143


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(terminable(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
