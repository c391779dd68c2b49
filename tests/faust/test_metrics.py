"""The SLA processor's metrics as its Faust agents drive them: open timers, alerts published,
and records dead-lettered through the worker's own path."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client import REGISTRY

from shared.contracts.topics import Topic
from tests.faust.conftest import T0, Harness
from tests.faust.events import created, record


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def breaches() -> float:
    return sample("itsm_sla_alerts_total", alert="breach", metric="first_response", priority="P1")


async def test_the_agents_count_open_timers_alerts_and_dead_letters(harness: Harness) -> None:
    group = harness.sla.settings.app_id
    dead = {"source_topic": str(Topic.INCIDENTS), "group": group}
    dead_before, breaches_before = sample("itsm_dead_lettered_records_total", **dead), breaches()

    await harness.put(record(created("INC-M1", T0, priority="P1"), 1, T0), partition=1)
    await harness.put(record(created("INC-M2", T0, priority="P3"), 1, T0), partition=2)
    assert sample("itsm_sla_open_timers") == 2
    await harness.incidents.put(b"\x00not a cloudevent", key=b"INC-M3", partition=1)
    harness.clock.now = T0 + timedelta(hours=1)  # past the P1 first-response target only
    await harness.tick()

    assert breaches() == breaches_before + 1
    assert sample("itsm_dead_lettered_records_total", **dead) == dead_before + 1
