"""Request dependencies of the incidents API."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Response

from services.incidents.access import AccessScope
from services.incidents.domain import Incident
from services.incidents.handlers import Incidents
from shared.auth import Principal, Role, require_roles
from shared.bus.port import Bus
from shared.http.etag import etag


async def get_incidents(request: Request) -> Incidents:
    incidents: Incidents = request.app.state.incidents
    return incidents


async def get_bus(request: Request) -> Bus:
    bus: Bus = request.app.state.incidents_bus
    return bus


Service = Annotated[Incidents, Depends(get_incidents)]
BusDep = Annotated[Bus, Depends(get_bus)]

PEOPLE = (Role.REQUESTER, Role.AGENT, Role.CHANGE_MANAGER, Role.MANAGER, Role.ADMIN)
Person = Annotated[Principal, Depends(require_roles(*PEOPLE))]
Reporter = Annotated[Principal, Depends(require_roles(*PEOPLE, Role.SERVICE))]
Supervisor = Annotated[Principal, Depends(require_roles(Role.MANAGER, Role.ADMIN))]
Machine = Annotated[Principal, Depends(require_roles(Role.SERVICE))]


async def get_scope(user: Person, incidents: Service) -> AccessScope:
    return await incidents.scope(user)


Scope = Annotated[AccessScope, Depends(get_scope)]


def with_etag(response: Response, incident: Incident) -> None:
    response.headers["ETag"] = etag(incident.version)
