"""`untraced_sends` on the real broker: with the aiokafka instrumentation on, a record sent to a
topic it names goes out without a `traceparent` header (no send span), any other with one."""

from __future__ import annotations

from collections.abc import Iterator

import aiokafka
import pytest
from opentelemetry import trace
from wrapt import FunctionWrapper

from shared.bus.kafka import KafkaBus
from shared.bus.port import TopicSpec
from shared.telemetry import setup_tracing, untraced_sends
from tests.support.kafka import tail

pytestmark = pytest.mark.infra


@pytest.fixture
def untraced_changelogs() -> Iterator[None]:
    setup_tracing("itsm-tests")  # the process's provider and instrumentation (kept if set)
    untraced_sends(lambda topic: topic.endswith("-changelog"))
    yield
    # the instrumentation stays, as after any test's lifespan; this layer goes
    wrapper = aiokafka.AIOKafkaProducer.__dict__["send"]
    assert isinstance(wrapper, FunctionWrapper) and wrapper._self_untraced
    aiokafka.AIOKafkaProducer.send = wrapper.__wrapped__


async def test_a_changelog_record_goes_out_untraced_and_an_event_traced(
    untraced_changelogs: None, kafka_bus: KafkaBus, kafka_bootstrap: str, unique: str
) -> None:
    changelog, events = f"test.{unique}-changelog", f"test.{unique}.events"
    await kafka_bus.ensure_topics([TopicSpec(changelog, 1), TopicSpec(events, 1)])
    producer = aiokafka.AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        async with tail(kafka_bootstrap, changelog) as state, tail(kafka_bootstrap, events) as log:
            with trace.get_tracer("tests").start_as_current_span("writing"):
                await producer.send_and_wait(changelog, b"state", key=b"t-1")
                await producer.send_and_wait(events, b"event", key=b"t-1")
            [stored] = await state.collect(lambda rs: len(rs) == 1, what="the changelog record")
            [sent] = await log.collect(lambda rs: len(rs) == 1, what="the event record")
    finally:
        await producer.stop()
    assert [key for key, _ in stored.headers] == []
    assert [key for key, _ in sent.headers] == ["traceparent"]
