"""Change commands: each takes the current change and returns the new one plus its events.
Pure: actor and time are parameters; other changes and freezes are passed in."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from services.changes.domain import approvals as policy
from services.changes.domain.model import (
    Approval,
    Change,
    Outcome,
    Plan,
    Review,
    RiskAnswers,
    Window,
    evolve,
    step,
)
from services.changes.domain.risk import assess_risk
from services.changes.domain.scheduling import FreezeWindow, check_schedule
from shared.contracts.changes import (
    ChangeApprovalDelegated,
    ChangeApprovalRecorded,
    ChangeApproved,
    ChangeAssessed,
    ChangeCancelled,
    ChangeClosed,
    ChangeCompleted,
    ChangeCreated,
    ChangeDeclined,
    ChangeIncidentLinked,
    ChangeRejected,
    ChangeReviewed,
    ChangeStarted,
    ChangeSubmitted,
    ChangeType,
    ChangeUpdated,
    ImplementationOutcome,
)
from shared.contracts.incidents import FieldChange
from shared.errors import Conflict, Forbidden, Invalid

EDITABLE = frozenset(
    {
        "title",
        "description",
        "implementer",
        "services",
        "configuration_items",
        "plan",
        "window",
        "answers",
    }
)


@dataclass(frozen=True)
class NewChange:
    title: str
    change_type: ChangeType
    requester: str
    description: str = ""
    implementer: str | None = None
    template: str | None = None
    services: tuple[str, ...] = ()
    configuration_items: tuple[str, ...] = ()
    plan: Plan = field(default_factory=Plan)
    window: Window | None = None
    answers: RiskAnswers = field(default_factory=RiskAnswers)
    origin: str | None = None


def create(command: NewChange, *, change_id: str, number: str, now: datetime) -> Outcome:
    if command.change_type == "standard" and command.template is None:
        raise Invalid("a standard change comes from a template")
    change = Change(
        id=change_id, number=number, title=command.title, description=command.description,
        change_type=command.change_type, status="draft", requester=command.requester,
        created_at=now, updated_at=now, version=1, implementer=command.implementer,
        template=command.template, services=command.services,
        configuration_items=command.configuration_items, plan=command.plan,
        window=command.window, answers=command.answers, origin=command.origin,
    )  # fmt: skip
    event = ChangeCreated(
        change_id=change_id, actor=command.requester, status="draft", number=number,
        title=change.title, change_type=change.change_type, requester=change.requester,
        implementer=change.implementer, template=change.template, services=list(change.services),
        configuration_items=list(change.configuration_items),
        planned_start=change.window.start if change.window else None,
        planned_end=change.window.end if change.window else None,
    )  # fmt: skip
    return change, [event]


def edit(change: Change, fields: Mapping[str, Any], *, actor: str, now: datetime) -> Outcome:
    step(change, "edit")
    unknown = set(fields) - EDITABLE
    if unknown:
        raise Invalid(f"not editable: {sorted(unknown)}")
    changed = {k: v for k, v in fields.items() if getattr(change, k) != v}
    described = {
        k: FieldChange(before=_plain(getattr(change, k)), after=_plain(v))
        for k, v in changed.items()
    }
    event = ChangeUpdated(change_id=change.id, actor=actor, status=change.status, changes=described)
    return evolve(change, [event] if changed else [], now, **changed)


def _plain(value: Any) -> Any:
    if isinstance(value, Window):
        return {"start": value.start.isoformat(), "end": value.end.isoformat()}
    if isinstance(value, (Plan, RiskAnswers)):
        return vars(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def submit(
    change: Change, *, actor: str, now: datetime, others: Iterable[Change],
    freezes: Iterable[FreezeWindow],
) -> Outcome:  # fmt: skip
    """Submit for assessment; a standard change is pre-approved and scheduled at once."""
    status = step(change, "submit")
    if change.window is None:
        raise Invalid("plan the change window before submitting")
    if change.change_type != "standard":
        missing = change.plan.missing()
        if missing:
            raise Invalid(f"a {change.change_type} change needs: {', '.join(missing)}")
    submitted = ChangeSubmitted(change_id=change.id, actor=actor, status=status)
    if change.change_type != "standard":
        return evolve(change, [submitted], now, status=status)
    check_schedule(change, others, freezes)
    approved = ChangeApproved(
        change_id=change.id, actor=actor, status="scheduled", planned_start=change.window.start,
        planned_end=change.window.end, configuration_items=list(change.configuration_items),
    )  # fmt: skip
    return evolve(change, [submitted, approved], now, status=status)


def assess(
    change: Change, *, actor: str, now: datetime, within_maintenance: bool,
    approval_groups: Mapping[str, tuple[str, ...]],
) -> Outcome:  # fmt: skip
    status = step(change, "assess")
    risk = assess_risk(change, within_maintenance=within_maintenance)
    needed = policy.requirements(change.change_type, risk.level, approval_groups)
    event = ChangeAssessed(
        change_id=change.id, actor=actor, status=status, risk_level=risk.level,
        risk_score=risk.score, risk_reasons=list(risk.reasons),
        required_approvals=[{"group": r.group, "quorum": r.quorum} for r in needed],
    )  # fmt: skip
    return evolve(change, [event], now, status=status, risk=risk, requirements=needed, approvals=())


def decide(
    change: Change, decision: Literal["approve", "reject"], *, user: str, comment: str,
    is_change_manager: bool, now: datetime, others: Iterable[Change],
    freezes: Iterable[FreezeWindow],
) -> Outcome:  # fmt: skip
    step(change, decision)
    if user == change.requester:
        raise Forbidden("the requester of a change cannot approve or reject it")
    open_requirements = [r for r in change.requirements if not policy.satisfied(change, r)]
    for requirement in open_requirements:
        as_whom = policy.eligible(change, requirement, user, is_change_manager=is_change_manager)
        if as_whom is None:
            continue
        already = {
            a.on_behalf_of or a.approver for a in change.approvals if a.group == requirement.group
        }
        if as_whom in already:
            continue
        return _record(
            change, requirement.group, decision, user, as_whom, comment, now, others, freezes
        )
    raise Forbidden("you hold no open approval for this change (or have already decided)")


def _record(
    change: Change, group: str, decision: Literal["approve", "reject"], user: str, as_whom: str,
    comment: str, now: datetime, others: Iterable[Change], freezes: Iterable[FreezeWindow],
) -> Outcome:  # fmt: skip
    on_behalf = as_whom if as_whom != user else None
    approval = Approval(user, group, decision, comment, now, on_behalf)
    recorded = ChangeApprovalRecorded(
        change_id=change.id, actor=user, status=change.status, approver=user, group=group,
        decision=decision, comment=comment, on_behalf_of=on_behalf,
    )  # fmt: skip
    if decision == "reject":
        rejected = ChangeRejected(change_id=change.id, actor=user, status="draft", comment=comment)
        return evolve(
            change, [recorded.model_copy(update={"status": "draft"}), rejected], now,
            status="draft", approvals=(*change.approvals, approval), requirements=(),
        )  # fmt: skip
    with_approval = replace(change, approvals=(*change.approvals, approval))
    if not policy.all_satisfied(with_approval):
        return evolve(change, [recorded], now, approvals=with_approval.approvals)
    check_schedule(change, others, freezes)
    assert change.window is not None
    approved = ChangeApproved(
        change_id=change.id, actor=user, status="scheduled", planned_start=change.window.start,
        planned_end=change.window.end, configuration_items=list(change.configuration_items),
    )  # fmt: skip
    return evolve(
        change, [recorded.model_copy(update={"status": "scheduled"}), approved], now,
        status="scheduled", approvals=with_approval.approvals,
    )  # fmt: skip


def delegate(change: Change, *, approver: str, to: str, now: datetime) -> Outcome:
    if change.status != "awaiting_approval":
        raise Conflict("approvals can be delegated while the change awaits approval")
    if approver == to or to == change.requester:
        raise Conflict("delegate to someone else than yourself or the requester")
    if not any(approver in r.members for r in change.requirements):
        raise Forbidden("only a member of a required approval group can delegate")
    event = ChangeApprovalDelegated(
        change_id=change.id, actor=approver, status=change.status, delegate=to
    )
    kept = tuple((a, d) for a, d in change.delegations if a != approver)
    return evolve(change, [event], now, delegations=(*kept, (approver, to)))


def start(change: Change, *, actor: str, now: datetime) -> Outcome:
    status = step(change, "start")
    event = ChangeStarted(change_id=change.id, actor=actor, status=status, actual_start=now)
    return evolve(change, [event], now, status=status, actual_start=now)


def complete(
    change: Change, outcome: ImplementationOutcome, *, actor: str, now: datetime,
    actual_start: datetime | None = None, actual_end: datetime | None = None,
) -> Outcome:  # fmt: skip
    status = step(change, "complete")
    began = actual_start or change.actual_start or now
    ended = actual_end or now
    if ended < began:
        raise Invalid("a change cannot end before it started")
    finished = replace(change, outcome=outcome)
    event = ChangeCompleted(
        change_id=change.id, actor=actor, status=status, outcome=outcome, actual_start=began,
        actual_end=ended, review_required=finished.review_required,
        configuration_items=list(change.configuration_items), services=list(change.services),
    )  # fmt: skip
    return evolve(
        change, [event], now, status=status, outcome=outcome, actual_start=began, actual_end=ended
    )


def review(change: Change, *, summary: str, lessons: str, actor: str, now: datetime) -> Outcome:
    status = step(change, "review")
    event = ChangeReviewed(
        change_id=change.id, actor=actor, status=status, summary=summary, lessons=lessons
    )
    return evolve(change, [event], now, status=status, review=Review(summary, lessons, actor, now))


def close(change: Change, *, actor: str, now: datetime) -> Outcome:
    status = step(change, "close")
    if change.review_required and change.review is None:
        raise Conflict("a post-implementation review is required before closing this change")
    event = ChangeClosed(change_id=change.id, actor=actor, status=status, outcome=change.outcome)
    return evolve(change, [event], now, status=status)


def cancel(change: Change, *, reason: str, actor: str, now: datetime) -> Outcome:
    status = step(change, "cancel")
    event = ChangeCancelled(change_id=change.id, actor=actor, status=status, reason=reason)
    return evolve(change, [event], now, status=status)


def decline(change: Change, *, reason: str, actor: str, now: datetime) -> Outcome:
    status = step(change, "decline")
    event = ChangeDeclined(change_id=change.id, actor=actor, status=status, reason=reason)
    return evolve(change, [event], now, status=status)


def link_incident(
    change: Change, *, incident_id: str, incident_number: str,
    kind: Literal["named", "suggested"], now: datetime,
) -> Outcome:  # fmt: skip
    """Idempotent: an incident already linked changes nothing."""
    if incident_id in change.caused_incidents or (
        kind == "suggested" and incident_id in change.suggested_incidents
    ):
        return change, []
    event = ChangeIncidentLinked(
        change_id=change.id, actor="correlation", status=change.status, incident_id=incident_id,
        incident_number=incident_number, kind=kind,
    )  # fmt: skip
    if kind == "named":
        suggested = tuple(i for i in change.suggested_incidents if i != incident_id)
        return evolve(
            change, [event], now, caused_incidents=(*change.caused_incidents, incident_id),
            suggested_incidents=suggested,
        )  # fmt: skip
    return evolve(
        change, [event], now, suggested_incidents=(*change.suggested_incidents, incident_id)
    )
