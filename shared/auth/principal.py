"""Who is calling, and with which roles."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    REQUESTER = "requester"
    AGENT = "agent"
    CHANGE_MANAGER = "change-manager"
    MANAGER = "manager"
    ADMIN = "admin"
    SERVICE = "service"  # machine producers: monitoring, CI/CD


# Where the HTTP layer keeps the principal it verified for a request (ASGI scope key), so the
# token is verified once and the audit log can name the actor.
PRINCIPAL_SCOPE_KEY = "itsm.principal"

# Roles that work tickets and so may see every ticket, not only their own.
STAFF_ROLES = frozenset({Role.AGENT, Role.CHANGE_MANAGER, Role.MANAGER, Role.ADMIN})


@dataclass(frozen=True)
class Principal:
    subject: str
    roles: frozenset[Role]
    name: str | None = None
    email: str | None = None
    groups: frozenset[str] = frozenset()

    def has_any(self, roles: frozenset[Role] | set[Role]) -> bool:
        return bool(self.roles & roles)

    @property
    def is_staff(self) -> bool:
        return self.has_any(STAFF_ROLES)
