"""Scaling and recovery of the SLA processor on the real local Kafka broker, with real worker
processes (`python -m services.sla.processor.worker`):

- two workers with one app id share the partitions; one is killed with SIGKILL while it is
  publishing its tickets' first warnings; the survivor takes its partitions over, recovers their
  state from the changelog, re-arms the timers, and every breach, and every warning that fell
  due while a worker was processing the ticket's partition, reaches the SLA topic, numbered so
  that downstream sequence dedupe drops any repeat;
- a restarted worker recovers the table from the changelog: a ticket created before the restart
  and resolved after it is measured on its original clock.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.contracts.topics import Topic
from tests.support.kafka import TopicTail, ensure_platform_topics, tail
from tests.support.polling import eventually
from tests.support.sla_workers import (
    SlaWorker,
    committed_partitions,
    decoded,
    facts_of,
    incident_feed,
    partition_count,
    run_id,
    sla_workers,
    until,
    wait_until_answering,
    worker_env,
    worker_logs,
)

pytestmark = [pytest.mark.infra, pytest.mark.timeout(120)]

FIRST_RESPONSE = timedelta(seconds=8)
RESOLUTION = timedelta(seconds=16)
TARGETS = {
    "P1": {
        "first_response": FIRST_RESPONSE.total_seconds(),
        "resolution": RESOLUTION.total_seconds(),
    }
}
THRESHOLDS = (50, 75, 90)  # the default policies' warnings
TICKETS = 60
# Every alert that fell due is expected on its own, also those due while nobody processed its
# partition: the engine emits each level with its own instant, however late it looks. A due
# record Faust drops in a rebalance is sent again after TICK_RETRY (the processor's safety net).
TICK_RETRY = timedelta(seconds=1)

Alert = tuple[str, str, int | None]  # fact type, metric, threshold
Outage = tuple[datetime, datetime]  # from the kill to the end of the survivor's recovery


@pytest.fixture
def bootstrap() -> str:
    return os.environ.get("ITSM_KAFKA_BOOTSTRAP", "127.0.0.1:9092")


@dataclass(frozen=True)
class Fact:
    """An SLA fact as downstream dedupe sees it, with when it was published."""

    ticket: str
    sequence: int
    alert: Alert
    published: datetime


def facts(sla: TopicTail, prefix: str) -> list[Fact]:
    records = facts_of(sla, prefix)
    return [
        Fact(
            ticket=envelope.subject,
            sequence=envelope.sequence,
            alert=(
                envelope.type.removeprefix("itsm.sla.").removesuffix(".v1"),
                envelope.data["metric"],
                envelope.data.get("threshold"),
            ),
            published=datetime.fromtimestamp(rec.timestamp / 1000, UTC),
        )
        for rec, envelope in zip(records, decoded(records), strict=True)
    ]


def split(a: SlaWorker, b: SlaWorker, partitions: int) -> bool:
    """Both workers own partitions after the same rebalance: disjoint, together all of them."""
    mine, theirs = a.owned(), b.owned()
    return bool(mine and theirs and not mine & theirs and mine | theirs == set(range(partitions)))


def alerts_due(opened: datetime) -> dict[Alert, datetime]:
    """Every alert of a P1 ticket opened at `opened`, with when it falls due (24x7 calendar)."""
    alerts: dict[Alert, datetime] = {}
    for metric, target in (("first_response", FIRST_RESPONSE), ("resolution", RESOLUTION)):
        for level in THRESHOLDS:
            alerts[("warning", metric, level)] = opened + target * level / 100
        alerts[("breached", metric, None)] = opened + target
    return alerts


def rearmed_at(worker: SlaWorker, partitions: set[int], after: datetime) -> datetime:
    """When `worker` re-armed `partitions` after `after`: the end of its recovery."""
    for entry in worker.events("sla.wakeups.rearmed"):
        at = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00"))
        if at > after and partitions <= set(entry["partitions"]):
            return at
    raise AssertionError(f"{worker.name} never re-armed {sorted(partitions)}:\n{worker.tail()}")


def check_ticket(ticket: str, found: list[Fact], due: dict[Alert, datetime], gap: Outage) -> None:
    """What downstream sees of one ticket: complete, in order, repeats numbered alike."""
    alerts_of: dict[int, set[Alert]] = defaultdict(set)
    numbers_of: dict[Alert, set[int]] = defaultdict(set)
    for fact in found:
        alerts_of[fact.sequence].add(fact.alert)
        numbers_of[fact.alert].add(fact.sequence)
    story = "\n".join(f"  {f.sequence} {f.alert} {f.published:%H:%M:%S.%f}" for f in found)
    # A repeat carries the sequence of the first publication, so sequence dedupe drops it.
    assert all(len(alerts) == 1 for alerts in alerts_of.values()), f"{ticket}:\n{story}"
    assert all(len(numbers) == 1 for numbers in numbers_of.values()), f"{ticket}:\n{story}"
    # Nothing is missing from the state's counter: 1, 2, … without a gap.
    assert sorted(alerts_of) == list(range(1, len(alerts_of) + 1)), f"{ticket}:\n{story}"

    emitted = {alert: min(numbers) for alert, numbers in numbers_of.items()}
    assert emitted.keys() >= {("started", "first_response", None), ("started", "resolution", None)}
    outage_from, outage_to = gap
    for alert, at in due.items():
        during = " (during the outage)" if outage_from <= at <= outage_to else ""
        assert alert in emitted, f"{ticket}: {alert} due at {at}{during} was not published"
    for metric in ("first_response", "resolution"):
        order = sorted((a for a in emitted if a[1] == metric), key=emitted.__getitem__)
        assert order[0][0] == "started" and order[-1][0] == "breached", (ticket, order)
        levels = [a[2] or 0 for a in order if a[0] == "warning"]
        assert levels == sorted(levels), (ticket, order)


def missing_breaches(
    found: list[Fact], tickets: list[str], partitions: dict[str, int], workers: list[SlaWorker]
) -> str:
    """What a timed-out wait lacked: each ticket's partition and last fact, and the logs."""
    last: dict[str, Fact] = {}
    breached: dict[str, int] = defaultdict(int)
    for fact in found:
        last[fact.ticket] = fact
        breached[fact.ticket] += fact.alert[0] == "breached"
    lacking = [t for t in tickets if breached[t] < 2]
    lines = [
        f"  {t} partition {partitions[t]}: last "
        + (
            f"{last[t].sequence} {last[t].alert} {last[t].published:%H:%M:%S.%f}"
            if t in last
            else "-"
        )
        for t in lacking
    ]
    return (
        f"{len(lacking)} of {len(tickets)} tickets lack a breach:\n"
        + "\n".join(lines)
        + f"\n{worker_logs(workers, 6000)}"
    )


