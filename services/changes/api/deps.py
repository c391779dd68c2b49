"""Request dependencies of the changes API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Depends, Header, Request, Response

from services.changes.access import ChangeScope
from services.changes.domain.model import Change
from services.changes.handlers import Changes
from shared.auth import Principal, Role, require_roles
from shared.errors import PreconditionRequired

PEOPLE = (Role.REQUESTER, Role.AGENT, Role.CHANGE_MANAGER, Role.MANAGER, Role.ADMIN)


def get_changes(request: Request) -> Changes:
    changes: Changes = request.app.state.changes
    return changes


def get_now(request: Request) -> datetime:
    now: datetime = request.app.state.clock()
    return now


Service = Annotated[Changes, Depends(get_changes)]
Now = Annotated[datetime, Depends(get_now)]
Person = Annotated[Principal, Depends(require_roles(*PEOPLE))]
ChangeManager = Annotated[Principal, Depends(require_roles(Role.CHANGE_MANAGER, Role.ADMIN))]


async def get_scope(user: Person, changes: Service) -> ChangeScope:
    return await changes.scope(user)


Scope = Annotated[ChangeScope, Depends(get_scope)]


def parse_etag(value: str) -> int:
    tag = value.strip().removeprefix("W/").strip('"')
    if not tag.isdigit():
        raise PreconditionRequired(f"If-Match {value!r} is not an ETag of this API")
    return int(tag)


def if_match(value: Annotated[str | None, Header(alias="If-Match")] = None) -> int | None:
    return parse_etag(value) if value else None


def required_if_match(value: Annotated[str | None, Header(alias="If-Match")] = None) -> int:
    if not value:
        raise PreconditionRequired("send If-Match with the change's ETag to edit it")
    return parse_etag(value)


IfMatch = Annotated[int | None, Depends(if_match)]
RequiredIfMatch = Annotated[int, Depends(required_if_match)]


def with_etag(response: Response, change: Change) -> None:
    response.headers["ETag"] = f'"{change.version}"'
