"""Request dependencies of the changes API."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Response

from services.changes.access import ChangeScope
from services.changes.domain.model import Change
from services.changes.handlers import Changes
from shared.auth import Principal, Role, require_roles
from shared.http.etag import etag

PEOPLE = (Role.REQUESTER, Role.AGENT, Role.CHANGE_MANAGER, Role.MANAGER, Role.ADMIN)


async def get_changes(request: Request) -> Changes:
    changes: Changes = request.app.state.changes
    return changes


Service = Annotated[Changes, Depends(get_changes)]
Person = Annotated[Principal, Depends(require_roles(*PEOPLE))]
ChangeManager = Annotated[Principal, Depends(require_roles(Role.CHANGE_MANAGER, Role.ADMIN))]


async def get_scope(user: Person, changes: Service) -> ChangeScope:
    return await changes.scope(user)


Scope = Annotated[ChangeScope, Depends(get_scope)]


def with_etag(response: Response, change: Change) -> None:
    response.headers["ETag"] = etag(change.version)
