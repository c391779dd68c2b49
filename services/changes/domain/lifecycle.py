"""The change lifecycle as a transition table: (status, action) -> next status, with the few
places where a change type takes another path."""

from __future__ import annotations

from typing import Literal

from shared.contracts.changes import ChangeStatus, ChangeType
from shared.errors import Conflict

ChangeAction = Literal[
    "edit", "submit", "assess", "approve", "reject", "start", "complete", "review", "close",
    "cancel", "decline",
]  # fmt: skip

TRANSITIONS: dict[tuple[ChangeStatus, ChangeAction], ChangeStatus] = {
    ("draft", "edit"): "draft",
    ("draft", "submit"): "assessment",
    ("draft", "cancel"): "cancelled",
    ("draft", "decline"): "rejected",
    ("assessment", "assess"): "awaiting_approval",
    ("assessment", "cancel"): "cancelled",
    ("assessment", "decline"): "rejected",
    ("awaiting_approval", "approve"): "scheduled",
    ("awaiting_approval", "reject"): "draft",
    ("awaiting_approval", "cancel"): "cancelled",
    ("awaiting_approval", "decline"): "rejected",
    ("scheduled", "start"): "implementing",
    ("scheduled", "cancel"): "cancelled",
    ("implementing", "complete"): "completed",
    ("completed", "review"): "review",
    ("completed", "close"): "closed",
    ("review", "close"): "closed",
}

# Standard changes come from a pre-approved template: submitting one schedules it.
BY_TYPE: dict[tuple[ChangeType, ChangeStatus, ChangeAction], ChangeStatus] = {
    ("standard", "draft", "submit"): "scheduled",
}


class InvalidChangeTransition(Conflict):
    def __init__(self, change_type: ChangeType, status: ChangeStatus, action: ChangeAction) -> None:
        allowed = allowed_actions(change_type, status)
        nexts = sorted({next_status(change_type, status, a) for a in allowed})
        super().__init__(
            f"cannot {action} a {change_type} change that is {status}; "
            f"allowed: {', '.join(allowed) or 'none'}",
            current_status=status,
            allowed_actions=allowed,
            allowed_next_states=nexts,
        )


def allowed_actions(change_type: ChangeType, status: ChangeStatus) -> list[ChangeAction]:
    return [action for (source, action) in TRANSITIONS if source == status]


def next_status(
    change_type: ChangeType, status: ChangeStatus, action: ChangeAction
) -> ChangeStatus:
    special = BY_TYPE.get((change_type, status, action))
    if special is not None:
        return special
    try:
        return TRANSITIONS[(status, action)]
    except KeyError:
        raise InvalidChangeTransition(change_type, status, action) from None
