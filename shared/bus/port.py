"""What a service needs from the message bus."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from shared.contracts.codec import KafkaRecord
from shared.contracts.envelope import Envelope

Handler = Callable[[Envelope], Awaitable[None]]


class TransientError(Exception):
    """A dependency is unavailable (database down, timeout). The record is retried with
    backoff until it succeeds: nothing is skipped while a dependency is away."""


class PermanentEventError(Exception):
    """The event can never be applied (violates a business rule it should not). The record goes
    to the dead-letter topic with this message and the partition moves on."""


class DeadLetterHeaders:
    ERROR = "dlq-error"
    TOPIC = "dlq-source-topic"
    PARTITION = "dlq-source-partition"
    OFFSET = "dlq-source-offset"
    GROUP = "dlq-consumer-group"
    TRUNCATED = "dlq-truncated"  # the original size in bytes, when the copy was cut to fit


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: tuple[tuple[str, str], ...] = ()


class Subscription(Protocol):
    @property
    def processed(self) -> int: ...

    async def stop(self) -> None: ...


class Bus(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def ensure_topics(self, topics: Sequence[TopicSpec]) -> None: ...

    async def publish(self, topic: str, envelopes: Sequence[Envelope]) -> None:
        """Publish in order and return once every record is acknowledged (acks=all)."""

    async def publish_record(self, topic: str, record: KafkaRecord) -> None:
        """Publish raw bytes (dead-letter routing, external producers in tests)."""

    async def subscribe(self, group: str, topics: Sequence[str], handler: Handler) -> Subscription:
        """Consume `topics` as consumer group `group`, calling `handler` per decoded event."""

    async def ping(self) -> bool:
        """True when the broker answers (readiness)."""
