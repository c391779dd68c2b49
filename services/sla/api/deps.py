"""Request dependencies of the SLA read API."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.sla import handlers
from services.sla.api.live import LiveHub
from services.sla.handlers import SlaReadModel
from shared.auth import Principal, Role, require_roles
from shared.auth.reach import AgentReach

# SLA figures and KPIs are for the people who work and steer tickets; requesters follow their
# own ticket through the incidents API, and service accounts have no business here.
READERS = (Role.AGENT, Role.MANAGER, Role.ADMIN)


async def get_read_model(request: Request) -> SlaReadModel:
    model: SlaReadModel = request.app.state.sla_read_model
    return model


async def get_fact_hub(request: Request) -> LiveHub:
    hub: LiveHub = request.app.state.sla_fact_hub
    return hub


async def get_kpi_hub(request: Request) -> LiveHub:
    hub: LiveHub = request.app.state.sla_kpi_hub
    return hub


async def get_heartbeat(request: Request) -> float:
    seconds: float = request.app.state.sla_stream_heartbeat
    return seconds


ReadModel = Annotated[SlaReadModel, Depends(get_read_model)]
FactHub = Annotated[LiveHub, Depends(get_fact_hub)]
KpiHub = Annotated[LiveHub, Depends(get_kpi_hub)]
Heartbeat = Annotated[float, Depends(get_heartbeat)]
Reader = Annotated[Principal, Depends(require_roles(*READERS))]


async def get_reach(user: Reader, model: ReadModel) -> AgentReach | None:
    return await handlers.reach_of(model, user)


# The tickets the caller works (None: all of them): agents see the SLA of those only.
Reach = Annotated[AgentReach | None, Depends(get_reach)]
