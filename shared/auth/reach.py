"""Which tickets an agent works: the one rule the incidents service and the SLA API share.

An agent works the tickets assigned to their groups and to themselves; a member of an L1 group
also works the unassigned triage queue; by configuration, agents work every ticket.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from shared.auth.principal import Role

# Managers and admins see and work every ticket; the reach below is for agents.
SUPERVISORS = frozenset({Role.MANAGER, Role.ADMIN})

# The fields a ticket document (an incident, an SLA timer) names its assignment with.
GROUP_FIELD = "assignment_group"
ASSIGNEE_FIELD = "assignee"


@dataclass(frozen=True)
class AgentReach:
    subject: str
    groups: frozenset[str]
    triage: bool  # member of an L1 group: the unassigned queue too
    everything: bool = False  # agents work every ticket (configuration)

    @classmethod
    def of(
        cls, subject: str, memberships: Iterable[tuple[str, str]], *, everything: bool = False
    ) -> AgentReach:
        """From the (group name, tier) pairs of the groups the agent belongs to."""
        memberships = list(memberships)
        return cls(
            subject=subject,
            groups=frozenset(name for name, _ in memberships),
            triage=any(tier == "L1" for _, tier in memberships),
            everything=everything,
        )

    def reaches(self, group: str | None, assignee: str | None) -> bool:
        return (
            self.everything
            or (group is not None and group in self.groups)
            or assignee == self.subject
            or (group is None and self.triage)
        )

    def clauses(self) -> list[dict[str, Any]] | None:
        """MongoDB filter clauses, any of which selects a ticket the agent works; None for all.
        A document without an assignment group counts as unassigned."""
        if self.everything:
            return None
        clauses: list[dict[str, Any]] = [
            {GROUP_FIELD: {"$in": sorted(self.groups)}},
            {ASSIGNEE_FIELD: self.subject},
        ]
        if self.triage:
            clauses.append({GROUP_FIELD: None})
        return clauses
