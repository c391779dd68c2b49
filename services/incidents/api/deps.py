"""Request dependencies of the incidents API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Depends, Header, Request, Response

from services.incidents.access import AccessScope
from services.incidents.domain import Incident
from services.incidents.handlers import Incidents
from shared.auth import Principal, Role, require_roles
from shared.bus.port import Bus
from shared.errors import PreconditionRequired


def get_incidents(request: Request) -> Incidents:
    incidents: Incidents = request.app.state.incidents
    return incidents


def get_bus(request: Request) -> Bus:
    bus: Bus = request.app.state.incidents_bus
    return bus


def get_now(request: Request) -> datetime:
    now: datetime = request.app.state.clock()
    return now


Service = Annotated[Incidents, Depends(get_incidents)]
Now = Annotated[datetime, Depends(get_now)]
BusDep = Annotated[Bus, Depends(get_bus)]

PEOPLE = (Role.REQUESTER, Role.AGENT, Role.CHANGE_MANAGER, Role.MANAGER, Role.ADMIN)
Person = Annotated[Principal, Depends(require_roles(*PEOPLE))]
Reporter = Annotated[Principal, Depends(require_roles(*PEOPLE, Role.SERVICE))]
Supervisor = Annotated[Principal, Depends(require_roles(Role.MANAGER, Role.ADMIN))]
Machine = Annotated[Principal, Depends(require_roles(Role.SERVICE))]


async def get_scope(user: Person, incidents: Service) -> AccessScope:
    return await incidents.scope(user)


Scope = Annotated[AccessScope, Depends(get_scope)]


def etag(version: int) -> str:
    return f'"{version}"'


def parse_etag(value: str) -> int:
    tag = value.strip().removeprefix("W/").strip('"')
    if not tag.isdigit():
        raise PreconditionRequired(f"If-Match {value!r} is not an ETag of this API")
    return int(tag)


def if_match(value: Annotated[str | None, Header(alias="If-Match")] = None) -> int | None:
    """Optional on actions: when sent, a stale version is refused with 412."""
    return parse_etag(value) if value else None


def required_if_match(value: Annotated[str | None, Header(alias="If-Match")] = None) -> int:
    if not value:
        raise PreconditionRequired("send If-Match with the incident's ETag to edit it")
    return parse_etag(value)


IfMatch = Annotated[int | None, Depends(if_match)]
RequiredIfMatch = Annotated[int, Depends(required_if_match)]


def with_etag(response: Response, incident: Incident) -> None:
    response.headers["ETag"] = etag(incident.version)