async def test_the_survivor_of_a_kill_9_takes_over_and_every_due_alert_is_published(
    bootstrap: str, tmp_path: Path
) -> None:
    await ensure_platform_topics(bootstrap)
    run = run_id()
    app_id = f"itsm-sla-failover-{run}"
    partitions = await partition_count(bootstrap, Topic.INCIDENTS)
    prefix = f"SLA-{run}-"
    tickets = [f"{prefix}{n:02d}" for n in range(TICKETS)]

    async with (
        incident_feed(bootstrap) as feed,
        tail(bootstrap, Topic.SLA) as sla,
        sla_workers(bootstrap, app_id) as workers,
    ):
        for name in ("a", "b"):
            env = worker_env(
                bootstrap, app_id, partitions=partitions, targets=TARGETS,
                data_dir=tmp_path / name, tick_retry=TICK_RETRY.total_seconds(),
            )  # fmt: skip
            workers.append(SlaWorker(name, env, tmp_path / f"{name}.log"))
            await workers[-1].start()
        killed, survivor = workers
        await until(
            lambda: split(killed, survivor, partitions),
            timeout=45, what="both workers owning partitions", workers=workers,
        )  # fmt: skip
        await wait_until_answering(sla, feed, workers, f"probe-{run}", partitions)
        # A partition the group never committed would make its next owner start at the end.
        await eventually(
            lambda: committed_partitions(bootstrap, app_id, Topic.INCIDENTS),
            until=lambda done: done == set(range(partitions)),
            timeout=20, what="committed offsets on every partition",
        )  # fmt: skip

        opened = datetime.now(UTC)
        for ticket in tickets:
            await feed.create(ticket, opened)
        owned_by_killed = killed.owned() or set()
        moved = {t for t in tickets if feed.partitions[t] in owned_by_killed}
        assert moved and moved != set(tickets), f"one worker owns every ticket: {owned_by_killed}"

        # Mid-stream: the killed worker is publishing its tickets' first warnings, all due now.
        await sla.collect(
            lambda _: any(f.ticket in moved and f.alert[0] == "warning" for f in facts(sla, prefix)),
            timeout=FIRST_RESPONSE.total_seconds(), what="a first warning of the killed worker",
        )  # fmt: skip
        await killed.kill()
        killed_at = datetime.now(UTC)
        warned_before_kill = {f.ticket for f in facts(sla, prefix) if f.alert[0] == "warning"}

        def every_breach(_: Any) -> bool:
            found = {(f.ticket, f.alert) for f in facts(sla, prefix) if f.alert[0] == "breached"}
            return len(found) == 2 * TICKETS

        try:
            await sla.collect(
                every_breach, timeout=RESOLUTION.total_seconds() + 30, what="every breach"
            )
        except AssertionError:
            pytest.fail(missing_breaches(facts(sla, prefix), tickets, feed.partitions, workers))
        survivor.check_alive()

    found = facts(sla, prefix)
    takeover = rearmed_at(survivor, set(range(partitions)), after=killed_at)
    after_kill = [f.published for f in found if f.ticket in moved and f.published > killed_at]
    repeats = len(found) - len({(f.ticket, f.sequence) for f in found})
    print(
        f"\n{len(moved)} of {TICKETS} tickets moved (partitions {sorted(owned_by_killed)}), "
        f"{len(warned_before_kill & moved)} of them warned before the kill; the survivor "
        f"re-armed them {(takeover - killed_at).total_seconds():.2f}s after the kill and published "
        f"the first fact of one {(min(after_kill) - killed_at).total_seconds():.2f}s after it; "
        f"{len(found)} facts, {repeats} repeats"
    )
    by_ticket: dict[str, list[Fact]] = defaultdict(list)
    for fact in found:
        by_ticket[fact.ticket].append(fact)
    assert by_ticket.keys() == set(tickets)
    for ticket, ticket_facts in by_ticket.items():
        check_ticket(ticket, ticket_facts, alerts_due(opened), (killed_at, takeover))


