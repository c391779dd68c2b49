"""Incidents service entry point: `uvicorn services.incidents.main:create_app --factory`."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic_settings import SettingsConfigDict

from services.incidents.api import router
from services.incidents.store import IncidentRepository
from shared.runtime import Runtime, ServiceUnit, service_app
from shared.settings import ServiceSettings
from shared.store.relay import OutboxRelay

routers = [router]


class IncidentsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ITSM_INCIDENTS_", extra="ignore")

    service_name: str = "incidents"


async def build(settings: ServiceSettings, runtime: Runtime) -> ServiceUnit:
    repository = IncidentRepository(runtime.database, on_write=lambda: relay.nudge())
    relay = OutboxRelay(
        runtime.bus,
        [repository.collection],
        poll_interval=settings.relay_poll_interval,
        batch_size=settings.relay_batch_size,
        name="incidents-outbox-relay",
    )

    async def start() -> None:
        await repository.ensure_indexes()
        await relay.start()

    return ServiceUnit(
        name="incidents",
        state={
            "incident_repository": repository,
            "incident_database": runtime.database,
            "incident_relay": relay,
        },
        start=start,
        stop=relay.stop,
    )


def create_app(
    settings: IncidentsSettings | None = None, runtime: Runtime | None = None
) -> FastAPI:
    return service_app(
        title="ITSM incidents",
        settings=settings or IncidentsSettings(),
        routers=routers,
        build=build,
        runtime=runtime,
        description="The ITIL incident lifecycle. Errors are RFC 9457 problem+json.",
    )
