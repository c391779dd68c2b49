"""The SLA processor in embedded mode: the same record handlers on the in-memory bus, driven by
an asyncio tick. The clock is injected, so a deadline falls due when the test moves it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from services.sla.embedded import EmbeddedSla, embedded_sla
from services.sla.processor.settings import SlaSettings, TargetOverride
from shared.bus.memory import InMemoryBus
from shared.contracts.codec import KafkaRecord, decode
from shared.contracts.envelope import Envelope
from shared.contracts.topics import Topic
from tests.faust.events import created, record, replied
from tests.support.polling import eventually

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def sla(clock: Clock) -> AsyncIterator[tuple[EmbeddedSla, InMemoryBus]]:
    bus = InMemoryBus(default_partitions=3)
    settings = SlaSettings(
        tick_interval=0.01, targets={"P1": TargetOverride(first_response=60, resolution=600)}
    )
    runner = await embedded_sla(bus, clock, settings)
    await runner.start()
    yield runner, bus
    await runner.stop()


def facts(bus: InMemoryBus, ticket: str) -> list[Envelope]:
    return [e for e in map(decode, bus.records(Topic.SLA)) if e.subject == ticket]


async def publish(bus: InMemoryBus, item: KafkaRecord) -> None:
    await bus.publish_record(Topic.INCIDENTS, item)


async def test_a_created_incident_starts_its_clocks(sla: tuple[EmbeddedSla, InMemoryBus]) -> None:
    _, bus = sla
    await publish(bus, record(created("inc-1", T0), 1, T0))

    started = await eventually(
        lambda: _types(bus, "inc-1"), until=lambda t: len(t) == 2, what="two sla.started facts"
    )
    assert started == ["itsm.sla.started.v1", "itsm.sla.started.v1"]


async def test_the_tick_emits_warnings_and_the_breach_when_the_deadline_passes(
    sla: tuple[EmbeddedSla, InMemoryBus], clock: Clock
) -> None:
    _, bus = sla
    await publish(bus, record(created("inc-2", T0), 1, T0))
    await eventually(lambda: _types(bus, "inc-2"), until=lambda t: len(t) == 2)

    clock.now = T0 + timedelta(seconds=61)  # past the 60 s first-response target
    breached = await eventually(
        lambda: _facts_of(bus, "inc-2", "itsm.sla.breached.v1"), what="the breach"
    )

    assert breached[0].data["metric"] == "first_response"
    assert breached[0].time == T0 + timedelta(seconds=60)  # stamped at the deadline
    sequences = [f.sequence for f in facts(bus, "inc-2")]
    assert sequences == sorted(sequences) == list(range(1, len(sequences) + 1))


async def test_a_reply_in_time_means_met_and_no_breach(
    sla: tuple[EmbeddedSla, InMemoryBus], clock: Clock
) -> None:
    _, bus = sla
    await publish(bus, record(created("inc-3", T0), 1, T0))
    await publish(bus, record(replied("inc-3"), 2, T0 + timedelta(seconds=30)))
    await eventually(lambda: _facts_of(bus, "inc-3", "itsm.sla.met.v1"), what="met")

    clock.now = T0 + timedelta(seconds=301)  # the resolution clock still runs: its 50 % warning
    warnings = await eventually(
        lambda: _resolution_warnings(bus, "inc-3"), what="the resolution's warning"
    )
    assert [w.data["threshold"] for w in warnings] == [50]
    assert warnings[0].time == T0 + timedelta(seconds=300)
    assert not [f for f in facts(bus, "inc-3") if f.type == "itsm.sla.breached.v1"]


async def test_a_redelivered_event_is_applied_once(
    sla: tuple[EmbeddedSla, InMemoryBus],
) -> None:
    _, bus = sla
    first = record(created("inc-4", T0), 1, T0)
    await publish(bus, first)
    await publish(bus, first)
    await publish(bus, record(replied("inc-4"), 2, T0 + timedelta(seconds=5)))

    await eventually(lambda: _facts_of(bus, "inc-4", "itsm.sla.met.v1"), what="met")
    assert [f.type for f in facts(bus, "inc-4")].count("itsm.sla.started.v1") == 2


async def test_an_undecodable_record_is_dead_lettered_and_the_partition_moves_on(
    sla: tuple[EmbeddedSla, InMemoryBus],
) -> None:
    _, bus = sla
    await publish(bus, KafkaRecord(key=b"inc-5", value=b"not a cloudevent", headers=()))
    await publish(bus, record(created("inc-5", T0), 1, T0))

    await eventually(lambda: _types(bus, "inc-5"), until=lambda t: len(t) == 2)
    dead = [r for r in bus.records(Topic.DEAD_LETTER) if r.key == b"inc-5"]
    assert len(dead) == 1 and dead[0].value == b"not a cloudevent"


async def _types(bus: InMemoryBus, ticket: str) -> list[str]:
    return [f.type for f in facts(bus, ticket)]


async def _facts_of(bus: InMemoryBus, ticket: str, kind: str) -> list[Envelope]:
    return [f for f in facts(bus, ticket) if f.type == kind]


async def _resolution_warnings(bus: InMemoryBus, ticket: str) -> list[Envelope]:
    warnings = await _facts_of(bus, ticket, "itsm.sla.warning.v1")
    return [w for w in warnings if w.data["metric"] == "resolution"]
