"""Who may see and act on which change.

Requesters see and edit their own; the implementer sees and implements theirs; CAB and ECAB
members (approval groups) see every change and decide on the ones awaiting them; change
managers run the process; managers and admins see everything. A change you may not see is
404, so ids cannot be probed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.changes.domain.model import Change
from shared.auth.principal import Principal, Role


@dataclass(frozen=True)
class ChangeScope:
    user: Principal
    approval_groups: frozenset[str]

    @property
    def subject(self) -> str:
        return self.user.subject

    @property
    def is_change_manager(self) -> bool:
        return self.user.has_any({Role.CHANGE_MANAGER, Role.ADMIN})

    @property
    def sees_all(self) -> bool:
        return (
            self.is_change_manager
            or self.user.has_any({Role.MANAGER})
            or bool(self.approval_groups)
        )

    def can_view(self, change: Change) -> bool:
        return (
            self.sees_all
            or change.requester == self.subject
            or change.implementer == self.subject
            or any(delegate == self.subject for _, delegate in change.delegations)
        )

    def can_edit(self, change: Change) -> bool:
        return self.is_change_manager or change.requester == self.subject

    def can_implement(self, change: Change) -> bool:
        return self.is_change_manager or change.implementer == self.subject

    def list_filter(self) -> dict[str, Any]:
        if self.sees_all:
            return {}
        return {"$or": [{"requester": self.subject}, {"implementer": self.subject}]}