async def test_a_restarted_worker_recovers_its_table_from_the_changelog(
    bootstrap: str, tmp_path: Path
) -> None:
    await ensure_platform_topics(bootstrap)
    run = run_id()
    app_id = f"itsm-sla-restart-{run}"
    partitions = await partition_count(bootstrap, Topic.INCIDENTS)
    ticket = f"SLA-{run}"
    opened = datetime.now(UTC).replace(microsecond=0)
    env = worker_env(
        bootstrap, app_id, partitions=partitions, targets={}, data_dir=tmp_path / "data"
    )

    async with (
        incident_feed(bootstrap) as feed,
        tail(bootstrap, Topic.SLA) as sla,
        sla_workers(bootstrap, app_id) as workers,
    ):
        worker = SlaWorker("w", env, tmp_path / "worker.log")
        workers.append(worker)
        await worker.start()
        await wait_until_answering(sla, feed, workers, f"probe-{run}-1", partitions)
        await feed.create(ticket, opened)
        await sla.collect(lambda _: len(facts_of(sla, ticket)) == 2, what="the started facts")

        await worker.stop()  # commits: the created event is not delivered again
        await worker.start()  # memory:// -- the table comes back from the changelog only
        await wait_until_answering(sla, feed, workers, f"probe-{run}-2", partitions)
        await feed.resolve(ticket, opened + timedelta(minutes=5))
        await sla.collect(lambda _: len(facts_of(sla, ticket)) >= 4, what="the outcomes")

    found = decoded(facts_of(sla, ticket))
    # Both clocks (P1 defaults: 15 min, 4 h) started before the restart and stop 5 minutes on;
    # the counter goes on from the recovered state. A fresh state would publish nothing.
    assert [(f.sequence, f.type, f.data["metric"], f.data["elapsed_seconds"]) for f in found] == [
        (1, "itsm.sla.started.v1", "first_response", 0),
        (2, "itsm.sla.started.v1", "resolution", 0),
        (3, "itsm.sla.met.v1", "first_response", 300),
        (4, "itsm.sla.met.v1", "resolution", 300),
    ]
