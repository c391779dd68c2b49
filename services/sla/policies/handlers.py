"""Use cases behind the policy API: read what the rule needs (the current version, the calendar,
the policies with the same selector), run the pure command, store the new version with its
event in one version-guarded write (the outbox relay then publishes it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from services.sla.policies import model
from services.sla.policies.model import (
    CalendarSpec,
    CalendarVersion,
    PolicySpec,
    PolicyVersion,
)
from services.sla.policies.store import (
    HISTORY,
    CalendarFilter,
    CalendarRepository,
    PolicyFilter,
    PolicyRepository,
)
from shared.contracts.envelope import sequenced
from shared.contracts.registry import EventData
from shared.contracts.sla_policies import record_key
from shared.errors import Invalid, NotFound, PreconditionFailed
from shared.store.locks import document_lock
from shared.store.repository import AggregateRepository

SOURCE = "/itsm/sla"


@dataclass(frozen=True)
class PolicyAdmin:
    calendars: CalendarRepository
    policies: PolicyRepository


async def _store(
    repo: AggregateRepository[Any], kind: Literal["policy", "calendar"], before: Any | None,
    after: Any, events: Sequence[EventData], now: datetime,
) -> Any:  # fmt: skip
    """The new version as the document's state, in its history, and its event in the outbox
    (keyed by id and version: see shared/contracts/sla_policies.py)."""
    envelopes = sequenced(
        record_key(kind, after.id, after.version), after.version - len(events), list(events),
        source=SOURCE, time=now,
    )  # fmt: skip
    history = {HISTORY: [repo.to_document(after)]}
    if before is None:
        await repo.add(after, envelopes, append=history)
    else:
        await repo.save(after, before.version, envelopes, append=history)
    return after


def _check_version(current: Any, expected: int | None) -> None:
    if expected is not None and expected != current.version:
        raise PreconditionFailed(current.version)


# -- calendars --------------------------------------------------------------------------------


async def calendar(admin: PolicyAdmin, calendar_id: str, version: int | None = None) -> Any:
    if version is None:
        found = await admin.calendars.get(calendar_id)
    else:
        history = await admin.calendars.history(calendar_id) or []
        found = next((c for c in history if c.version == version), None)
    if found is None:
        suffix = "" if version is None else f" version {version}"
        raise NotFound(f"calendar {calendar_id}{suffix} not found")
    return found


async def calendar_history(admin: PolicyAdmin, calendar_id: str) -> list[CalendarVersion]:
    history = await admin.calendars.history(calendar_id)
    if history is None:
        raise NotFound(f"calendar {calendar_id} not found")
    return history


async def list_calendars(
    admin: PolicyAdmin, filters: CalendarFilter, *, limit: int, offset: int
) -> tuple[list[CalendarVersion], int]:
    return await admin.calendars.find(filters.query(), sort=(("_id", 1),), skip=offset, limit=limit)


async def create_calendar(
    admin: PolicyAdmin, calendar_id: str, spec: CalendarSpec, *,
    effective_from: datetime | None, actor: str, now: datetime,
) -> CalendarVersion:  # fmt: skip
    created, events = model.create_calendar(
        calendar_id, spec, effective_from=effective_from, actor=actor, now=now
    )
    result: CalendarVersion = await _store(admin.calendars, "calendar", None, created, events, now)
    return result


async def revise_calendar(
    admin: PolicyAdmin, calendar_id: str, spec: CalendarSpec, *,
    effective_from: datetime | None, expected_version: int, actor: str, now: datetime,
) -> CalendarVersion:  # fmt: skip
    current = await calendar(admin, calendar_id)
    _check_version(current, expected_version)
    revised, events = model.revise_calendar(
        current, spec, effective_from=effective_from, actor=actor, now=now
    )
    result: CalendarVersion = await _store(
        admin.calendars, "calendar", current, revised, events, now
    )
    return result


async def retire_calendar(
    admin: PolicyAdmin, calendar_id: str, *, effective_from: datetime | None,
    expected_version: int | None, actor: str, now: datetime,
) -> CalendarVersion:  # fmt: skip
    current = await calendar(admin, calendar_id)
    _check_version(current, expected_version)
    users = sorted(p.id for p in await admin.policies.using_calendar(calendar_id))
    retired, events = model.retire_calendar(
        current, effective_from=effective_from, actor=actor, now=now, used_by=users
    )
    result: CalendarVersion = await _store(
        admin.calendars, "calendar", current, retired, events, now
    )
    return result


# -- policies ---------------------------------------------------------------------------------


async def policy(admin: PolicyAdmin, policy_id: str, version: int | None = None) -> Any:
    if version is None:
        found = await admin.policies.get(policy_id)
    else:
        history = await admin.policies.history(policy_id) or []
        found = next((p for p in history if p.version == version), None)
    if found is None:
        suffix = "" if version is None else f" version {version}"
        raise NotFound(f"policy {policy_id}{suffix} not found")
    return found


async def policy_history(admin: PolicyAdmin, policy_id: str) -> list[PolicyVersion]:
    history = await admin.policies.history(policy_id)
    if history is None:
        raise NotFound(f"policy {policy_id} not found")
    return history


async def list_policies(
    admin: PolicyAdmin, filters: PolicyFilter, *, limit: int, offset: int
) -> tuple[list[PolicyVersion], int]:
    return await admin.policies.find(filters.query(), sort=(("_id", 1),), skip=offset, limit=limit)


async def _check_calendar(admin: PolicyAdmin, calendar_id: str) -> None:
    found = await admin.calendars.get(calendar_id)
    if found is None:
        raise Invalid(f"unknown calendar {calendar_id!r}: create it first (POST /calendars)")
    if found.retired:
        raise Invalid(f"calendar {calendar_id!r} is retired: choose an active calendar")


async def create_policy(
    admin: PolicyAdmin, policy_id: str, spec: PolicySpec, *,
    effective_from: datetime | None, actor: str, now: datetime,
) -> PolicyVersion:  # fmt: skip
    model.check_policy(spec)
    await _check_calendar(admin, spec.calendar_id)
    # Serialises creations for one selector in this process, so two cannot both pass the
    # overlap check (policy writes are rare and admin-only; see docs/sla.md for several APIs).
    async with document_lock(admin.policies.collection, f"selector:{spec.selector}"):
        same = await admin.policies.with_selector(spec.selector)
        created, events = model.create_policy(
            policy_id, spec, effective_from=effective_from, actor=actor, now=now,
            same_selector=same,
        )  # fmt: skip
        result: PolicyVersion = await _store(admin.policies, "policy", None, created, events, now)
    return result


async def revise_policy(
    admin: PolicyAdmin, policy_id: str, spec: PolicySpec, *,
    effective_from: datetime | None, expected_version: int, actor: str, now: datetime,
) -> PolicyVersion:  # fmt: skip
    current = await policy(admin, policy_id)
    _check_version(current, expected_version)
    model.check_policy(spec)
    if spec.calendar_id != current.calendar_id:
        await _check_calendar(admin, spec.calendar_id)
    revised, events = model.revise_policy(
        current, spec, effective_from=effective_from, actor=actor, now=now
    )
    result: PolicyVersion = await _store(admin.policies, "policy", current, revised, events, now)
    return result


async def retire_policy(
    admin: PolicyAdmin, policy_id: str, *, effective_from: datetime | None,
    expected_version: int | None, actor: str, now: datetime,
) -> PolicyVersion:  # fmt: skip
    current = await policy(admin, policy_id)
    _check_version(current, expected_version)
    retired, events = model.retire_policy(
        current, effective_from=effective_from, actor=actor, now=now
    )
    result: PolicyVersion = await _store(admin.policies, "policy", current, retired, events, now)
    return result
