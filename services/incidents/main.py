"""Incidents service entry point: `uvicorn services.incidents.main:create_app --factory`.

Besides the HTTP API, the process relays its outbox, consumes monitoring alerts from the ingest
topic, resolves children with their parents, and closes incidents resolved long enough ago.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog
from fastapi import FastAPI
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.incidents import handlers, intake
from services.incidents.api import routers
from services.incidents.domain import ITIL_MATRIX, Policy, parse_priority_matrix
from services.incidents.handlers import Incidents
from services.incidents.store import GroupRepository, IncidentRepository
from shared.background import BackgroundTask
from shared.bus.port import Subscription
from shared.contracts import Envelope, Topic
from shared.runtime import Runtime, ServiceUnit, service_app
from shared.settings import ServiceSettings
from shared.store.counters import NumberBlocks
from shared.store.relay import OutboxRelay

log = structlog.get_logger(__name__)


class IncidentsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ITSM_INCIDENTS_", extra="ignore")

    service_name: str = "incidents"
    intake_paths: list[str] = ["/api/v1/alerts/"]  # the Alertmanager webhook's stricter buckets
    priority_matrix: str = Field(ITIL_MATRIX, description="rows: impact 1..3; columns: urgency")
    reopen_window_days: float = Field(7, ge=0)
    auto_close_days: float = Field(3, ge=0)
    auto_close_interval_seconds: float = Field(60, gt=0)
    alert_auto_resolve: bool = True
    agents_see_all: bool = False

    def policy(self) -> Policy:
        return Policy(
            priority_matrix=parse_priority_matrix(self.priority_matrix),
            reopen_window=timedelta(days=self.reopen_window_days),
            auto_close_after=timedelta(days=self.auto_close_days),
            alert_auto_resolve=self.alert_auto_resolve,
        )


async def build(settings: ServiceSettings, runtime: Runtime) -> ServiceUnit:
    config = settings if isinstance(settings, IncidentsSettings) else IncidentsSettings()
    repo = IncidentRepository(runtime.database, on_write=lambda *written: relay.nudge(*written))
    # Groups publish their members too (`itsm.group.saved.v1`): the SLA API scopes agents by them.
    groups = GroupRepository(runtime.database, on_write=lambda *written: relay.nudge(*written))
    relay = OutboxRelay(
        runtime.bus,
        [repo.collection, groups.collection],
        poll_interval=settings.relay_poll_interval,
        batch_size=settings.relay_batch_size,
        name="incidents-outbox-relay",
    )
    incidents = Incidents(
        repo=repo,
        groups=groups,
        next_number=NumberBlocks(runtime.database, "incident", settings.number_block_size).next,
        policy=config.policy(),
        agents_see_all=config.agents_see_all,
    )
    subscriptions: list[Subscription] = []
    sweeper = BackgroundTask("incidents-auto-close")

    async def on_alert(envelope: Envelope) -> None:
        await intake.on_alert(incidents, envelope, now=runtime.clock())

    async def on_incident_event(envelope: Envelope) -> None:
        await intake.on_incident_event(incidents, envelope, now=runtime.clock())

    async def sweep() -> None:
        while True:
            try:
                closed = await intake.close_overdue(incidents, now=runtime.clock())
                if closed:
                    log.info("incidents.auto_closed", count=closed)
            except Exception as exc:  # keep sweeping; the next pass retries
                log.warning("incidents.auto_close_failed", error=repr(exc))
            await asyncio.sleep(config.auto_close_interval_seconds)

    async def start() -> None:
        await repo.ensure_indexes()
        await groups.ensure_indexes()
        await relay.start()
        published = await handlers.publish_unpublished_groups(incidents, now=runtime.clock())
        if published:
            log.info("incidents.groups_published", count=published)
        subscriptions.append(
            await runtime.bus.subscribe("incidents-alert-intake", [Topic.INGEST], on_alert)
        )
        subscriptions.append(
            await runtime.bus.subscribe("incidents-cascade", [Topic.INCIDENTS], on_incident_event)
        )
        sweeper.start(sweep())

    async def stop() -> None:
        await sweeper.stop()
        for subscription in subscriptions:
            await subscription.stop()
        await relay.stop()

    return ServiceUnit(
        name="incidents",
        state={"incidents": incidents, "incidents_bus": runtime.bus, "incident_relay": relay},
        start=start,
        stop=stop,
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
        description="The ITIL incident lifecycle and alert intake. Errors are RFC 9457 "
        "problem+json; actions answer 409 naming the allowed next states.",
    )


__all__ = ["IncidentsSettings", "build", "create_app", "routers"]
