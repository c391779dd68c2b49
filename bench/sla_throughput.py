"""SLA processor throughput on the real local Kafka: events/s through the Faust app, tables
included, beside a raw aiokafka consumer running the same handler.

    python -m bench.sla_throughput --events 50000

One bounded run on the run's own topics (see bench/sla.py), deleted at the end:

1. preload `--events` incident events on the run's incident topic: per ticket `created`,
   `assigned`, `replied` (first response by staff), `resolved`, sequences 1-4, in blocks of 1,000
   tickets (so a partition interleaves many tickets, as live traffic does). No deadline falls
   due during the run (P1: 15 min / 4 h).
2. B1 baseline: a raw aiokafka consumer (own process, `python -m bench.sla raw-consumer`) feeding
   every record to the processor's handler, `SlaProcessor.on_incident_record`, with an in-memory
   dict as the table and a sink that drops the facts: the cost of decoding, the engine and the
   state encoding alone;
3. S subject: the SLA worker (`services.sla.processor.worker`, memory:// table with its
   changelog, facts published with acks=all and awaited per event) consuming the preloaded topic
   from its beginning. Throughput = events / (receive time of the last `met` fact - receive time
   of the first `started` fact), read by a tail of the SLA topic in its own process, so the
   worker's start-up (group join, topic creation) is not counted;
4. B2: the raw consumer again, publishing the facts with an aiokafka producer and waiting for
   the acknowledgements as the Faust sink does (no table, no changelog).

Exit status 1 if a run did not see every fact (2 `started` and 2 `met` per ticket) or any
baseline record was not applied.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.common import CpuMeter, Phases, Results, aim_mark, cancel_on_sigterm, listening_pid
from bench.common import port_of as _port_of
from bench.sla import (
    FactTail,
    Run,
    create_topics,
    delete_topics,
    helper_result,
    incident_record,
    produce,
    spawn_helper,
    start_worker,
)

AIM_EVENTS_PER_S = 3000.0
KINDS = ("created", "assigned", "replied", "resolved")
BLOCK = 1000


def lifecycle_records(tickets: int, run: Run, start: datetime) -> Iterator[Any]:
    """Four events per ticket, ticket blocks of BLOCK interleaved kind by kind."""
    for first in range(0, tickets, BLOCK):
        block = range(first, min(first + BLOCK, tickets))
        for sequence, kind in enumerate(KINDS, start=1):
            at = start + timedelta(seconds=sequence)
            for n in block:
                yield incident_record(f"T-{run.id}-{n}", kind, sequence, at, opened_at=start)


async def raw_baseline(args: argparse.Namespace, run: Run, sink: str, phases: Phases) -> Any:
    facts_topic = f"{run.prefix}.raw-facts"
    argv = ["--bootstrap", args.bootstrap, "--topic", run.incidents, "--events", str(args.events)]
    argv += ["--sink", sink, "--facts-topic", facts_topic]
    name = f"B{'1' if sink == 'null' else '2'} raw consumer, {sink} sink"
    process = spawn_helper("raw-consumer", *argv)
    phases.start(name)
    result = await helper_result(process, args.timeout)
    phases.stop(name)
    # The consumer has exited by now: its own CPU count (first record to exit) stands in.
    wall, cores = phases.rows[name]
    cores["raw"] = result["cpu_s"] / wall
    cores["others"] = max(0.0, cores["others"] - cores["raw"])
    result["rate"] = result["processed"] / max(1e-9, result["last"] - result["first"])
    print(f"{name}: {result['processed']} events, {result['rate']:,.0f}/s, "
          f"outcomes {result['outcomes']}", flush=True)  # fmt: skip
    return result


async def subject(args: argparse.Namespace, run: Run, phases: Phases) -> dict[str, Any]:
    tickets = args.events // len(KINDS)
    tail = FactTail(args.bootstrap, run.sla)
    await tail.ready()
    worker = start_worker(args.bootstrap, run)
    phases.meter.add("worker", worker.pid)
    phases.meter.add("tail", tail.pid)
    try:
        phases.start("S Faust worker")
        counts = await tail.wait_for(
            lambda c: c.get("met", 0) >= 2 * tickets,
            within=args.timeout,
            what=f"{2 * tickets} met facts",
            worker=worker,
            interval=0.5,
        )
        phases.stop("S Faust worker")
        _, first_at, last_at = await tail.counts()
    finally:
        worker.stop()
        tail.close()
    elapsed = last_at["met"] - first_at["started"]
    startup = first_at["started"] - worker.started
    print(f"S: {args.events} events in {elapsed:.1f}s after a {startup:.1f}s start; facts "
          f"{counts}", flush=True)  # fmt: skip
    return {
        "rate": args.events / elapsed,
        "counts": counts,
        "startup": startup,
        "complete": counts.get("started", 0) == 2 * tickets and counts.get("met") == 2 * tickets,
    }


async def run_bench(args: argparse.Namespace) -> int:
    cancel_on_sigterm()
    run = Run.new("tp")
    tickets = args.events // len(KINDS)
    print(f"run {run.prefix}: {tickets} tickets x {len(KINDS)} events", flush=True)
    meter = CpuMeter({"bench": os.getpid()})
    meter.add("kafka", listening_pid(_port_of(args.bootstrap, 9092)))
    meter.pids["raw"] = -1  # a column for the raw consumer, filled from its own report
    phases = Phases(meter)
    await create_topics(args.bootstrap, run)
    admin = AIOKafkaAdminClient(bootstrap_servers=args.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(f"{run.prefix}.raw-facts", run.partitions, 1)])
    finally:
        await admin.close()
    try:
        await phases.idle_probe()
        phases.start("preload")
        started = time.perf_counter()
        records = lifecycle_records(tickets, run, datetime.now(UTC))
        sent = await produce(args.bootstrap, run.incidents, records)
        preload_s = time.perf_counter() - started
        phases.stop("preload")
        print(f"preloaded {sent} events in {preload_s:.1f}s", flush=True)
        b1 = await raw_baseline(args, run, "null", phases)
        s = await subject(args, run, phases)
        b2 = await raw_baseline(args, run, "kafka", phases)
    finally:
        deleted = await delete_topics(args.bootstrap, run)
        print(f"deleted {len(deleted)} topics of {run.prefix}", flush=True)

    results = Results()
    results.add(
        "S Faust app (table + changelog + facts): events/s",
        s["rate"],
        b1["rate"],
        "/s",
        f">= {AIM_EVENTS_PER_S:,.0f}/s {aim_mark(s['rate'] >= AIM_EVENTS_PER_S)}",
    )
    results.add("S against B2 raw consumer publishing facts", s["rate"], b2["rate"], "/s")
    results.add("B2 (publishing) against B1 (null sink)", b2["rate"], b1["rate"], "/s")
    wall, cores = phases.rows["S Faust worker"]
    s_cpu = cores.get("worker", 0.0) * wall / args.events * 1e6
    results.add("process CPU per event, S (B1)", s_cpu, b1["cpu_s"] / args.events * 1e6, "us")
    results.note("process CPU per event, B2", f"{b2['cpu_s'] / args.events * 1e6:,.0f} us")
    results.note("S worker start-up (spawn -> first fact)", f"{s['startup']:.1f} s")
    complete = s["complete"] and all(
        r["outcomes"].get("applied", 0) == args.events for r in (b1, b2)
    )
    results.note(
        "facts complete: 2 started + 2 met per ticket; every baseline record applied",
        "yes" if complete else f"no: {s['counts']}, {b1['outcomes']}, {b2['outcomes']}",
        aim_mark(complete),
    )
    print()
    print(results.table())
    print()
    print(phases.table())
    print("\nbaselines: B1 aiokafka + SlaProcessor, in-memory dict table, facts dropped; "
          "B2 the same publishing facts with acks=all, awaited per event. The machine's cores "
          "are shared by the worker / raw consumer, the tail, Kafka and whatever else "
          "runs.")  # fmt: skip
    return 0 if complete else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sla_throughput", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--events", type=int, default=50_000, help="a multiple of 4")
    parser.add_argument(
        "--bootstrap", default=os.environ.get("ITSM_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="per phase, seconds")
    args = parser.parse_args(argv)
    if args.events <= 0 or args.events % len(KINDS):
        parser.error("--events must be a positive multiple of 4")
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
