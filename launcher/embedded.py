"""The embedded platform: every service in one process on the in-memory bus and store.

`python -m launcher.embedded` (what `make run` starts) serves every service's API on
http://127.0.0.1:8000 with OpenAPI docs at /docs. The same handlers run as in distributed mode;
only the adapters differ. Services that don't exist yet join here as their issues land.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import ClassVar, Literal

import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr

from services.changes import main as changes
from services.console import demo as console_demo
from services.console import main as console
from services.incidents import main as incidents
from services.notify import main as notify
from services.sla import embedded as sla_processor
from services.sla import main as sla
from shared.auth.cli import dev_key_file
from shared.bus.memory import InMemoryBus
from shared.bus.topics import platform_topics
from shared.http.app import create_service_app
from shared.logs import configure_logging
from shared.runtime import Runtime, ServiceUnit, attach, in_memory, rate_limit_policy
from shared.settings import ServiceSettings
from shared.telemetry import setup_tracing


class EmbeddedSettings(ServiceSettings):
    """The embedded platform is a development tool: local dev tokens unless told otherwise."""

    # ITSM_DEV_SIGNING_KEY_FILE is the key file this launcher creates on first run and reads
    # (ensure_dev_key), not a secret that must exist before it starts.
    secret_files_exempt: ClassVar[frozenset[str]] = frozenset({"dev_signing_key"})

    service_name: str = "embedded"
    auth_mode: Literal["dev", "oidc"] = "dev"
    intake_paths: list[str] = ["/api/v1/alerts/"]


# (name, builder, routers) of every service that has landed.
SERVICES = [
    ("incidents", incidents.build, incidents.routers),
    ("changes", changes.build, changes.routers),
    ("sla", sla.build, sla.routers),
    # The SLA stream processor: the Faust agents' handlers on the in-memory bus, ticked by asyncio.
    ("sla-processor", sla_processor.build, []),
    ("notify", notify.build, notify.routers),
    # The web console's static files and sign-in (http://127.0.0.1:8000/console/).
    ("console", console.build, console.routers),
]


def ensure_dev_key(path: Path) -> str:
    """The local signing key for development tokens, created once with owner-only access."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


def create_embedded_app(
    settings: ServiceSettings | None = None, runtime: Runtime | None = None, demo: bool = False
) -> FastAPI:
    settings = settings or EmbeddedSettings()
    if settings.auth_mode == "dev" and settings.dev_signing_key is None:
        settings = settings.model_copy(
            update={"dev_signing_key": SecretStr(ensure_dev_key(dev_key_file()))}
        )
    active = runtime or in_memory(settings, InMemoryBus(settings.topic_partitions))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await active.bus.start()
        await active.bus.ensure_topics(platform_topics(settings.topic_partitions))
        units: list[ServiceUnit] = []
        for _, build, _ in SERVICES:
            unit = await build(settings, active)
            attach(app, active, unit)
            await unit.start()
            units.append(unit)
        app.state.runtime = active
        if demo:  # through the APIs, once every service is up
            await console_demo.seed(app, settings)
        try:
            yield
        finally:
            for unit in reversed(units):
                await unit.stop()
            await active.bus.stop()

    app = create_service_app(
        title="ITSM platform (embedded)",
        service="embedded",
        lifespan=lifespan,
        max_body_bytes=settings.max_body_bytes,
        rate_limits=rate_limit_policy(settings),
        description="Every service in one process on in-memory adapters.",
    )
    for _, _, routers in SERVICES:
        for router in routers:
            app.include_router(router)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="launcher.embedded", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--demo", action="store_true", help="record demo data at start")
    args = parser.parse_args(argv)
    settings = EmbeddedSettings()
    configure_logging(settings.log_level, json=settings.log_json and not sys.stderr.isatty())
    setup_tracing("itsm-embedded")
    app = create_embedded_app(settings, demo=args.demo)
    print(
        f"ITSM platform (embedded) on http://{args.host}:{args.port}  "
        f"console: http://{args.host}:{args.port}/console/  "
        f"docs: http://{args.host}:{args.port}/docs\n"
        "Mint a token:  make token SUB=alice ROLE=agent",
        file=sys.stderr,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_config=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
