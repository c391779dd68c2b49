"""The audit log of privileged actions: every state-changing request to a route marked
`audited(area)` by an authenticated caller is recorded with actor, time, source address, the
route and its outcome, in the service's `audit_log` collection (inserts only: no API route
updates or deletes it).

A pure ASGI middleware writes the entry when the response starts, so the entry exists before the
caller sees the answer. Refused attempts (403, 409, 422…) are recorded too; anonymous ones
(401) are not, so nobody can write to the log without a valid token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from fastapi import Depends, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.audit import PRIVILEGED_METHODS, privileged_entry
from shared.auth.principal import PRINCIPAL_SCOPE_KEY, Principal
from shared.http.client import client_address
from shared.http.ratelimit import Network
from shared.ids import uuid7

log = structlog.get_logger(__name__)
AREA_SCOPE_KEY = "itsm.audit_area"
COLLECTION = "audit_log"


class AuditSink(Protocol):
    async def insert_one(self, document: dict[str, Any]) -> Any: ...


def audited(area: str) -> Any:
    """A route (or router) dependency marking its state-changing requests as privileged."""

    async def mark(request: Request) -> None:
        request.scope[AREA_SCOPE_KEY] = area

    return Depends(mark)


class PrivilegedAudit:
    def __init__(
        self, app: ASGIApp, *, service: str, trusted_proxies: Sequence[Network] = ()
    ) -> None:
        self.app = app
        self.service = service
        self.trusted_proxies = trusted_proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in PRIVILEGED_METHODS:
            await self.app(scope, receive, send)
            return

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                await self._record(scope, message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        except Exception:
            await self._record(scope, 500)
            raise

    async def _record(self, scope: Scope, status: int) -> None:
        area = scope.pop(AREA_SCOPE_KEY, None)  # popped: one entry per request
        principal: Principal | None = scope.get(PRINCIPAL_SCOPE_KEY)
        state = scope["app"].state
        sink: AuditSink | None = getattr(state, "audit_log", None)
        if area is None or principal is None or sink is None:
            return
        entry = self._entry(scope, status, area, principal, _clock(state)())
        try:
            await sink.insert_one(entry)
        except Exception:  # the action is done; losing its entry must be loud, not fatal
            log.exception("audit.write_failed", area=area, route=entry["route"])

    def _entry(
        self, scope: Scope, status: int, area: str, principal: Principal, at: datetime
    ) -> dict[str, Any]:
        return privileged_entry(
            entry_id=str(uuid7()),
            at=at,
            service=self.service,
            area=area,
            actor=principal.subject,
            roles=[str(role) for role in principal.roles],
            source_address=client_address(scope, self.trusted_proxies),
            method=scope["method"],
            route=str(getattr(scope.get("route"), "path", scope["path"])),
            path=scope["path"],
            target={k: str(v) for k, v in scope.get("path_params", {}).items()},
            status=status,
        )


def _clock(state: Any) -> Callable[[], datetime]:
    clock: Callable[[], datetime] | None = getattr(state, "clock", None)
    return clock or (lambda: datetime.now(UTC))  # an app without a runtime: plumbing tests
