"""Memory of the SLA worker per open timer, on the real local Kafka.

    python -m bench.sla_memory --tickets 100000 300000 --project 1000000

For each size N, one bounded run on its own topics (see bench/sla.py), deleted at the end:

1. baseline: a fresh SLA worker (own process, unique app id, `--store`, memory:// by default)
   with no tickets; once it answers a probe ticket its RSS is sampled until steady;
2. N incident `created` events (P1; targets of a day and two, so nothing falls due and no state
   changes after the `started` facts) are produced; once the worker has published 2 `started`
   facts per ticket (first response and resolution timers open, the state in the table and
   its changelog, the ticket in the wake-up index) its RSS is sampled until steady;
3. RSS per ticket = (RSS with N tickets - baseline RSS) / N; every ticket holds two open timers,
   so per timer is half of that.

A size the run does not measure can be projected (`--project`): linear through the two largest
measured sizes, and printed as extrapolated.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

from bench.common import (
    CpuMeter,
    Phases,
    Results,
    aim_mark,
    cancel_on_sigterm,
    listening_pid,
    port_of,
    rss_bytes,
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

AIM_BYTES_PER_TIMER = 1024
DAY = 86_400.0
TARGETS = {"P1": {"first_response": DAY, "resolution": 2 * DAY}}
STEADY = 0.005  # RSS steady: changed by less than this fraction over STEADY_WINDOW samples
STEADY_WINDOW = 12  # seconds: longer than the worker's heap trim interval (10 s by default)


async def steady_rss(worker: Worker, limit: float = 60.0) -> int:
    """Sample the worker's RSS every second until it stops moving (or `limit` passes)."""
    samples: list[int] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        rss = rss_bytes(worker.pid)
        if rss is None:
            raise RuntimeError(f"the worker is gone:\n{worker.log_tail()}")
        samples.append(rss)
        recent = samples[-STEADY_WINDOW:]
        if len(recent) == STEADY_WINDOW and (max(recent) - min(recent)) <= STEADY * max(recent):
            break
        await asyncio.sleep(1.0)
    return samples[-1]


async def measure(args: argparse.Namespace, tickets: int, phases: Phases) -> dict[str, Any]:
    run = Run.new("mem")
    await create_topics(args.bootstrap, run)
    tail = FactTail(args.bootstrap, run.sla)
    worker = None
    try:
        await tail.ready()
        extra = {"ITSM_SLA_STORE": args.store}
        worker = start_worker(args.bootstrap, run, targets=TARGETS, extra_env=extra)
        phases.meter.add("worker", worker.pid)
        phases.meter.add("tail", tail.pid)
        await wait_until_answering(args.bootstrap, run, tail, worker)
        baseline = await steady_rss(worker)
        print(
            f"{tickets:,}: worker {worker.pid} baseline RSS {baseline / 2**20:.1f} MiB", flush=True
        )
        name = f"{tickets:,} tickets: load"
        phases.start(name)
        now = datetime.now(UTC)
        records = (incident_record(f"M-{run.id}-{n}", "created", 1, now) for n in range(tickets))
        await produce(args.bootstrap, run.incidents, records)
        counts = await tail.wait_for(
            lambda c: c.get("started", 0) >= 2 * (tickets + 1),
            within=args.timeout,
            what=f"{2 * tickets} started facts",
            worker=worker,
            interval=1.0,
        )
        phases.stop(name)
        loaded = await steady_rss(worker)
        print(f"{tickets:,}: RSS {loaded / 2**20:.1f} MiB after {phases.rows[name][0]:.0f}s; "
              f"facts {counts}", flush=True)  # fmt: skip
        return {"baseline": baseline, "loaded": loaded, "counts": counts}
    finally:
        if worker is not None:
            worker.stop()
        tail.close()
        await delete_topics(args.bootstrap, run)


async def run_bench(args: argparse.Namespace) -> int:
    cancel_on_sigterm()
    meter = CpuMeter({"bench": os.getpid()})
    meter.add("kafka", listening_pid(port_of(args.bootstrap, 9092)))
    phases = Phases(meter)
    idle = await phases.idle_probe()
    print(f"idle probe: machine {idle['machine']:.2f} cores", flush=True)
    measured = {n: await measure(args, n, phases) for n in sorted(args.tickets)}

    results = Results()
    per_ticket: dict[int, float] = {}
    for n, m in measured.items():
        per_ticket[n] = (m["loaded"] - m["baseline"]) / n
        per_timer = per_ticket[n] / 2
        results.add(f"{n:,} tickets: worker RSS", m["loaded"], m["baseline"], "MiB")
        results.add(
            f"{n:,} tickets: RSS per open timer (2 per ticket)",
            per_timer,
            AIM_BYTES_PER_TIMER,
            "B",
            f"<= {AIM_BYTES_PER_TIMER} B {aim_mark(per_timer <= AIM_BYTES_PER_TIMER)}",
        )
        results.note(f"{n:,} tickets: RSS per ticket", f"{per_ticket[n]:,.0f} B")
    sizes = sorted(measured)
    if args.project and len(sizes) >= 2 and args.project not in measured:
        a, b = sizes[-2], sizes[-1]
        slope = (measured[b]["loaded"] - measured[a]["loaded"]) / (b - a)
        projected = measured[b]["loaded"] + slope * (args.project - b)
        per_timer = (projected - measured[b]["baseline"]) / args.project / 2
        results.add(
            f"{args.project:,} tickets: RSS, EXTRAPOLATED from {a:,} and {b:,}",
            projected,
            measured[b]["baseline"],
            "MiB",
        )
        results.add(
            f"{args.project:,} tickets: per open timer, EXTRAPOLATED",
            per_timer,
            AIM_BYTES_PER_TIMER,
            "B",
            f"<= {AIM_BYTES_PER_TIMER} B {aim_mark(per_timer <= AIM_BYTES_PER_TIMER)}",
        )
        results.note(f"marginal RSS per ticket between {a:,} and {b:,}", f"{slope:,.0f} B")
    complete = all(m["counts"].get("started", 0) >= 2 * n for n, m in measured.items())
    print()
    print(results.table())
    print()
    print(phases.table())
    print(f"\nstore {args.store}; baseline = the same worker's RSS with no tickets, before the "
          f"load; RSS sampled every second until steady ({STEADY_WINDOW} samples within "
          f"{STEADY:.1%}).")  # fmt: skip
    return 0 if complete else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sla_memory", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--tickets", type=int, nargs="+", default=[100_000, 300_000])
    parser.add_argument("--project", type=int, default=1_000_000, help="extrapolate to (0: no)")
    parser.add_argument("--store", default="memory://", help="ITSM_SLA_STORE of the worker")
    parser.add_argument("--timeout", type=float, default=1800.0, help="per size, seconds")
    parser.add_argument(
        "--bootstrap", default=os.environ.get("ITSM_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    )
    args = parser.parse_args(argv)
    if any(n <= 0 for n in args.tickets):
        parser.error("--tickets must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(run_bench(args))
    except (asyncio.CancelledError, KeyboardInterrupt):
        print("interrupted; the run's topics were deleted", flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
