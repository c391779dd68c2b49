"""What the SLA API's app factory calls: `build(settings, runtime)` gives the repositories and
the outbox relay of the policy API as a `ServiceUnit` (app state `sla_policies`)."""

from __future__ import annotations

from services.sla.policies.handlers import PolicyAdmin
from services.sla.policies.store import CalendarRepository, PolicyRepository
from shared.runtime import Runtime, ServiceUnit
from shared.settings import ServiceSettings
from shared.store.relay import OutboxRelay


async def build(settings: ServiceSettings, runtime: Runtime) -> ServiceUnit:
    calendars = CalendarRepository(runtime.database, on_write=lambda *w: relay.nudge(*w))
    policies = PolicyRepository(runtime.database, on_write=lambda *w: relay.nudge(*w))
    relay = OutboxRelay(
        runtime.bus,
        [calendars.collection, policies.collection],
        poll_interval=settings.relay_poll_interval,
        batch_size=settings.relay_batch_size,
        name="sla-policies-outbox-relay",
    )

    async def start() -> None:
        await calendars.ensure_indexes()
        await policies.ensure_indexes()
        await relay.start()

    return ServiceUnit(
        name="sla-policies",
        state={"sla_policies": PolicyAdmin(calendars, policies), "sla_policies_relay": relay},
        start=start,
        stop=relay.stop,
    )
