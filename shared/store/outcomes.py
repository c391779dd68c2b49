"""Storing a command's outcome: the aggregate's new state, its events numbered after the version
the command started from, and (optionally) its audit entry — in one version-guarded write."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

from shared.contracts.envelope import sequenced
from shared.contracts.registry import EventData
from shared.store.repository import AggregateRepository

A = TypeVar("A")
AUDIT_FIELD = "timeline"


async def store_created(
    repo: AggregateRepository[A],
    aggregate: A,
    events: Sequence[EventData],
    *,
    aggregate_id: str,
    source: str,
    now: datetime,
    audit: dict[str, Any] | None = None,
) -> A:
    await repo.add(
        aggregate,
        sequenced(aggregate_id, 0, list(events), source=source, time=now),
        append={AUDIT_FIELD: [audit] if audit else []},
    )
    return aggregate


async def store_changed(
    repo: AggregateRepository[A],
    after: A,
    events: Sequence[EventData],
    *,
    aggregate_id: str,
    from_version: int,
    source: str,
    now: datetime,
    audit: dict[str, Any] | None = None,
) -> A:
    await repo.save(
        after,
        from_version,
        sequenced(aggregate_id, from_version, list(events), source=source, time=now),
        append={AUDIT_FIELD: [audit] if audit else []},
    )
    return after
