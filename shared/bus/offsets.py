"""Consumer-group offsets: where a new group starts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from shared.bus.limits import REQUEST_TIMEOUT_MS

log = structlog.get_logger(__name__)


async def start_new_group_at_the_end(
    bootstrap: str,
    group: str,
    topics: Iterable[str],
    security: Mapping[str, Any] | None = None,
) -> int:
    """Commit the end offsets of those `topics` on which `group` has no offset at all (a new
    group, or a topic it newly consumes); how many partitions were committed. The broker
    refuses the commit once the group has members: a running consumer's offsets are the
    group's, and nothing is changed."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        client_id=f"{group}-offsets",
        enable_auto_commit=False,
        request_timeout_ms=REQUEST_TIMEOUT_MS,
        **(security or {}),
    )
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()  # topics() does not refresh the cache
        tps = [
            TopicPartition(topic, p)
            for topic in sorted(set(topics))
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        started = {tp.topic for tp in tps if await consumer.committed(tp) is not None}
        fresh = [tp for tp in tps if tp.topic not in started]
        if fresh:
            ends = await consumer.end_offsets(fresh)
            consumer.assign(fresh)
            await consumer.commit({tp: ends[tp] for tp in fresh})
            log.info("bus.group.started_at_end", group=group, partitions=len(fresh))
        return len(fresh)
    except KafkaError as exc:
        log.info("bus.group.not_started_at_end", group=group, reason=repr(exc))
        return 0
    finally:
        await consumer.stop()
