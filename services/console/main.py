"""Console entry point: `uvicorn services.console.main:create_app --factory`.

The console is static ES modules and CSS plus two small endpoints of its own (its sign-in
configuration and, in dev auth mode only, the development login). It holds no data and talks
to no broker or database: the browser calls the platform's APIs behind the same path routing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.console import api
from services.console.api import ConsoleConfig
from shared.http.app import create_service_app
from shared.runtime import Runtime, ServiceUnit
from shared.settings import ServiceSettings

routers = [api.router]


class ConsoleSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ITSM_CONSOLE_", extra="ignore")

    service_name: str = "console"
    # The browser signs in at the OIDC provider itself (authorization code + PKCE, a public
    # client); these say where. Unused in dev mode.
    oidc_authority: str | None = Field(None, description="The issuer URL (discovery document)")
    oidc_client_id: str | None = None
    oidc_scope: str = "openid profile email"
    dev_token_ttl_seconds: int = Field(8 * 3600, ge=60, le=24 * 3600)


def console_config(settings: ServiceSettings) -> ConsoleConfig:
    config = settings if isinstance(settings, ConsoleSettings) else ConsoleSettings()
    dev = settings.auth_mode == "dev"
    return ConsoleConfig(
        auth_mode=settings.auth_mode,
        # Never a signing key in oidc mode, whatever else is configured.
        dev_signing_key=settings.dev_signing_key if dev else None,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        oidc_authority=config.oidc_authority,
        oidc_client_id=config.oidc_client_id,
        oidc_scope=config.oidc_scope,
        dev_token_ttl_seconds=config.dev_token_ttl_seconds,
    )


async def build(settings: ServiceSettings, runtime: Runtime | None = None) -> ServiceUnit:
    """The console's state; it has no background work."""

    async def idle() -> None:
        return None

    return ServiceUnit(
        name="console",
        state={"console_config": console_config(settings)},
        start=idle,
        stop=idle,
    )


def create_app(settings: ConsoleSettings | None = None) -> FastAPI:
    """The console's own container: static files and the sign-in endpoints, nothing else."""
    active = settings or ConsoleSettings()
    if active.auth_mode == "dev" and active.dev_signing_key is None:
        raise ValueError("auth_mode=dev needs ITSM_DEV_SIGNING_KEY for the development login")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        unit = await build(active)
        for key, value in unit.state.items():
            setattr(app.state, key, value)
        yield

    app = create_service_app(
        title="ITSM console",
        service="console",
        lifespan=lifespan,
        max_body_bytes=active.max_body_bytes,
        description="The web console's static files and sign-in configuration.",
    )
    for router in routers:
        app.include_router(router)
    return app
