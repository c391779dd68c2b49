"""Reading the audit log of privileged actions: `GET /api/v1/audit/<service>`, for admins.

Each service answers for its own areas (`incidents.groups`, `sla.policies`…) from its own
`audit_log` collection, newest first, filtered by actor, area, outcome and time. The log stays
append-only: no route changes or removes an entry (shared/http/audit.py writes them).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import AwareDatetime, BaseModel

from shared.auth import Principal, Role, require_roles
from shared.errors import Invalid
from shared.http.pagination import Page, Pagination
from shared.http.problems import problem_responses
from shared.store.errors import translated_errors

Outcome = Literal["done", "refused", "failed"]
# Who did what from where is for the platform's administrators (and their auditors' tokens).
Auditor = Annotated[Principal, Depends(require_roles(Role.ADMIN))]


class AuditEntryRead(BaseModel):
    id: str
    at: datetime
    service: str
    area: str
    actor: str
    roles: list[str]
    source_address: str
    method: str
    route: str
    path: str
    target: dict[str, str]
    status: int
    outcome: Outcome

    @classmethod
    def of(cls, document: dict[str, Any]) -> AuditEntryRead:
        return cls(id=document["_id"], **{k: v for k, v in document.items() if k != "_id"})


def entry_query(
    service: str,
    *,
    actor: str | None = None,
    area: str | None = None,
    outcome: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    """The entries of `service`'s areas (`<service>.<name>`) that match the filters."""
    if area is not None and not area.startswith(f"{service}."):
        raise Invalid(f"area must be one of this service's, `{service}.<name>`")
    if since is not None and until is not None and since >= until:
        raise Invalid("from must be before to")
    # '/' sorts right after '.': the range is exactly the names starting with "<service>."
    query: dict[str, Any] = {"area": area or {"$gte": f"{service}.", "$lt": f"{service}/"}}
    if actor is not None:
        query["actor"] = actor
    if outcome is not None:
        query["outcome"] = outcome
    window = {op: at for op, at in (("$gte", since), ("$lt", until)) if at is not None}
    if window:
        query["at"] = window
    return query


def audit_log_router(service: str) -> APIRouter:
    router = APIRouter(tags=["audit log"])

    @router.get(
        f"/api/v1/audit/{service}",
        responses=problem_responses(401, 403, 422),
        summary=f"The {service} service's privileged actions, newest first (admins)",
        name=f"{service}_audit_log",
    )
    async def read_audit_log(
        request: Request,
        user: Auditor,
        page: Pagination,
        actor: Annotated[str | None, Query(max_length=200)] = None,
        area: Annotated[str | None, Query(max_length=200, description="e.g. sla.policies")] = None,
        outcome: Outcome | None = None,
        since: Annotated[AwareDatetime | None, Query(alias="from")] = None,
        until: Annotated[AwareDatetime | None, Query(alias="to")] = None,
    ) -> Page[AuditEntryRead]:
        query = entry_query(
            service, actor=actor, area=area, outcome=outcome, since=since, until=until
        )
        collection = request.app.state.audit_log
        async with translated_errors():
            cursor = collection.find(query).sort([("at", -1), ("_id", -1)])
            documents = await cursor.skip(page.offset).limit(page.limit).to_list()
            total = await collection.count_documents(query)
        return Page(
            items=[AuditEntryRead.of(d) for d in documents],
            total=total,
            limit=page.limit,
            offset=page.offset,
        )

    return router
