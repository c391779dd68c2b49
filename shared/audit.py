"""Audit trail entries for dataclass aggregates: one entry per command, with the actor, the time,
the events it caused and each changed field's before and after. Pure (no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

from shared.contracts.registry import EventData

ALWAYS_UNTRACKED = frozenset({"version", "updated_at"})


def short_name(event: EventData) -> str:
    """`itsm.incident.assigned.v1` -> `assigned`."""
    return event.event_type.split(".")[2]


def field_changes(
    before: Any, after: Any, untracked: frozenset[str] = frozenset()
) -> dict[str, dict[str, Any]]:
    old, new = asdict(before), asdict(after)
    skip = ALWAYS_UNTRACKED | untracked
    return {
        name: {"before": old[name], "after": new[name]}
        for name in new
        if name not in skip and old[name] != new[name]
    }


def audit_entry(
    before: Any,
    after: Any,
    events: Sequence[EventData],
    *,
    at: datetime,
    internal: frozenset[str] = frozenset(),
    untracked: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """`before` is None for the command that created the aggregate. An entry whose events are
    all `internal` is marked internal (hidden from requesters)."""
    kinds = [short_name(e) for e in events]
    bodies = [b for e in events if (b := getattr(e, "body", None))]
    reasons = [r for e in events if (r := getattr(e, "reason", None))]
    return {
        "at": at,
        "actor": getattr(events[0], "actor", "system"),
        "events": kinds,
        "sequences": list(range(after.version - len(events) + 1, after.version + 1)),
        "status": after.status,
        "changes": {} if before is None else field_changes(before, after, untracked),
        "body": bodies[0] if bodies else None,
        "reason": reasons[0] if reasons else None,
        "visibility": "internal" if internal and set(kinds) <= internal else "public",
    }


# --- privileged actions (the platform-wide audit log) ---------------------------------------

PRIVILEGED_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def privileged_entry(
    *,
    entry_id: str,
    at: datetime,
    service: str,
    area: str,
    actor: str,
    roles: Sequence[str],
    source_address: str,
    method: str,
    route: str,
    path: str,
    target: dict[str, str],
    status: int,
) -> dict[str, Any]:
    """One privileged request: who, when, from where, what, and how it ended (`done` for 2xx,
    `refused` for 4xx, `failed` for 5xx)."""
    outcome = "done" if status < 400 else "refused" if status < 500 else "failed"
    return {
        "_id": entry_id,
        "at": at,
        "service": service,
        "area": area,
        "actor": actor,
        "roles": sorted(roles),
        "source_address": source_address,
        "method": method,
        "route": route,
        "path": path,
        "target": dict(target),
        "status": status,
        "outcome": outcome,
    }
