"""The incident lifecycle as a transition table: (status, action) -> next status."""

from __future__ import annotations

from typing import Literal

from shared.contracts.incidents import Status
from shared.errors import Conflict

Action = Literal["assign", "start", "pend", "resume", "resolve", "close", "reopen", "cancel"]

TRANSITIONS: dict[tuple[Status, Action], Status] = {
    ("new", "assign"): "assigned",
    ("new", "resolve"): "resolved",
    ("new", "cancel"): "cancelled",
    ("assigned", "assign"): "assigned",
    ("assigned", "start"): "in_progress",
    ("assigned", "pend"): "pending",
    ("assigned", "resolve"): "resolved",
    ("assigned", "cancel"): "cancelled",
    ("in_progress", "assign"): "assigned",
    ("in_progress", "pend"): "pending",
    ("in_progress", "resolve"): "resolved",
    ("in_progress", "cancel"): "cancelled",
    ("pending", "resume"): "in_progress",
    ("pending", "assign"): "assigned",
    ("pending", "resolve"): "resolved",
    ("pending", "cancel"): "cancelled",
    ("resolved", "close"): "closed",
    ("resolved", "reopen"): "in_progress",
}


class InvalidTransition(Conflict):
    def __init__(self, status: Status, action: Action) -> None:
        allowed = allowed_actions(status)
        listed = ", ".join(f"{a} (-> {TRANSITIONS[(status, a)]})" for a in allowed) or "none"
        super().__init__(
            f"cannot {action} an incident that is {status}; allowed: {listed}",
            current_status=status,
            allowed_actions=list(allowed),
            allowed_next_states=sorted({TRANSITIONS[(status, a)] for a in allowed}),
        )


def allowed_actions(status: Status) -> list[Action]:
    return [action for (source, action) in TRANSITIONS if source == status]


def next_status(status: Status, action: Action) -> Status:
    try:
        return TRANSITIONS[(status, action)]
    except KeyError:
        raise InvalidTransition(status, action) from None
