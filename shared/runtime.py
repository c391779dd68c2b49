"""How a service is wired to its adapters, in distributed mode (Kafka, MongoDB) or embedded mode
(in-memory), and how a service becomes a FastAPI app. Nothing here runs at import time."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, FastAPI

from shared.auth.tokens import TokenVerifier
from shared.bus.kafka import KafkaBus
from shared.bus.limits import fetch_limits
from shared.bus.memory import InMemoryBus
from shared.bus.port import Bus
from shared.bus.security import kafka_client_kwargs
from shared.bus.topics import platform_topics
from shared.http.app import create_service_app
from shared.http.audit import COLLECTION as AUDIT_COLLECTION
from shared.http.ratelimit import Rate, RateLimitPolicy
from shared.logs import configure_logging
from shared.settings import ServiceSettings
from shared.store.memory import InMemoryDatabase
from shared.store.mongo import create_client, ping
from shared.telemetry import setup_tracing

Clock = Callable[[], datetime]
ReadinessCheck = Callable[[], Awaitable[bool]]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Runtime:
    """The adapters a service runs on."""

    bus: Bus
    database: Any  # pymongo AsyncDatabase, or InMemoryDatabase
    verifier: TokenVerifier
    clock: Clock = utc_now
    readiness: dict[str, ReadinessCheck] = field(default_factory=dict)
    _closers: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)

    async def close(self) -> None:
        for closer in reversed(self._closers):
            await closer()


@dataclass
class ServiceUnit:
    """A built service: the app-state entries its routes depend on, and its background work."""

    name: str
    state: dict[str, Any]
    start: Callable[[], Awaitable[None]]
    stop: Callable[[], Awaitable[None]]


Builder = Callable[[Any, Runtime], Awaitable[ServiceUnit]]


def verifier_from(settings: ServiceSettings) -> TokenVerifier:
    if settings.auth_mode == "oidc":
        if not settings.oidc_jwks_url:
            raise ValueError("auth_mode=oidc needs ITSM_OIDC_JWKS_URL (and ITSM_JWT_ISSUER)")
        return TokenVerifier(
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            jwks_url=settings.oidc_jwks_url,
            algorithms=settings.oidc_algorithms,
        )
    if settings.dev_signing_key is None:
        raise ValueError("auth_mode=dev needs ITSM_DEV_SIGNING_KEY (at least 32 bytes)")
    return TokenVerifier(
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        dev_signing_key=settings.dev_signing_key.get_secret_value(),
        dev_previous_key=(
            settings.dev_signing_previous_key.get_secret_value()
            if settings.dev_signing_previous_key
            else None
        ),
    )


async def connect(settings: ServiceSettings) -> Runtime:
    """Distributed mode: MongoDB through PyMongo's async client, Kafka through aiokafka."""
    client = create_client(
        settings.mongo_url, app_name=settings.service_name, timeout_ms=settings.mongo_timeout_ms
    )
    bus = KafkaBus(
        settings.kafka_bootstrap,
        client_id=settings.service_name,
        replication_factor=settings.topic_replication_factor,
        security=kafka_client_kwargs(settings),
        fetch=fetch_limits(settings),
    )
    await bus.start()
    await bus.ensure_topics(platform_topics(settings.topic_partitions))

    async def mongo_ready() -> bool:
        try:
            return await asyncio.wait_for(ping(client), timeout=2.0)
        except TimeoutError:
            return False

    runtime = Runtime(
        bus=bus,
        database=client[settings.mongo_database],
        verifier=verifier_from(settings),
        readiness={"mongodb": mongo_ready, "kafka": bus.ping},
    )
    runtime._closers += [client.close, bus.stop]
    return runtime


def in_memory(settings: ServiceSettings, bus: InMemoryBus | None = None) -> Runtime:
    """Embedded mode and unit tests: the in-memory bus and store twins."""
    memory_bus = bus or InMemoryBus(default_partitions=settings.topic_partitions)
    return Runtime(
        bus=memory_bus,
        database=InMemoryDatabase(settings.mongo_database),
        verifier=verifier_from(settings),
        readiness={"bus": memory_bus.ping},
    )


def attach(app: FastAPI, runtime: Runtime, unit: ServiceUnit) -> None:
    app.state.token_verifier = runtime.verifier
    app.state.audit_log = runtime.database[AUDIT_COLLECTION]
    app.state.clock = runtime.clock
    app.state.readiness_checks.update(runtime.readiness)
    for key, value in unit.state.items():
        setattr(app.state, key, value)


def rate_limit_policy(settings: ServiceSettings) -> RateLimitPolicy:
    return RateLimitPolicy(
        api=Rate(settings.api_rate_per_second, settings.api_rate_burst),
        intake=Rate(settings.intake_rate_per_second, settings.intake_rate_burst),
        intake_paths=tuple(settings.intake_paths),
        max_clients=settings.rate_limit_max_clients,
        trusted_proxies=tuple(settings.trusted_proxies),
    )


def service_app(
    *,
    title: str,
    settings: ServiceSettings,
    routers: Sequence[APIRouter],
    build: Builder,
    runtime: Runtime | None = None,
    description: str = "",
) -> FastAPI:
    """A standalone service app. Without `runtime` its lifespan connects to Kafka and MongoDB;
    with one (in-memory, in tests) it uses that."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        active = runtime
        if active is None:
            configure_logging(settings.log_level, json=settings.log_json)
            setup_tracing(f"itsm-{settings.service_name}")
            active = await connect(settings)
        unit = await build(settings, active)
        attach(app, active, unit)
        await unit.start()
        if runtime is None:
            # What start-up made (modules, the app, its schemas, clients) lives as long as the
            # process: out of the collector's way, a full collection pauses requests for
            # what they made only (docs/benchmarks.md, "Garbage collection pauses").
            gc.freeze()
        try:
            yield
        finally:
            await unit.stop()
            if runtime is None:
                await active.close()

    app = create_service_app(
        title=title,
        service=settings.service_name,
        lifespan=lifespan,
        max_body_bytes=settings.max_body_bytes,
        rate_limits=rate_limit_policy(settings),
        description=description,
    )
    for router in routers:
        app.include_router(router)
    return app
