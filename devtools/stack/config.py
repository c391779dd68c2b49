"""The platform's processes in the local distributed stack: names, ports, commands, environment.

Every path and port is resolved from the environment when asked (like devtools.localstack), so
a second stack on other ports and another state dir is only a matter of environment variables.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from devtools.localstack.config import (
    COMPONENT_NAMES,
    HOST,
    LocalstackError,
    _env_port,
    env_vars,
    logs_dir,
    state_dir,
)

MAIL = "mail"
INCIDENTS = "incidents"
CHANGES = "changes"
SLA_API = "sla-api"
SLA_WORKER = "sla-worker"
NOTIFY = "notify"
# Start order; `down` stops them in the reverse order (all at once), then the infrastructure.
SERVICE_NAMES: tuple[str, ...] = (MAIL, INCIDENTS, CHANGES, SLA_API, SLA_WORKER, NOTIFY)
ALL_NAMES: tuple[str, ...] = (*COMPONENT_NAMES, *SERVICE_NAMES)

# name -> (port variable, default port); the SLA worker listens on nothing.
PORTS: dict[str, tuple[str, int]] = {
    MAIL: ("ITSM_STACK_SMTP_PORT", 1025),
    INCIDENTS: ("ITSM_STACK_INCIDENTS_PORT", 8001),
    CHANGES: ("ITSM_STACK_CHANGES_PORT", 8002),
    SLA_API: ("ITSM_STACK_SLA_API_PORT", 8003),
    NOTIFY: ("ITSM_STACK_NOTIFY_PORT", 8004),
}
APPS = {
    INCIDENTS: "services.incidents.main:create_app",
    CHANGES: "services.changes.main:create_app",
    SLA_API: "services.sla.main:create_app",
    NOTIFY: "services.notify.main:create_app",
}
SLA_WORKER_MODULE = "services.sla.processor.worker"
MAIL_MODULE = "devtools.stack.mailsink"
# What the SLA worker logs once its partitions are assigned and its table recovered: from then
# on it measures (a Faust worker has no readiness endpoint unless its web server runs).
SLA_WORKER_READY = "sla.wakeups.rearmed"


def mail_sink_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """The local SMTP sink runs unless notify is given a relay of its own."""
    environ = os.environ if environ is None else environ
    return not (environ.get("ITSM_NOTIFY_SMTP_HOST") or "").strip()


def mail_dir() -> Path:
    return state_dir() / "mail"


def dev_key_path() -> Path:
    """Where the development signing key lives: what `make token` (itsm-token) reads."""
    explicit = os.environ.get("ITSM_DEV_SIGNING_KEY_FILE")
    return Path(explicit).expanduser().resolve() if explicit else state_dir() / "dev-signing-key"


def ack_link_key_path() -> Path:
    return state_dir() / "notify-ack-link-key"


@dataclass(frozen=True)
class Service:
    """One platform process of the stack."""

    name: str
    kind: Literal["api", "worker", "mail"]
    port: int | None
    marker: str  # a string of its command line: tells our process from an unrelated one

    @property
    def url(self) -> str:
        if self.kind == "api":
            return f"http://{HOST}:{self.port}"
        if self.kind == "mail":
            return f"smtp://{HOST}:{self.port}"
        return "-"

    @property
    def pid_file(self) -> Path:
        return state_dir() / "stack" / f"{self.name}.pid"

    @property
    def log_path(self) -> Path:
        return logs_dir() / f"{self.name}.log"

    def command(self) -> list[str]:
        python = sys.executable
        if self.kind == "api":
            return [
                python, "-m", "uvicorn", APPS[self.name], "--factory",
                "--host", HOST, "--port", str(self.port),
                "--timeout-graceful-shutdown", "10",  # the SLA API's live streams never end
            ]  # fmt: skip
        if self.kind == "mail":
            return [python, "-m", MAIL_MODULE, "--port", str(self.port), "--dir", str(mail_dir())]
        return [python, "-m", SLA_WORKER_MODULE, "worker", "--loglevel=info"]


def service(name: str) -> Service:
    """The platform process `name` (one of SERVICE_NAMES); LocalstackError otherwise."""
    if name in APPS:
        variable, default = PORTS[name]
        return Service(name, "api", _env_port(variable, default), APPS[name].split(":")[0])
    if name == MAIL:
        variable, default = PORTS[name]
        return Service(name, "mail", _env_port(variable, default), MAIL_MODULE)
    if name == SLA_WORKER:
        return Service(name, "worker", None, SLA_WORKER_MODULE)
    expected = ", ".join(ALL_NAMES)
    raise LocalstackError(f"unknown process {name!r} (expected one of {expected})")


def service_env(
    environ: Mapping[str, str], *, dev_key: str | None, ack_link_key: str | None
) -> dict[str, str]:
    """The environment of every platform process: the caller's, pointed at this stack's Kafka and
    FerretDB, with development defaults for what the caller did not set."""
    env = {**environ, **env_vars()}  # the stack's own broker and database, always
    env.setdefault("PYTHONUNBUFFERED", "1")  # logs reach the file as they are written
    env.setdefault("ITSM_AUTH_MODE", "dev")
    if dev_key and not env.get("ITSM_DEV_SIGNING_KEY"):
        env["ITSM_DEV_SIGNING_KEY"] = dev_key
    if ack_link_key and not env.get("ITSM_NOTIFY_ACK_LINK_KEY"):
        env["ITSM_NOTIFY_ACK_LINK_KEY"] = ack_link_key
    # No gateway runs locally: acknowledgement links in mails point at notify itself.
    env.setdefault("ITSM_NOTIFY_PUBLIC_BASE_URL", service(NOTIFY).url)
    if mail_sink_enabled(environ):
        env.update(
            ITSM_NOTIFY_SMTP_HOST=HOST,
            ITSM_NOTIFY_SMTP_PORT=str(service(MAIL).port),
            ITSM_NOTIFY_SMTP_SECURITY="plain",
        )
    # Faust keeps its data under ./<app id>-data by default: not in the checkout.
    env.setdefault("ITSM_SLA_DATA_DIR", str(state_dir() / "sla-worker-data"))
    return env
