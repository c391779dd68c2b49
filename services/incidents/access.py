"""Who may see and work which incident (object-level access control).

Requesters see and act on their own incidents only; agents on their groups' incidents, the
ones assigned to them and, if they belong to an L1 group, the unassigned triage queue (or on
all incidents when configured); managers and admins on all; change managers read all. An
incident a caller may not see is reported as not found, so ids cannot be probed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.incidents.domain import Incident
from shared.auth.principal import Principal, Role
from shared.auth.reach import SUPERVISORS, AgentReach


@dataclass(frozen=True)
class AccessScope:
    user: Principal
    reach: AgentReach  # the tickets the user works as an agent (shared with the SLA API)

    @property
    def subject(self) -> str:
        return self.user.subject

    @property
    def supervises(self) -> bool:
        return self.user.has_any(SUPERVISORS)

    @property
    def is_agent(self) -> bool:
        return Role.AGENT in self.user.roles

    def owns(self, incident: Incident) -> bool:
        return incident.requester == self.subject

    def can_work(self, incident: Incident) -> bool:
        """Staff actions: assign, progress, resolve, notes, escalate, classify."""
        if self.supervises:
            return True
        if not self.is_agent:
            return False
        return self.reach.reaches(incident.assignment_group, incident.assignee)

    def can_view(self, incident: Incident) -> bool:
        return (
            self.can_work(incident)
            or Role.CHANGE_MANAGER in self.user.roles
            or (Role.REQUESTER in self.user.roles and self.owns(incident))
        )

    def list_filter(self) -> dict[str, Any] | None:
        """The MongoDB filter restricting a list to what the caller may see (None: nothing)."""
        if self.supervises or Role.CHANGE_MANAGER in self.user.roles:
            return {}
        visible: list[dict[str, Any]] = []
        if self.is_agent:
            clauses = self.reach.clauses()
            if clauses is None:
                return {}
            visible += clauses
        if Role.REQUESTER in self.user.roles:
            visible.append({"requester": self.subject})
        return {"$or": visible} if visible else None
