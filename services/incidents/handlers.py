"""Incident use cases: command in, events out through the repository's outbox."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from services.incidents import domain
from services.incidents.domain import EditIncident, Incident, OpenIncident
from services.incidents.store import IncidentRepository
from shared.auth.principal import Principal
from shared.contracts.envelope import sequenced
from shared.errors import Forbidden, NotFound, PreconditionFailed
from shared.ids import uuid7

SOURCE = "/itsm/incidents"
NextNumber = Callable[[], Awaitable[int]]
REQUESTER_EDITABLE = frozenset({"title", "description"})


async def create_incident(
    command: OpenIncident, *, repo: IncidentRepository, next_number: NextNumber, now: datetime
) -> Incident:
    number = f"INC{await next_number():07d}"
    incident, events = domain.open_incident(command, incident_id=uuid7(), number=number, now=now)
    await repo.add(incident, sequenced(incident.id, 0, events, source=SOURCE, time=now))
    return incident


async def get_incident(incident_id: str, *, repo: IncidentRepository, user: Principal) -> Incident:
    """Object-level check: staff see every incident, a requester only their own."""
    incident = await repo.get(incident_id)
    if incident is None or not (user.is_staff or incident.requester == user.subject):
        raise NotFound(f"incident {incident_id} not found")
    return incident


async def list_incidents(
    *, repo: IncidentRepository, user: Principal, limit: int, offset: int
) -> tuple[list[Incident], int]:
    scope = {} if user.is_staff else {"requester": user.subject}
    return await repo.find(scope, sort=(("_id", -1),), skip=offset, limit=limit)


async def edit_incident(
    incident_id: str,
    command: EditIncident,
    *,
    expected_version: int,
    repo: IncidentRepository,
    user: Principal,
    now: datetime,
) -> Incident:
    incident = await get_incident(incident_id, repo=repo, user=user)
    if incident.version != expected_version:
        raise PreconditionFailed(incident.version)
    requested = {name for name, value in vars(command).items() if value is not None}
    if not user.is_staff and not requested <= REQUESTER_EDITABLE:
        denied = ", ".join(sorted(requested - REQUESTER_EDITABLE))
        raise Forbidden(f"a requester may not change: {denied}")
    edited, events = domain.edit_incident(incident, command, by=user.subject, now=now)
    if events:
        await repo.save(
            edited,
            expected_version,
            sequenced(incident.id, incident.version, events, source=SOURCE, time=now),
        )
    return edited
