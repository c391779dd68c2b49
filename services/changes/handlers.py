"""Change use cases behind the HTTP API: load what the caller may see, check what they may do,
gather what the rule needs (other changes, freezes, maintenance windows, CAB members), run the
domain command, store state + events + audit entry in one version-guarded write."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from services.changes.access import ChangeScope
from services.changes.domain import actions
from services.changes.domain.model import Change, Outcome, Plan, Window
from services.changes.domain.scheduling import within_maintenance
from services.changes.store import (
    IDEMPOTENCY_KEYS,
    ApprovalGroupRepository,
    ChangeFilter,
    ChangeRepository,
    FreezeRepository,
    ItemRepository,
    MaintenanceRepository,
    TemplateRepository,
)
from shared.audit import audit_entry
from shared.auth.principal import Principal, Role
from shared.contracts.changes import ChangeEvent
from shared.errors import Forbidden, Invalid, NotFound, PreconditionFailed
from shared.ids import uuid7
from shared.store import idempotency
from shared.store.idempotency import IdempotencyKey
from shared.store.outcomes import store_changed, store_created

SOURCE = "/itsm/changes"
NextNumber = Callable[[], Awaitable[int]]
Allowed = Callable[[ChangeScope, Change], bool]
AUDIT_UNTRACKED = frozenset({"approvals", "requirements"})


@dataclass(frozen=True)
class Changes:
    repo: ChangeRepository
    templates: TemplateRepository
    items: ItemRepository
    approval_groups: ApprovalGroupRepository
    freezes: FreezeRepository
    maintenance: MaintenanceRepository
    next_number: NextNumber
    correlation_window: timedelta = timedelta(hours=24)

    async def scope(self, user: Principal) -> ChangeScope:
        groups = await self.approval_groups.all()
        return ChangeScope(user, frozenset(g.name for g in groups if user.subject in g.members))


def entry(
    before: Change | None, after: Change, events: list[ChangeEvent], now: datetime
) -> dict[str, Any]:
    return audit_entry(before, after, events, at=now, untracked=AUDIT_UNTRACKED)


async def commit(changes: Changes, before: Change, outcome: Outcome, *, now: datetime) -> Change:
    after, events = outcome
    if not events:
        return before
    return await store_changed(
        changes.repo, after, events, aggregate_id=after.id, from_version=before.version,
        source=SOURCE, now=now, audit=entry(before, after, events, now),
    )  # fmt: skip


async def check_items(changes: Changes, items: tuple[str, ...]) -> None:
    unknown = await changes.items.unknown(items)
    if unknown:
        raise Invalid(f"unknown configuration items: {', '.join(unknown)}")


async def create(
    changes: Changes, command: actions.NewChange, *, now: datetime, change_id: str | None = None
) -> Change:
    if command.change_type == "standard":
        command = await from_template(changes, command)
    if not command.configuration_items:
        raise Invalid("name at least one configuration item the change affects")
    await check_items(changes, command.configuration_items)
    number = f"CHG{await changes.next_number():07d}"
    change, events = actions.create(command, change_id=change_id or uuid7(), number=number, now=now)
    return await store_created(
        changes.repo, change, events, aggregate_id=change.id, source=SOURCE, now=now,
        audit=entry(None, change, events, now),
    )  # fmt: skip


async def create_once(
    changes: Changes, command: actions.NewChange, key: IdempotencyKey, *, now: datetime
) -> tuple[Change, bool]:
    """Create the change unless a request with the same idempotency key already did: the
    change and whether it was there already (shared/store/idempotency.py)."""
    keys = changes.repo.database[IDEMPOTENCY_KEYS]

    async def create_as(change_id: str) -> Change:
        return await create(changes, command, now=now, change_id=change_id)

    return await idempotency.create_once(changes.repo, keys, key, create_as, now=now)


async def from_template(changes: Changes, command: actions.NewChange) -> actions.NewChange:
    if command.template is None:
        raise Invalid("a standard change needs a template from the catalog")
    template = await changes.templates.get(command.template)
    if template is None:
        raise Invalid(f"no standard change template {command.template}")
    plan = Plan(template.implementation, template.backout, template.test, backout_tested=True)
    services = command.services or template.services
    return actions.NewChange(
        **{
            **vars(command),
            "plan": plan,
            "services": services,
            "title": command.title or template.title,
        }
    )


async def visible(changes: Changes, scope: ChangeScope, change_id: str) -> Change:
    change = await changes.repo.get(change_id)
    if change is None or not scope.can_view(change):
        raise NotFound(f"change {change_id} not found")
    return change


async def act(
    changes: Changes, scope: ChangeScope, change_id: str,
    command: Callable[[Change], Awaitable[Outcome]] | Callable[[Change], Outcome], *,
    allowed: Allowed, now: datetime, expected_version: int | None, denial: str,
) -> Change:  # fmt: skip
    change = await visible(changes, scope, change_id)
    if not allowed(scope, change):
        raise Forbidden(denial)
    if expected_version is not None and expected_version != change.version:
        raise PreconditionFailed(change.version)
    outcome = command(change)
    if not isinstance(outcome, tuple):
        outcome = await outcome
    return await commit(changes, change, outcome, now=now)


def requester_or_manager(scope: ChangeScope, change: Change) -> bool:
    return scope.can_edit(change)


def manager(scope: ChangeScope, change: Change) -> bool:
    return scope.is_change_manager


def implementer(scope: ChangeScope, change: Change) -> bool:
    return scope.can_implement(change)


def anyone_who_sees(scope: ChangeScope, change: Change) -> bool:
    return True


async def edit(
    changes: Changes, scope: ChangeScope, change_id: str, fields: dict[str, Any], *,
    now: datetime, expected_version: int | None,
) -> Change:  # fmt: skip
    if "configuration_items" in fields:
        await check_items(changes, fields["configuration_items"])
    return await act(
        changes, scope, change_id, lambda c: actions.edit(c, fields, actor=scope.subject, now=now),
        allowed=requester_or_manager, now=now, expected_version=expected_version,
        denial="only the requester or a change manager may edit a change",
    )  # fmt: skip


async def schedule_context(changes: Changes, change: Change) -> tuple[list[Change], list[Any]]:
    if change.window is None:
        raise Invalid("plan the change window first")
    others = await changes.repo.holding(change.configuration_items, change.window)
    freezes = await changes.freezes.overlapping(change.window)
    return others, freezes


async def submit(
    changes: Changes, scope: ChangeScope, change_id: str, *, now: datetime,
    expected_version: int | None,
) -> Change:  # fmt: skip
    async def run(change: Change) -> Outcome:
        others, freezes = await schedule_context(changes, change)
        return actions.submit(change, actor=scope.subject, now=now, others=others, freezes=freezes)

    return await act(
        changes, scope, change_id, run, allowed=requester_or_manager, now=now,
        expected_version=expected_version,
        denial="only the requester or a change manager may submit",
    )  # fmt: skip


async def assess(
    changes: Changes, scope: ChangeScope, change_id: str, *, now: datetime,
    expected_version: int | None,
) -> Change:  # fmt: skip
    async def run(change: Change) -> Outcome:
        inside = change.window is not None and within_maintenance(
            change.window, change.services, await changes.maintenance.all()
        )
        groups = await changes.approval_groups.members()
        return actions.assess(
            change, actor=scope.subject, now=now, within_maintenance=inside, approval_groups=groups
        )

    return await act(
        changes, scope, change_id, run, allowed=manager, now=now,
        expected_version=expected_version, denial="only a change manager assesses changes",
    )  # fmt: skip


async def decide(
    changes: Changes, scope: ChangeScope, change_id: str,
    decision: Literal["approve", "reject"], *, comment: str, now: datetime,
    expected_version: int | None,
) -> Change:  # fmt: skip
    async def run(change: Change) -> Outcome:
        others: list[Change] = []
        freezes: list[Any] = []
        if decision == "approve":
            others, freezes = await schedule_context(changes, change)
        return actions.decide(
            change, decision, user=scope.subject, comment=comment,
            is_change_manager=Role.CHANGE_MANAGER in scope.user.roles, now=now,
            others=others, freezes=freezes,
        )  # fmt: skip

    return await act(
        changes, scope, change_id, run, allowed=anyone_who_sees, now=now,
        expected_version=expected_version, denial="",
    )  # fmt: skip


async def list_changes(
    changes: Changes, scope: ChangeScope, filters: ChangeFilter, *, limit: int, offset: int
) -> tuple[list[Change], int]:
    query = filters.query()
    restriction = scope.list_filter()
    if restriction:
        query = {"$and": [query, restriction]} if query else restriction
    return await changes.repo.find(
        query, sort=(("created_at", -1), ("_id", -1)), skip=offset, limit=limit
    )


async def calendar(changes: Changes, window: Window, scope: ChangeScope) -> dict[str, Any]:
    """Changes, freezes and maintenance windows overlapping `window`."""
    visible_changes = [
        c for c in await changes.repo.in_range(window.start, window.end) if scope.can_view(c)
    ]
    freezes = await changes.freezes.overlapping(window)
    maintenance = [
        (m, occurrence)
        for m in await changes.maintenance.all()
        for occurrence in m.occurrences(window)
    ]
    return {"changes": visible_changes, "freezes": freezes, "maintenance": maintenance}
