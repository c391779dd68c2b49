"""The bus port and its two adapters (Kafka via aiokafka, in-memory) with the same semantics:
per-key ordering, at-least-once delivery, offsets committed after the handler succeeds, and
undecodable records routed to the dead-letter topic without blocking the partition."""

from shared.bus.port import (
    Bus,
    DeadLetterHeaders,
    Handler,
    PermanentEventError,
    Subscription,
    TopicSpec,
    TransientError,
)

__all__ = [
    "Bus",
    "DeadLetterHeaders",
    "Handler",
    "PermanentEventError",
    "Subscription",
    "TopicSpec",
    "TransientError",
]
