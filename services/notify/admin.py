"""Use cases behind the administration API: versioned escalation policies, rotations and their
overrides, the directory of people and groups. Each checks what the domain requires and stores
the result in one guarded write."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from services.notify.documents import Group, Person, StoredRotation
from services.notify.domain import rotations
from services.notify.domain.policies import EscalationPolicy
from services.notify.domain.rotations import Override, Rotation
from services.notify.handlers import Notify
from shared.errors import Conflict, Invalid, NotFound, PreconditionFailed

MakePolicy = Callable[[int], EscalationPolicy]  # version -> the policy at that version


def versions_of(policies: tuple[EscalationPolicy, ...], policy_id: str) -> list[EscalationPolicy]:
    return sorted((p for p in policies if p.id == policy_id), key=lambda p: p.version)


async def latest_policy(notify: Notify, policy_id: str) -> EscalationPolicy:
    versions = versions_of((await notify.policies.catalog()).policies, policy_id)
    if not versions:
        raise NotFound(f"escalation policy {policy_id} not found")
    return versions[-1]


async def create_policy(
    notify: Notify, policy: EscalationPolicy, *, by: str, now: datetime
) -> EscalationPolicy:
    catalog = await notify.policies.catalog()
    if versions_of(catalog.policies, policy.id):
        raise Conflict(f"escalation policy {policy.id} exists; PUT a new version instead")
    catalog.with_version(policy)  # refuses an ambiguous overlap (409) or a wrong version
    await notify.policies.add(policy, by=by, at=now)
    return policy


async def new_policy_version(
    notify: Notify,
    policy_id: str,
    make: MakePolicy,
    *,
    expected: int | None,
    by: str,
    now: datetime,
) -> EscalationPolicy:
    """The next version of a policy; running escalations keep the version they started with."""
    catalog = await notify.policies.catalog()
    versions = versions_of(catalog.policies, policy_id)
    if not versions:
        raise NotFound(f"escalation policy {policy_id} not found")
    latest = versions[-1].version
    if expected is not None and expected != latest:
        raise PreconditionFailed(latest)
    policy = make(latest + 1)
    catalog.with_version(policy)
    await notify.policies.add(policy, by=by, at=now)
    return policy


async def retire_policy(
    notify: Notify, policy_id: str, *, expected: int | None, by: str, now: datetime
) -> EscalationPolicy:
    latest = await latest_policy(notify, policy_id)
    if not latest.enabled:
        return latest
    return await new_policy_version(
        notify,
        policy_id,
        lambda v: replace(latest, version=v, enabled=False),
        expected=expected,
        by=by,
        now=now,
    )


def _rotation(make: Callable[[], Rotation]) -> Rotation:
    """The domain refuses an unknown zone with ValueError: a 422, like its other refusals."""
    try:
        return make()
    except ValueError as exc:
        raise Invalid(str(exc)) from None


async def create_rotation(notify: Notify, make: Callable[[], Rotation]) -> StoredRotation:
    stored = StoredRotation(_rotation(make), 1)
    await notify.rotations.add(stored, [])
    return stored


async def get_rotation(notify: Notify, rotation_id: str) -> StoredRotation:
    stored = await notify.rotations.get(rotation_id)
    if stored is None:
        raise NotFound(f"rotation {rotation_id} not found")
    return stored


async def change_rotation(
    notify: Notify,
    rotation_id: str,
    change: Callable[[Rotation], Rotation],
    *,
    expected: int | None,
) -> StoredRotation:
    stored = await get_rotation(notify, rotation_id)
    if expected is not None and expected != stored.version:
        raise PreconditionFailed(stored.version)
    updated = StoredRotation(_rotation(lambda: change(stored.rotation)), stored.version + 1)
    await notify.rotations.save(updated, stored.version, [])
    return updated


async def add_override(
    notify: Notify,
    rotation_id: str,
    override: Override,
    *,
    expected: int | None,
    now: datetime,
    cap: int,
) -> StoredRotation:
    """Add an override; at most `cap` of a rotation's overrides may be still to end (409)."""
    return await change_rotation(
        notify,
        rotation_id,
        lambda r: rotations.add_override(r, override, now=now, cap=cap),
        expected=expected,
    )


async def put_person(
    notify: Notify, make: Callable[[int], Person], user: str, *, expected: int | None
) -> Person:
    """Create or replace a person's entry (guarded by If-Match when given)."""
    current = await notify.people.get(user)
    if current is None:
        person = make(1)
        await notify.people.add(person, [])
        return person
    if expected is not None and expected != current.version:
        raise PreconditionFailed(current.version)
    person = make(current.version + 1)
    await notify.people.save(person, current.version, [])
    return person


async def put_group(
    notify: Notify, name: str, members: tuple[str, ...], *, expected: int | None
) -> Group:
    current = await notify.groups.get(name)
    if current is None:
        group = Group(name, members, 1)
        await notify.groups.add(group, [])
        return group
    if expected is not None and expected != current.version:
        raise PreconditionFailed(current.version)
    group = Group(name, members, current.version + 1)
    await notify.groups.save(group, current.version, [])
    return group
