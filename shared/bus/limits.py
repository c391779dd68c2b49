"""Explicit bounds for every aiokafka client of the platform: how long a request to the broker
may take, and how much a consumer may hold in memory before it has processed it.

aiokafka has defaults for all of these; they are spelled out here so that a library upgrade
cannot loosen them unseen, and so that an operator can tighten the fetch sizes (settings
`ITSM_KAFKA_MAX_POLL_RECORDS`, `ITSM_KAFKA_MAX_PARTITION_FETCH_BYTES`,
`ITSM_KAFKA_FETCH_MAX_BYTES`). `tests/security/test_outbound_timeouts.py` checks that every
client construction passes a request timeout; `tests/unit/test_consumer_bounds.py` that the
consumers get these limits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# A request the broker has not answered by then fails (and is retried by the caller's loop);
# aiokafka's consumer and admin default, made explicit.
REQUEST_TIMEOUT_MS = 40_000

MIB = 1_048_576


@dataclass(frozen=True)
class FetchLimits:
    """What one consumer holds before processing: at most `max_records` records per fetch
    (processed before the next), `max_partition_fetch_bytes` per partition and
    `fetch_max_bytes` per fetch response in aiokafka's buffer."""

    max_records: int = 500
    max_partition_fetch_bytes: int = MIB  # the broker's default record limit fits in one fetch
    fetch_max_bytes: int = 16 * MIB

    def __post_init__(self) -> None:
        if self.max_records < 1:
            raise ValueError("max_records must be at least 1")
        if self.fetch_max_bytes < self.max_partition_fetch_bytes:
            raise ValueError("fetch_max_bytes must be at least max_partition_fetch_bytes")

    def consumer_kwargs(self) -> dict[str, Any]:
        """The aiokafka consumer arguments: the bounds and the request timeout."""
        return {
            "max_poll_records": self.max_records,
            "max_partition_fetch_bytes": self.max_partition_fetch_bytes,
            "fetch_max_bytes": self.fetch_max_bytes,
            "request_timeout_ms": REQUEST_TIMEOUT_MS,
        }


def fetch_limits(settings: Any) -> FetchLimits:
    """The limits a service's settings (`shared.settings.ServiceSettings`) configure."""
    return FetchLimits(
        max_records=settings.kafka_max_poll_records,
        max_partition_fetch_bytes=settings.kafka_max_partition_fetch_bytes,
        fetch_max_bytes=settings.kafka_fetch_max_bytes,
    )
