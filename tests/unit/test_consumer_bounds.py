"""Bounded queues in every consumer (docs/security.md, "Bounded queues and record sizes"): what
each Kafka consumer of the platform may hold before it has processed it is set explicitly, from
the settings, and reaches the client it is built for.

- the bus's consumer groups (incidents, changes, notify, SLA read API): aiokafka's
  `max_poll_records`, `max_partition_fetch_bytes`, `fetch_max_bytes` and one `getmany` of at most
  `max_records` in flight;
- the SLA API's live tails: the same bounds, from the service's bus;
- the SLA worker (Faust): `broker_max_poll_records`, `consumer_max_fetch_size` and
  `stream_buffer_maxsize`;
- every `AIOKafkaConsumer(` in the source that fetches records spreads the bounds.
"""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from services.sla.main import live_tail
from services.sla.processor.app import create_app as create_sla_worker
from services.sla.processor.settings import SlaSettings
from shared.bus import kafka as bus_module
from shared.bus.kafka import KafkaBus
from shared.bus.limits import REQUEST_TIMEOUT_MS, FetchLimits, fetch_limits
from shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
SMALL = FetchLimits(max_records=7, max_partition_fetch_bytes=65_536, fetch_max_bytes=131_072)


class FakeConsumer:
    """Stands in for aiokafka's consumer: keeps its arguments, fetches nothing."""

    built: list[FakeConsumer] = []

    def __init__(self, *topics: str, **kwargs: Any) -> None:
        self.topics = topics
        self.kwargs = kwargs
        self.fetches: list[int | None] = []
        self.fetched = asyncio.Event()
        FakeConsumer.built.append(self)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def getmany(self, *partitions: Any, timeout_ms: int = 0, max_records: Any = None) -> Any:
        self.fetches.append(max_records)
        self.fetched.set()
        await asyncio.Event().wait()  # nothing to fetch, ever (cancelled at stop)

    def assignment(self) -> set[Any]:
        return set()


@pytest.fixture
def fake_consumers(monkeypatch: pytest.MonkeyPatch) -> list[FakeConsumer]:
    FakeConsumer.built = []
    monkeypatch.setattr(bus_module, "AIOKafkaConsumer", FakeConsumer)
    monkeypatch.setattr("services.sla.api.live.AIOKafkaConsumer", FakeConsumer)
    return FakeConsumer.built


def bounds(limits: FetchLimits) -> dict[str, int]:
    return {
        "max_poll_records": limits.max_records,
        "max_partition_fetch_bytes": limits.max_partition_fetch_bytes,
        "fetch_max_bytes": limits.fetch_max_bytes,
        "request_timeout_ms": REQUEST_TIMEOUT_MS,
    }


async def test_a_bus_subscription_fetches_within_the_configured_bounds(
    fake_consumers: list[FakeConsumer],
) -> None:
    bus = KafkaBus("127.0.0.1:1", client_id="t", fetch=SMALL, security={"security_protocol": "X"})

    async def handler(envelope: Any) -> None:
        raise AssertionError("nothing is fetched")

    subscription = await bus.subscribe("group", ["topic"], handler)
    [consumer] = fake_consumers
    await asyncio.wait_for(consumer.fetched.wait(), 5)
    await subscription.stop()

    assert {k: consumer.kwargs[k] for k in bounds(SMALL)} == bounds(SMALL)
    assert consumer.kwargs["security_protocol"] == "X"  # the bounds come with the security
    assert consumer.fetches == [SMALL.max_records]  # one getmany of at most that many


async def test_the_default_bus_bounds_are_the_documented_ones(
    fake_consumers: list[FakeConsumer],
) -> None:
    bus = KafkaBus("127.0.0.1:1", client_id="t")

    async def handler(envelope: Any) -> None:
        raise AssertionError("nothing is fetched")

    subscription = await bus.subscribe("group", ["topic"], handler)
    await subscription.stop()
    [consumer] = fake_consumers
    assert consumer.kwargs["max_poll_records"] == 500
    assert consumer.kwargs["max_partition_fetch_bytes"] == 1_048_576
    assert consumer.kwargs["fetch_max_bytes"] == 16 * 1_048_576


def test_the_live_tails_take_the_bounds_of_the_service_bus(
    fake_consumers: list[FakeConsumer],
) -> None:
    bus = KafkaBus("127.0.0.1:1", client_id="t", fetch=SMALL)
    live_tail(bus, ["sla"], lambda topic, envelope: None, client_id="t-live")
    [consumer] = fake_consumers
    assert {k: consumer.kwargs[k] for k in bounds(SMALL)} == bounds(SMALL)


def test_the_bounds_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITSM_KAFKA_MAX_POLL_RECORDS", "50")
    monkeypatch.setenv("ITSM_KAFKA_MAX_PARTITION_FETCH_BYTES", "262144")
    monkeypatch.setenv("ITSM_KAFKA_FETCH_MAX_BYTES", "524288")
    limits = fetch_limits(ServiceSettings())
    assert limits == FetchLimits(50, 262_144, 524_288)
    for name, value in (
        ("kafka_max_poll_records", 0),
        ("kafka_max_poll_records", 1_000_000),
        ("kafka_fetch_max_bytes", 2**40),
    ):
        with pytest.raises(ValidationError, match=name):
            ServiceSettings(**{name: value})
    with pytest.raises(ValueError, match="fetch_max_bytes must be at least"):
        FetchLimits(max_partition_fetch_bytes=2_000_000, fetch_max_bytes=1_000_000)


def test_the_sla_worker_bounds_its_streams_and_fetches() -> None:
    settings = SlaSettings(
        kafka_max_poll_records=40, kafka_max_partition_fetch_bytes=131_072,
        stream_buffer_maxsize=128, request_timeout=30, producer_request_timeout=60,
    )  # fmt: skip
    conf = create_sla_worker(settings).conf
    assert conf.broker_max_poll_records == 40
    assert conf.consumer_max_fetch_size == 131_072
    assert conf.stream_buffer_maxsize == 128
    assert (conf.broker_request_timeout, conf.producer_request_timeout) == (30, 60)
    defaults = create_sla_worker(SlaSettings()).conf
    assert defaults.stream_buffer_maxsize == 4096
    assert defaults.broker_max_poll_records == 500
    assert defaults.consumer_max_fetch_size == 1_048_576


# Consumers that never fetch a record: they only commit offsets.
NOT_FETCHING = {"shared/bus/offsets.py"}


def test_every_consumer_that_fetches_records_spreads_the_bounds() -> None:
    checked, missing = [], []
    for path in sorted([*ROOT.glob("services/**/*.py"), *ROOT.glob("shared/**/*.py")]):
        relative = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text(), relative)):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name != "AIOKafkaConsumer" or relative in NOT_FETCHING:
                continue
            spreads = [
                k.value for k in node.keywords if k.arg is None and isinstance(k.value, ast.Call)
            ]
            if not any(getattr(s.func, "attr", None) == "consumer_kwargs" for s in spreads):
                missing.append(f"{relative}:{node.lineno}")
            checked.append(f"{relative}:{node.lineno}")
    assert not missing, missing
    # the bus's groups, the live tails, the SLA worker's policy feed
    assert len(checked) >= 3, checked
