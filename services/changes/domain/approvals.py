"""Approval policy by change type and risk, and how approvals count toward it.

`change-managers` is satisfied by anyone holding the change-manager role; `cab` and `ecab` are
approval groups with members. "all" means every member of the group as it was at assessment.
"""

from __future__ import annotations

from collections.abc import Mapping

from services.changes.domain.model import Approval, Change, Requirement
from shared.contracts.changes import ChangeType, RiskLevel

CHANGE_MANAGERS = "change-managers"
ALL = -1

POLICY: dict[tuple[ChangeType, RiskLevel], tuple[tuple[str, int], ...]] = {
    ("standard", "low"): (),
    ("standard", "medium"): (),
    ("standard", "high"): (),
    ("normal", "low"): ((CHANGE_MANAGERS, 1),),
    ("normal", "medium"): ((CHANGE_MANAGERS, 1), ("cab", 1)),
    ("normal", "high"): ((CHANGE_MANAGERS, 1), ("cab", ALL)),
    ("emergency", "low"): (("ecab", 1),),
    ("emergency", "medium"): (("ecab", 1),),
    ("emergency", "high"): ((CHANGE_MANAGERS, 1), ("ecab", 1)),
}


def requirements(
    change_type: ChangeType, level: RiskLevel, groups: Mapping[str, tuple[str, ...]]
) -> tuple[Requirement, ...]:
    needed = []
    for group, quorum in POLICY[(change_type, level)]:
        members = () if group == CHANGE_MANAGERS else tuple(groups.get(group, ()))
        count = len(members) if quorum == ALL else quorum
        needed.append(Requirement(group=group, quorum=max(count, 1), members=members))
    return tuple(needed)


def approvals_for(change: Change, group: str) -> list[Approval]:
    return [a for a in change.approvals if a.group == group and a.decision == "approve"]


def satisfied(change: Change, requirement: Requirement) -> bool:
    approvers = {a.on_behalf_of or a.approver for a in approvals_for(change, requirement.group)}
    return len(approvers) >= requirement.quorum


def all_satisfied(change: Change) -> bool:
    return all(satisfied(change, r) for r in change.requirements)


def delegate_of(change: Change, approver: str) -> str | None:
    for principal, delegate in change.delegations:
        if principal == approver:
            return delegate
    return None


def eligible(
    change: Change, requirement: Requirement, user: str, *, is_change_manager: bool
) -> str | None:
    """Whom `user` may approve as for this requirement: themselves, or the member who delegated
    to them. None if neither."""
    if requirement.group == CHANGE_MANAGERS:
        return user if is_change_manager else None
    if user in requirement.members and delegate_of(change, user) is None:
        return user
    for member in requirement.members:
        if delegate_of(change, member) == user:
            return member
    return None
