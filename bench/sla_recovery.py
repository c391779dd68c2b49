"""Recovery of the SLA worker after kill -9, with open timers, on the real local Kafka.

    python -m bench.sla_recovery --timers 100000

One bounded run on its own topics (see bench/sla.py), deleted at the end:

1. baseline: the worker's cold start with no state: spawn -> it answers a probe ticket
   (joined the group, created its topics, recovered an empty table);
2. `--timers` tickets are created whose first-response deadlines fall in the `--spread` seconds
   after K = now + `--lead` (P1 first-response target T = 10 x (lead + spread + 60 s), so every
   created event carries `opened_at = deadline - T` and fires its 90 % warning when applied);
   the run waits until the worker has applied them all (2 `started` facts per ticket);
3. at K the worker gets SIGKILL and a new worker process with the same app id is spawned at
   once: it waits for the group to drop the dead member (the session timeout, 10 s), recovers
   the table from its changelog, re-arms the wake-up index from the table and fires what is
   overdue by then;
4. figures: K -> first breach received again, K -> every breach received, the breaches' lag
   behind their deadlines; and what was re-applied (started facts published again for events
   whose offsets the killed worker had not committed: consumers drop them by sequence).

`--store` is the table's store: `memory://` (the default: the new worker replays the whole
changelog) or `rocksdb://`, the production set-up (deploy/k8s: a StatefulSet whose workers keep
RocksDB on their own volume): the restarted worker reuses the killed one's data directory and
reads only the changelog written after what RocksDB already holds.

Exit status 1 if a breach is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from datetime import UTC, datetime, timedelta

from bench.common import (
    CpuMeter,
    Phases,
    Results,
    aim_mark,
    cancel_on_sigterm,
    listening_pid,
    percentile,
    port_of,
)
from bench.sla import (
    FactTail,
    Run,
    Worker,
    create_topics,
    delete_topics,
    incident_record,
    produce,
    start_worker,
    wait_until_answering,
)


async def run_bench(args: argparse.Namespace) -> int:
    cancel_on_sigterm()
    run = Run.new("rec")
    n = args.timers
    # Ten times what the run needs: every warning is already due when a created event is
    # applied (the 90 % one fires with the started facts), so loading stays cheap and what
    # fires after the kill is the breaches.
    target_s = 10 * (args.lead + args.spread + 60)
    print(f"run {run.prefix}: {n} timers, kill at now + {args.lead:.0f}s, deadlines over the "
          f"{args.spread:g}s after it, P1 first response {target_s:.0f}s, store {args.store}",
          flush=True)  # fmt: skip
    meter = CpuMeter({"bench": os.getpid()})
    meter.add("kafka", listening_pid(port_of(args.bootstrap, 9092)))
    phases = Phases(meter)
    await create_topics(args.bootstrap, run)
    tail = FactTail(args.bootstrap, run.sla, keep=("breached",))
    workers: list[Worker] = []
    targets = {"P1": {"first_response": float(target_s)}}
    store = {"ITSM_SLA_STORE": args.store}  # both workers: the same app id, so the same data dir
    try:
        await tail.ready()
        meter.add("tail", tail.pid)
        idle = await phases.idle_probe()
        print(f"idle probe: machine {idle['machine']:.2f} cores", flush=True)
        workers.append(start_worker(args.bootstrap, run, targets=targets, extra_env=store))
        meter.add("worker", workers[0].pid)
        phases.start("cold start (baseline)")
        cold_s = await wait_until_answering(args.bootstrap, run, tail, workers[0])
        phases.stop("cold start (baseline)")
        print(f"cold start: answering {cold_s:.1f}s after spawn", flush=True)

        kill_at = datetime.now(UTC) + timedelta(seconds=args.lead)
        deadlines = {
            f"R-{run.id}-{i}": kill_at + timedelta(seconds=1 + args.spread * i / n)
            for i in range(n)
        }
        phases.start("produce + apply")
        now, target = datetime.now(UTC), timedelta(seconds=target_s)
        records = (
            incident_record(key, "created", 1, now, opened_at=deadline - target)
            for key, deadline in deadlines.items()
        )
        await produce(args.bootstrap, run.incidents, records)
        applied = await tail.wait_for(
            lambda c: c.get("started", 0) >= 2 * (n + 1),
            within=args.lead + 300,
            what=f"{2 * n} started facts",
            worker=workers[0],
            interval=1.0,
        )
        phases.stop("produce + apply")
        margin = (kill_at - datetime.now(UTC)).total_seconds()
        print(f"all {n} tickets applied {margin:.0f}s before the kill ({applied})", flush=True)
        await asyncio.sleep(max(0.0, margin))

        killed = workers[0].kill9()
        workers.append(start_worker(args.bootstrap, run, targets=targets, extra_env=store))
        meter.add("restarted", workers[1].pid)
        phases.start("kill -9 -> every breach")  # from the spawn, so it counts the new worker
        counts = await tail.wait_for(
            lambda c: c.get("breached", 0) >= n,
            within=args.timeout,
            what=f"{n} breaches after the restart",
            worker=workers[1],
            interval=0.05,
        )
        phases.stop("kill -9 -> every breach")
        facts = await tail.facts()
    finally:
        for worker in workers:
            worker.stop()
        tail.close()
        deleted = await delete_topics(args.bootstrap, run)
        print(f"deleted {len(deleted)} topics of {run.prefix}", flush=True)

    breaches: dict[str, float] = {}
    seen: dict[str, int] = {}
    for key, _, received, _, _ in facts:
        if key in deadlines:
            seen[key] = seen.get(key, 0) + 1
            breaches.setdefault(key, received)
    missing = n - len(breaches)
    first_s = min(breaches.values()) - killed if breaches else float("nan")
    all_s = max(breaches.values()) - killed if breaches else float("nan")
    lags = [breaches[k] - d.timestamp() for k, d in deadlines.items() if k in breaches]
    before_kill = sum(1 for at in breaches.values() if at < killed)
    results = Results()
    results.add("kill -9 -> first breach received", first_s, cold_s, "s")
    results.add(f"kill -9 -> all {n:,} breaches received", all_s, cold_s, "s")
    results.note(
        "breach lag behind the deadline p50 / p99 / max",
        f"{percentile(lags, 50):.1f} / {percentile(lags, 99):.1f} / {percentile(lags, 100):.1f} s",
    )
    results.note(
        "breaches seen / missing / twice / before the kill",
        f"{len(breaches)} / {missing} / {sum(1 for c in seen.values() if c > 1)} / {before_kill}",
        aim_mark(missing == 0),
    )
    results.note(
        "started facts published again after the restart (dropped by sequence downstream)",
        f"{counts.get('started', 0) - applied.get('started', 0)}",
    )
    results.note("facts by type at the end", ", ".join(f"{k} {v}" for k, v in counts.items()))
    results.note("table store", args.store)
    print()
    print(results.table())
    print()
    print(phases.table())
    print("\nbaseline = the first worker's cold start on empty topics (spawn -> answers a probe "
          "ticket). Times are receive times of a tail of the SLA topic (own process).")  # fmt: skip
    return 0 if missing == 0 else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sla_recovery", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--timers", type=int, default=100_000)
    parser.add_argument("--spread", type=float, default=10.0, help="deadlines after the kill, s")
    parser.add_argument("--lead", type=float, default=None, help="seconds from start to the kill")
    parser.add_argument(
        "--ingest-rate", type=float, default=450.0,
        help="created events/s the worker is assumed to apply (for the default lead)",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=900.0, help="after the kill, seconds")
    parser.add_argument(
        "--store", choices=("memory://", "rocksdb://"), default="memory://",
        help="the table's store (rocksdb://: the restarted worker keeps the killed one's data)",
    )  # fmt: skip
    parser.add_argument(
        "--bootstrap", default=os.environ.get("ITSM_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    )
    args = parser.parse_args(argv)
    if args.lead is None:
        args.lead = 30 + args.timers / args.ingest_rate * 1.2 + args.timers * 0.00015
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    try:
        return asyncio.run(run_bench(args))
    except (asyncio.CancelledError, KeyboardInterrupt):
        print("interrupted; the run's topics were deleted", flush=True)
        return 130
    finally:
        print(f"whole run {time.monotonic() - started:.0f}s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
