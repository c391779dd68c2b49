"""Settings of the local stack: versions, ports, cache and state dirs, and the component table."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

KAFKA_VERSION = "4.4.0"
SCALA_VERSION = "2.13"
LOG4J_VERSION = "2.25.5"
FERRETDB_VERSION = "1.24.2"
FERRETDB_MODULE = "github.com/FerretDB/FerretDB"

HOST = "127.0.0.1"
DEFAULT_KAFKA_PORT = 9092
DEFAULT_KAFKA_CONTROLLER_PORT = 9093
DEFAULT_MONGO_PORT = 27017
DEFAULT_POSTGRES_PORT = 5433
DEFAULT_KAFKA_HEAP_OPTS = "-Xms256m -Xmx768m"
DEFAULT_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0
POLL_INTERVAL = 0.2

KAFKA = "kafka"
FERRETDB = "ferretdb"
COMPONENT_NAMES: tuple[str, ...] = (KAFKA, FERRETDB)

# FerretDB's storage (``ITSM_FERRETDB_BACKEND``): SQLite files, or a private PostgreSQL cluster.
SQLITE = "sqlite"
POSTGRESQL = "postgresql"
FERRETDB_BACKENDS: tuple[str, ...] = (SQLITE, POSTGRESQL)


class LocalstackError(RuntimeError):
    """Provisioning or start-up failed; the message says why."""


def repo_root() -> Path:
    """The checkout this package lives in (``<repo root>/devtools/localstack/``)."""
    return Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    """Shared download/build cache (reused by every clone and worktree)."""
    explicit = os.environ.get("ITSM_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return (Path(xdg).expanduser() / "itsm-platform").resolve()


def state_dir() -> Path:
    """Per-checkout runtime state: configs, data dirs, logs, pid files."""
    explicit = os.environ.get("ITSM_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser().resolve()
    return repo_root() / ".localstack"


def logs_dir() -> Path:
    return state_dir() / "logs"


def _env_port(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError:
        raise LocalstackError(f"{name}={raw!r} is not a port number") from None
    if not 0 < port < 65536:
        raise LocalstackError(f"{name}={port} is out of range")
    return port


def postgres_home() -> Path:
    """The stack's PostgreSQL cluster (FerretDB's `postgresql` backend): data and socket dirs."""
    return state_dir() / "postgres"


def postgres_log() -> Path:
    return logs_dir() / "postgres.log"


def kafka_port() -> int:
    return _env_port("KAFKA_PORT", DEFAULT_KAFKA_PORT)


def kafka_controller_port() -> int:
    return _env_port("KAFKA_CONTROLLER_PORT", DEFAULT_KAFKA_CONTROLLER_PORT)


def mongo_port() -> int:
    return _env_port("MONGO_PORT", DEFAULT_MONGO_PORT)


def postgres_port() -> int:
    return _env_port("ITSM_POSTGRES_PORT", DEFAULT_POSTGRES_PORT)


def ferretdb_backend() -> str:
    """FerretDB's backend: ``ITSM_FERRETDB_BACKEND``, `sqlite` (default) or `postgresql`."""
    raw = os.environ.get("ITSM_FERRETDB_BACKEND", "").strip().lower()
    if not raw:
        return SQLITE
    if raw not in FERRETDB_BACKENDS:
        expected = ", ".join(FERRETDB_BACKENDS)
        raise LocalstackError(f"ITSM_FERRETDB_BACKEND={raw!r} is not one of {expected}")
    return raw


def ferretdb_id_index() -> bool:
    """Whether FerretDB on SQLite gets the `_id` index its lookups can use
    (devtools/localstack/sqlite_index.py): ``ITSM_FERRETDB_ID_INDEX``, on unless `0`; off only
    to measure FerretDB as it comes."""
    return os.environ.get("ITSM_FERRETDB_ID_INDEX", "1").strip() != "0"


def kafka_bootstrap() -> str:
    return f"{HOST}:{kafka_port()}"


def mongo_url() -> str:
    return f"mongodb://{HOST}:{mongo_port()}"


def env_vars() -> dict[str, str]:
    """Connection settings for the shared stack, as environment variables."""
    return {"ITSM_KAFKA_BOOTSTRAP": kafka_bootstrap(), "ITSM_MONGO_URL": mongo_url()}


@dataclass(frozen=True)
class Component:
    """One managed server of the shared stack (paths and ports resolved from the environment)."""

    name: str
    port: int
    pid_file: Path
    log_path: Path
    data_dirs: tuple[Path, ...]
    extra_ports: tuple[int, ...] = ()
    extra_logs: tuple[Path, ...] = ()

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.port, *self.extra_ports)


def component(name: str) -> Component:
    """The shared component `name` (one of COMPONENT_NAMES); LocalstackError otherwise."""
    state, logs = state_dir(), logs_dir()
    if name == KAFKA:
        return Component(
            name=KAFKA,
            port=kafka_port(),
            extra_ports=(kafka_controller_port(),),
            pid_file=state / "kafka.pid",
            log_path=logs / "kafka.log",
            extra_logs=(logs / "kafka.out",),
            data_dirs=(state / "kafka-data",),
        )
    if name == FERRETDB:
        # On the PostgreSQL backend the component includes that cluster (postgres.py).
        on_postgres = ferretdb_backend() == POSTGRESQL
        return Component(
            name=FERRETDB,
            port=mongo_port(),
            pid_file=state / "ferretdb.pid",
            log_path=logs / "ferretdb.log",
            data_dirs=(state / "ferretdb-data", state / "ferretdb-state")
            + ((postgres_home(),) if on_postgres else ()),
            extra_logs=(postgres_log(),) if on_postgres else (logs / "ferretdb-id-index.log",),
        )
    expected = ", ".join(COMPONENT_NAMES)
    raise LocalstackError(f"unknown component {name!r} (expected one of {expected})")
