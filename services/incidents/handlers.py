"""Incident use cases behind the HTTP API: load what the caller may see, check what they may
do, run the domain command, and store the new state with its events and timeline entry in one
version-guarded write."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from services.incidents import domain
from services.incidents.access import AccessScope
from services.incidents.domain import GroupRef, Incident, OpenIncident, Outcome, Policy
from services.incidents.domain.timeline import entry
from services.incidents.store import (
    IDEMPOTENCY_KEYS,
    Group,
    GroupRepository,
    IncidentFilter,
    IncidentRepository,
)
from shared.auth.principal import Principal, Role
from shared.auth.reach import AgentReach
from shared.contracts.incidents import AssignmentGroupSaved, Closure
from shared.errors import Forbidden, NotFound, PreconditionFailed
from shared.ids import uuid7
from shared.store.errors import ConcurrencyConflict
from shared.store.idempotency import IdempotencyKey, create_once
from shared.store.outcomes import store_changed, store_created

SOURCE = "/itsm/incidents"
NextNumber = Callable[[], Awaitable[int]]
Command = Callable[[Incident], Outcome]


@dataclass(frozen=True)
class Incidents:
    """What the incident use cases work with (the service's unit of work)."""

    repo: IncidentRepository
    groups: GroupRepository
    next_number: NextNumber
    policy: Policy
    agents_see_all: bool = False

    async def scope(self, user: Principal) -> AccessScope:
        groups = await self.groups.of_member(user.subject) if Role.AGENT in user.roles else []
        memberships = [(g.name, g.tier) for g in groups]
        reach = AgentReach.of(user.subject, memberships, everything=self.agents_see_all)
        return AccessScope(user=user, reach=reach)


async def record(
    incidents: Incidents, command: OpenIncident, *, now: datetime, incident_id: str | None = None
) -> Incident:
    number = f"INC{await incidents.next_number():07d}"
    outcome = domain.open_incident(
        command, incident_id=incident_id or uuid7(), number=number, now=now,
        policy=incidents.policy,
    )  # fmt: skip
    return await store_new(incidents, outcome, now=now)


async def record_once(
    incidents: Incidents, command: OpenIncident, key: IdempotencyKey, *, now: datetime
) -> tuple[Incident, bool]:
    """Record the incident unless a request with the same idempotency key already did: the
    incident and whether it was there already (shared/store/idempotency.py)."""
    keys = incidents.repo.database[IDEMPOTENCY_KEYS]

    async def record_as(incident_id: str) -> Incident:
        return await record(incidents, command, now=now, incident_id=incident_id)

    return await create_once(incidents.repo, keys, key, record_as, now=now)


async def store_new(incidents: Incidents, outcome: Outcome, *, now: datetime) -> Incident:
    incident, events = outcome
    return await store_created(
        incidents.repo, incident, events, aggregate_id=incident.id, source=SOURCE, now=now,
        audit=entry(None, incident, events, at=now),
    )  # fmt: skip


async def commit(
    incidents: Incidents, before: Incident, outcome: Outcome, *, now: datetime,
    timeline: bool = True,
) -> Incident:  # fmt: skip
    """Store a command's outcome: state, events (outbox) and timeline entry, in one write
    guarded by the version the command started from."""
    after, events = outcome
    if not events:
        return before
    return await store_changed(
        incidents.repo, after, events, aggregate_id=after.id, from_version=before.version,
        source=SOURCE, now=now, audit=entry(before, after, events, at=now) if timeline else None,
    )  # fmt: skip


async def visible(incidents: Incidents, scope: AccessScope, incident_id: str) -> Incident:
    incident = await incidents.repo.get(incident_id)
    if incident is None or not scope.can_view(incident):
        raise NotFound(f"incident {incident_id} not found")
    return incident


def check_version(incident: Incident, expected: int | None) -> None:
    if expected is not None and incident.version != expected:
        raise PreconditionFailed(incident.version)


async def act(
    incidents: Incidents,
    scope: AccessScope,
    incident_id: str,
    command: Command,
    *,
    now: datetime,
    allowed: Callable[[AccessScope, Incident], bool],
    expected_version: int | None = None,
    denial: str = "you may not do this on this incident",
) -> Incident:
    incident = await visible(incidents, scope, incident_id)
    if not allowed(scope, incident):
        raise Forbidden(denial)
    check_version(incident, expected_version)
    return await commit(incidents, incident, command(incident), now=now)


# Who may do what, beyond seeing the incident.
def staff(scope: AccessScope, incident: Incident) -> bool:
    return scope.can_work(incident)


def owner_or_staff(scope: AccessScope, incident: Incident) -> bool:
    return scope.can_work(incident) or (Role.REQUESTER in scope.user.roles and scope.owns(incident))


def owner(scope: AccessScope, incident: Incident) -> bool:
    return Role.REQUESTER in scope.user.roles and scope.owns(incident)


def supervisor(scope: AccessScope, incident: Incident) -> bool:
    return scope.supervises


async def list_incidents(
    incidents: Incidents, scope: AccessScope, filters: IncidentFilter, *, limit: int, offset: int
) -> tuple[list[Incident], int]:
    restriction = scope.list_filter()
    if restriction is None:
        raise Forbidden("your roles do not allow listing incidents")
    query = filters.query()
    if restriction:
        query = {"$and": [query, restriction]} if query else restriction
    return await incidents.repo.find(
        query, sort=(("created_at", -1), ("_id", -1)), skip=offset, limit=limit
    )


async def timeline(
    incidents: Incidents, scope: AccessScope, incident_id: str
) -> list[dict[str, Any]]:
    incident = await visible(incidents, scope, incident_id)
    entries = await incidents.repo.read_field(incident.id, "timeline") or []
    if not (scope.can_work(incident) or Role.CHANGE_MANAGER in scope.user.roles):
        entries = [e for e in entries if e["visibility"] == "public"]
    return entries


async def group_ref(incidents: Incidents, name: str) -> tuple[GroupRef, Group]:
    group = await incidents.groups.get(name)
    if group is None:
        raise NotFound(f"assignment group {name} not found")
    return GroupRef(group.name, group.tier), group


async def assign(
    incidents: Incidents, scope: AccessScope, incident_id: str, *, group: str,
    assignee: str | None, reason: str | None, now: datetime, expected_version: int | None,
) -> Incident:  # fmt: skip
    ref, details = await group_ref(incidents, group)
    if assignee is not None and assignee not in details.members:
        raise Forbidden(f"{assignee} is not a member of {group}")
    return await act(
        incidents, scope, incident_id,
        lambda i: domain.assign(i, ref, assignee, actor=scope.subject, now=now, reason=reason),
        now=now, allowed=staff, expected_version=expected_version,
    )  # fmt: skip


async def escalate(
    incidents: Incidents, scope: AccessScope, incident_id: str, *, to_group: str, reason: str,
    now: datetime, expected_version: int | None,
) -> Incident:  # fmt: skip
    ref, _ = await group_ref(incidents, to_group)
    return await act(
        incidents, scope, incident_id,
        lambda i: domain.escalate_functionally(i, ref, reason=reason, actor=scope.subject, now=now),
        now=now, allowed=staff, expected_version=expected_version,
    )  # fmt: skip


async def escalate_to_manager(
    incidents: Incidents, scope: AccessScope, incident_id: str, *, manager: str | None,
    reason: str, now: datetime, expected_version: int | None,
) -> Incident:  # fmt: skip
    incident = await visible(incidents, scope, incident_id)
    target = manager
    if target is None and incident.assignment_group:
        group = await incidents.groups.get(incident.assignment_group)
        target = group.manager if group else None
    if target is None:
        raise NotFound("no manager to escalate to: name one, or give the group a manager")
    actor = scope.subject
    return await act(
        incidents,
        scope,
        incident_id,
        lambda i: domain.escalate_to_manager(
            i, manager=target, reason=reason, actor=actor, now=now
        ),
        now=now,
        allowed=staff,
        expected_version=expected_version,
    )


async def link_to_parent(
    incidents: Incidents, scope: AccessScope, incident_id: str, *, parent_id: str,
    now: datetime, expected_version: int | None,
) -> Incident:  # fmt: skip
    parent = await visible(incidents, scope, parent_id)
    return await act(
        incidents, scope, incident_id,
        lambda i: domain.link_to_parent(i, parent, actor=scope.subject, now=now),
        now=now, allowed=staff, expected_version=expected_version,
    )  # fmt: skip


async def close(
    incidents: Incidents, scope: AccessScope, incident_id: str, *, now: datetime,
    expected_version: int | None,
) -> Incident:  # fmt: skip
    """The requester confirms the resolution; a manager or admin may close it themselves."""
    incident = await visible(incidents, scope, incident_id)
    closure: Closure = "confirmed" if owner(scope, incident) else "manual"
    return await act(
        incidents, scope, incident_id,
        lambda i: domain.close(i, closure, actor=scope.subject, now=now),
        now=now, allowed=lambda s, i: owner(s, i) or s.supervises,
        expected_version=expected_version,
        denial="only the requester (confirming) or a manager may close an incident",
    )  # fmt: skip


def may_cancel(scope: AccessScope, incident: Incident) -> bool:
    """Staff cancel open incidents; a requester may withdraw their own until it is assigned."""
    return scope.can_work(incident) or (owner(scope, incident) and incident.status == "new")


def may_edit(fields: set[str]) -> Callable[[AccessScope, Incident], bool]:
    def allowed(scope: AccessScope, incident: Incident) -> bool:
        return scope.can_work(incident) or (
            owner(scope, incident) and fields <= {"title", "description"}
        )

    return allowed


# ---- assignment groups -------------------------------------------------------------------------


def group_saved(group: Group) -> AssignmentGroupSaved:
    """The group as other services see it: who works the tickets assigned to it."""
    return AssignmentGroupSaved(
        name=group.name, tier=group.tier, members=list(group.members), manager=group.manager
    )


async def add_group(incidents: Incidents, group: Group, *, now: datetime) -> Group:
    return await store_created(
        incidents.groups, group, [group_saved(group)], aggregate_id=group.name,
        source=SOURCE, now=now,
    )  # fmt: skip


async def set_group_members(
    incidents: Incidents, name: str, members: tuple[str, ...], manager: str | None, *,
    now: datetime, expected_version: int | None,
) -> Group:  # fmt: skip
    group = await incidents.groups.get(name)
    if group is None:
        raise NotFound(f"assignment group {name} not found")
    if expected_version is not None and expected_version != group.version:
        raise PreconditionFailed(group.version)
    updated = replace(group, members=members, manager=manager, version=group.version + 1)
    return await store_changed(
        incidents.groups, updated, [group_saved(updated)], aggregate_id=name,
        from_version=group.version, source=SOURCE, now=now,
    )  # fmt: skip


async def publish_unpublished_groups(incidents: Incidents, *, now: datetime) -> int:
    """Groups stored before groups were published (an upgrade) are published once, as a new
    version, so the services that scope by them (the SLA API) learn them. Another replica doing
    the same at the same time wins the version check, and this one leaves that group alone."""
    published = 0
    for group in await incidents.groups.unpublished():
        try:
            await store_changed(
                incidents.groups, replace(group, version=group.version + 1),
                [group_saved(group)], aggregate_id=group.name, from_version=group.version,
                source=SOURCE, now=now,
            )  # fmt: skip
        except ConcurrencyConflict:
            continue
        published += 1
    return published
