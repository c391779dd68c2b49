"""SLA read API entry point: `uvicorn services.sla.main:create_app --factory`.

Besides the HTTP API, the process materialises the SLA facts and KPI partials from the bus into
MongoDB (one consumer group shared by the replicas), follows who works which ticket from the
incident events (assignment groups and assignments, to scope agents), and tails both SLA topics
for its live streams (no group: every replica sees every record).
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.sla import handlers
from services.sla.api import routers as read_routers
from services.sla.api.live import KafkaTail, LiveHub, MemoryTail, OnEvent, Tail
from services.sla.handlers import SlaReadModel
from services.sla.policies import api as policies_api
from services.sla.policies import wiring as policies
from services.sla.store import AccessStore, KpiPartialStore, TimerStore
from shared.bus.kafka import KafkaBus
from shared.bus.memory import InMemoryBus
from shared.bus.port import Bus, Subscription, TopicSpec
from shared.contracts import Envelope, Topic
from shared.http.audit_log import audit_log_router
from shared.runtime import Runtime, ServiceUnit, service_app
from shared.settings import ServiceSettings


class SlaApiSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ITSM_SLA_API_", extra="ignore")

    service_name: str = "sla-api"
    facts_topic: str = Field(str(Topic.SLA), description="The SLA facts to materialise")
    kpis_topic: str = Field(str(Topic.SLA_KPIS), description="The KPI partials to materialise")
    # Replicas share these consumer groups (`<group>-timers`, `<group>-kpis`), so each record is
    # materialised by one of them; a new group reads the topics from the beginning.
    consumer_group: str = Field("sla-api", pattern=r"^[A-Za-z0-9._-]+$")
    stream_queue_size: int = Field(256, ge=1, le=100_000, description="events held per client")
    stream_heartbeat_seconds: float = Field(15.0, gt=0, le=300)
    at_risk_scan_limit: int = Field(5_000, ge=100, le=1_000_000)
    kpi_partial_limit: int = Field(50_000, ge=100, le=10_000_000)
    # Agents see the SLA of the tickets they work (their groups', their own, the triage queue
    # for L1 members), followed from the incident events; keep equal to the incidents service's.
    agents_see_all: bool = False
    incidents_topic: str = Field(str(Topic.INCIDENTS), description="Who works which ticket")


def live_tail(bus: Bus, topics: Sequence[str], on_event: OnEvent, *, client_id: str) -> Tail:
    if isinstance(bus, KafkaBus):
        return KafkaTail(
            bus.bootstrap_servers, topics, on_event, client_id=client_id, security=bus.security,
            fetch=bus.fetch,
        )  # fmt: skip
    if isinstance(bus, InMemoryBus):
        return MemoryTail(bus, topics, on_event)
    raise TypeError(f"no live tail for {type(bus).__name__}")


async def build(settings: ServiceSettings, runtime: Runtime) -> ServiceUnit:
    """The read model with its consumers and live streams, and the policy administration with
    its outbox relay, as one unit."""
    reads = await build_read_model(settings, runtime)
    admin = await policies.build(settings, runtime)

    async def start() -> None:
        await admin.start()
        await reads.start()

    async def stop() -> None:
        await reads.stop()
        await admin.stop()

    return ServiceUnit(name="sla", state={**reads.state, **admin.state}, start=start, stop=stop)


async def build_read_model(settings: ServiceSettings, runtime: Runtime) -> ServiceUnit:
    config = settings if isinstance(settings, SlaApiSettings) else SlaApiSettings()
    model = SlaReadModel(
        timers=TimerStore(runtime.database),
        kpis=KpiPartialStore(runtime.database),
        access=AccessStore(runtime.database),
        at_risk_scan_limit=config.at_risk_scan_limit,
        kpi_partial_limit=config.kpi_partial_limit,
        agents_see_all=config.agents_see_all,
    )
    topics = [config.facts_topic, config.kpis_topic]
    fact_hub = LiveHub("sla", config.stream_queue_size)
    kpi_hub = LiveHub("kpis", config.stream_queue_size)

    def on_live(topic: str, envelope: Envelope) -> None:
        (fact_hub if topic == config.facts_topic else kpi_hub).publish(envelope)

    tail = live_tail(runtime.bus, topics, on_live, client_id=f"{config.service_name}-live")
    subscriptions: list[Subscription] = []

    async def on_fact(envelope: Envelope) -> None:
        await handlers.on_sla_fact(model, envelope, now=runtime.clock())

    async def on_kpi(envelope: Envelope) -> None:
        await handlers.on_kpi_partial(model, envelope, now=runtime.clock())

    async def on_incident(envelope: Envelope) -> None:
        await handlers.on_incident_event(model, envelope, now=runtime.clock())

    async def start() -> None:
        await model.timers.ensure_indexes()
        await model.kpis.ensure_indexes()
        await model.access.ensure_indexes()
        await runtime.bus.ensure_topics(
            [TopicSpec(t, settings.topic_partitions) for t in [*topics, config.incidents_topic]]
        )
        await tail.start()
        group = config.consumer_group
        subscriptions.append(
            await runtime.bus.subscribe(f"{group}-timers", [config.facts_topic], on_fact)
        )
        subscriptions.append(
            await runtime.bus.subscribe(f"{group}-kpis", [config.kpis_topic], on_kpi)
        )
        subscriptions.append(
            await runtime.bus.subscribe(f"{group}-access", [config.incidents_topic], on_incident)
        )

    async def stop() -> None:
        fact_hub.close()
        kpi_hub.close()
        for subscription in subscriptions:
            await subscription.stop()
        subscriptions.clear()
        await tail.stop()

    return ServiceUnit(
        name="sla",
        state={
            "sla_read_model": model,
            "sla_fact_hub": fact_hub,
            "sla_kpi_hub": kpi_hub,
            "sla_stream_heartbeat": config.stream_heartbeat_seconds,
        },
        start=start,
        stop=stop,
    )


routers = [*read_routers, policies_api.router, audit_log_router("sla")]


def create_app(settings: SlaApiSettings | None = None, runtime: Runtime | None = None) -> FastAPI:
    return service_app(
        title="ITSM SLA",
        settings=settings or SlaApiSettings(),
        routers=routers,
        build=build,
        runtime=runtime,
        description="SLA timers (time remaining, at risk, breached), KPIs and their live "
        "streams, materialised from the SLA service's facts. Errors are RFC 9457 problem+json.",
    )


__all__ = ["SlaApiSettings", "build", "create_app", "routers"]
