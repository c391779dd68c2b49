"""Changes service entry point: `uvicorn services.changes.main:create_app --factory`.

Besides the HTTP API, the process relays its outbox, records CI/CD deployments (CDEvents on the
ingest topic) as standard changes, and correlates incidents with changes.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.changes import intake
from services.changes.api import routers
from services.changes.handlers import Changes
from services.changes.store import (
    ApprovalGroupRepository,
    ChangeRepository,
    FreezeRepository,
    ItemRepository,
    MaintenanceRepository,
    TemplateRepository,
)
from shared.bus.port import Subscription
from shared.contracts import Envelope, Topic
from shared.runtime import Runtime, ServiceUnit, service_app
from shared.settings import ServiceSettings
from shared.store.counters import NumberBlocks
from shared.store.relay import OutboxRelay


class ChangesSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ITSM_CHANGES_", extra="ignore")

    service_name: str = "changes"
    correlation_window_hours: float = Field(
        24, gt=0, description="incidents this soon after a change on their item are suggested links"
    )


async def build(settings: ServiceSettings, runtime: Runtime) -> ServiceUnit:
    config = settings if isinstance(settings, ChangesSettings) else ChangesSettings()
    database = runtime.database
    repo = ChangeRepository(database, on_write=lambda *written: relay.nudge(*written))
    relay = OutboxRelay(
        runtime.bus,
        [repo.collection],
        poll_interval=settings.relay_poll_interval,
        batch_size=settings.relay_batch_size,
        name="changes-outbox-relay",
    )
    changes = Changes(
        repo=repo,
        templates=TemplateRepository(database),
        items=ItemRepository(database),
        approval_groups=ApprovalGroupRepository(database),
        freezes=FreezeRepository(database),
        maintenance=MaintenanceRepository(database),
        next_number=NumberBlocks(database, "change", settings.number_block_size).next,
        correlation_window=timedelta(hours=config.correlation_window_hours),
    )
    subscriptions: list[Subscription] = []

    async def on_ingest(envelope: Envelope) -> None:
        await intake.on_ingest(changes, envelope, now=runtime.clock())

    async def on_incident_event(envelope: Envelope) -> None:
        await intake.on_incident_event(changes, envelope, now=runtime.clock())

    async def start() -> None:
        await repo.ensure_indexes()
        await relay.start()
        subscriptions.append(
            await runtime.bus.subscribe("changes-cicd-intake", [Topic.INGEST], on_ingest)
        )
        subscriptions.append(
            await runtime.bus.subscribe(
                "changes-incident-correlation", [Topic.INCIDENTS], on_incident_event
            )
        )

    async def stop() -> None:
        for subscription in subscriptions:
            await subscription.stop()
        await relay.stop()

    return ServiceUnit(
        name="changes",
        state={"changes": changes, "change_relay": relay},
        start=start,
        stop=stop,
    )


def create_app(settings: ChangesSettings | None = None, runtime: Runtime | None = None) -> FastAPI:
    return service_app(
        title="ITSM changes",
        settings=settings or ChangesSettings(),
        routers=routers,
        build=build,
        runtime=runtime,
        description="Change requests: risk, CAB approvals, scheduling with conflict and freeze "
        "checks, implementation and review, CI/CD deployments, incident correlation.",
    )


__all__ = ["ChangesSettings", "build", "create_app", "routers"]
