"""The processor's topics, declared before anything subscribes.

The broker does not auto-create topics, and Faust only creates the internal topics it consumes,
right before subscribing: a topic created a few milliseconds before the group's first assignment
is missing from the metadata the assignor sees, and its partitions stay unassigned until the
next rebalance (measured on Kafka 4.4: the due topic sat unassigned with `Ignoring missing
topic`). So `SlaApp.on_start` declares every topic first — the platform topics with the
platform's settings, the due topic and the table's changelog — waits until the broker's
metadata lists them all, and checks that the co-partitioned ones agree on their partition count.

It creates only the topics that are missing (asked with a describe first): on a secured cluster
the worker's principal may read and write the platform topics but not create them (they are the
operator's, e.g. Strimzi KafkaTopic resources); its own topics (`<app id>-…`) it may.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import faust
from aiokafka.admin import AIOKafkaAdminClient

from shared.bus.limits import REQUEST_TIMEOUT_MS
from shared.bus.topics import platform_topics

DUE_RETENTION_MS = str(24 * 3600 * 1000)  # due records are worthless after a day
METADATA_TIMEOUT = 30.0


class TopicMismatch(RuntimeError):
    """A co-partitioned topic exists with another partition count than configured."""


def due_topic_name(app_id: str) -> str:
    return f"{app_id}-sla-due"


def changelog_topic_name(app_id: str) -> str:
    """The `sla-state` table's changelog, as Faust names it (`<app id>-<table>-changelog`)."""
    return f"{app_id}-sla-state-changelog"


def platform_topic(app: faust.App, name: str, partitions: int) -> Any:
    spec = {s.name: s for s in platform_topics(partitions)}[name]
    return app.topic(
        name,
        key_serializer="raw",
        value_serializer="raw",
        partitions=spec.partitions,
        # Not internal: Faust would try to create it on every start, which a least-privilege
        # principal may not (docs/security.md); SlaApp.on_start creates it only when missing.
        internal=False,
        config=dict(spec.config) or None,
    )


def due_topic(app: faust.App, app_id: str, partitions: int) -> Any:
    return app.topic(
        due_topic_name(app_id),
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
        internal=True,
        config={"retention.ms": DUE_RETENTION_MS},
    )


class SlaApp(faust.App):
    """A Faust app that declares its topics and waits for them before it starts consuming."""

    declared_topics: Sequence[Any] = ()
    copartitioned: Sequence[str] = ()  # topic names that must have `conf.topic_partitions`
    kafka_security: Mapping[str, Any] = {}  # aiokafka security arguments (create_app sets them)
    sla: Any = None  # the SlaComponents, set by create_app

    async def on_start(self) -> None:
        await super().on_start()
        if not self.declared_topics:
            return
        names = [topic.get_topic_name() for topic in self.declared_topics]
        present = await existing_topics(self.conf.broker, names, self.kafka_security)
        for topic in self.declared_topics:
            if topic.get_topic_name() not in present:
                await topic.declare()
        counts = await wait_for_topics(self.conf.broker, names, self.kafka_security)
        expected = self.conf.topic_partitions
        wrong = {n: counts[n] for n in self.copartitioned if counts[n] != expected}
        if wrong:
            raise TopicMismatch(
                f"the SLA table is co-partitioned with {sorted(wrong)}, which have "
                f"{wrong} partitions, but ITSM_TOPIC_PARTITIONS is {expected}: set it to the "
                "incident topic's partition count (or use a new app id)"
            )


def _admin(brokers: Sequence[Any], security: Mapping[str, Any] | None) -> AIOKafkaAdminClient:
    bootstrap = ",".join(f"{url.host}:{url.port or 9092}" for url in brokers)
    return AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="itsm-sla-topics",
        request_timeout_ms=REQUEST_TIMEOUT_MS,
        **(security or {}),
    )


async def existing_topics(
    brokers: Sequence[Any], names: Sequence[str], security: Mapping[str, Any] | None = None
) -> set[str]:
    """Those of `names` the broker has (and lets this principal see)."""
    admin = _admin(brokers, security)
    await admin.start()
    try:
        described = await admin.describe_topics(list(names))
    finally:
        await admin.close()
    return {d["topic"] for d in described if d["error_code"] == 0}


async def wait_for_topics(
    brokers: Sequence[Any], names: Sequence[str], security: Mapping[str, Any] | None = None
) -> dict[str, int]:
    """Poll the broker's metadata until every topic in `names` is listed; their partition
    counts."""
    admin = _admin(brokers, security)
    await admin.start()
    deadline = time.monotonic() + METADATA_TIMEOUT
    try:
        while True:
            described = await admin.describe_topics(list(names))
            counts = {d["topic"]: len(d["partitions"]) for d in described if d["error_code"] == 0}
            if all(counts.get(name) for name in names):
                return counts
            if time.monotonic() > deadline:
                missing = sorted(set(names) - set(counts))
                raise TimeoutError(f"topics still missing from the metadata: {missing}")
            await asyncio.sleep(0.05)
    finally:
        await admin.close()
