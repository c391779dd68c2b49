"""The local distributed stack in one command: Kafka, FerretDB and every service as its own process.

Usage::

    python -m devtools.stack up [NAME ...] [--timeout SECONDS]
    python -m devtools.stack status [NAME ...]
    python -m devtools.stack logs [NAME ...] [-n LINES] [-f]
    python -m devtools.stack down [NAME ...] [--timeout SECONDS] [--purge]

NAME is one of ``kafka``, ``ferretdb`` (devtools.localstack), ``mail`` (a local SMTP sink writing
every message to ``<state dir>/mail/``), ``incidents``, ``changes``, ``sla-api`` (uvicorn each),
``sla-worker`` (the Faust processor) and ``notify``; default: all. ``up`` is idempotent: it
starts what is not running (a process that died is started again) and waits until each
answers (the APIs' ``/readyz``; the mail sink's greeting; the SLA worker's log line
``sla.wakeups.rearmed``, once its partitions are assigned and its table recovered). Any platform
process brings up Kafka and FerretDB first. ``down`` stops the platform processes (SIGTERM,
SIGKILL after ``--timeout``), then the infrastructure.

Ports: ``ITSM_STACK_INCIDENTS_PORT`` (8001), ``ITSM_STACK_CHANGES_PORT`` (8002),
``ITSM_STACK_SLA_API_PORT`` (8003), ``ITSM_STACK_NOTIFY_PORT`` (8004), ``ITSM_STACK_SMTP_PORT``
(1025), and localstack's ``KAFKA_PORT``, ``KAFKA_CONTROLLER_PORT``, ``MONGO_PORT``. State (pid
files under ``stack/``, logs under ``logs/``, mail, keys): ``ITSM_STATE_DIR`` (``.localstack``).

The services get the caller's environment (any ``ITSM_*`` setting applies), pointed at the
stack's Kafka and FerretDB, with development defaults: ``ITSM_AUTH_MODE=dev`` signing with
``<state dir>/dev-signing-key`` (what ``make token`` reads; created once, mode 0600, unless
``ITSM_DEV_SIGNING_KEY`` is set), notify's ack-link key in ``<state dir>/notify-ack-link-key``,
ack links pointing at notify itself, and e-mail to the mail sink unless
``ITSM_NOTIFY_SMTP_HOST`` names a relay (then no sink runs).
"""

from __future__ import annotations

from devtools.stack.cli import main
from devtools.stack.config import (
    ALL_NAMES,
    SERVICE_NAMES,
    Service,
    mail_dir,
    mail_sink_enabled,
    service,
    service_env,
)
from devtools.stack.processes import down, is_ready, running_pid, status, stop, up, wait_ready

__all__ = [
    "ALL_NAMES",
    "SERVICE_NAMES",
    "Service",
    "down",
    "is_ready",
    "mail_dir",
    "mail_sink_enabled",
    "main",
    "running_pid",
    "service",
    "service_env",
    "status",
    "stop",
    "up",
    "wait_ready",
]
