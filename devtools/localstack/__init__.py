"""Local infrastructure without Docker: Apache Kafka (KRaft) and FerretDB (SQLite backend, or
PostgreSQL with ``ITSM_FERRETDB_BACKEND=postgresql``).

Usage::

    python -m devtools.localstack up [kafka|ferretdb ...] [--timeout SECONDS]
    python -m devtools.localstack down [kafka|ferretdb ...] [--purge]
    python -m devtools.localstack status [kafka|ferretdb ...]
    python -m devtools.localstack logs [kafka|ferretdb ...] [-n LINES] [-f]
    python -m devtools.localstack env [--export]
    python -m devtools.localstack provision [kafka|ferretdb ...]
    python -m devtools.localstack secure up|down|status|env [PRINCIPAL] [--mtls]

Downloads and builds go to the shared cache dir (``ITSM_CACHE_DIR``, default
``${XDG_CACHE_HOME:-~/.cache}/itsm-platform``): Kafka jars are fetched from Maven Central with
``mvn dependency:copy-dependencies``, FerretDB is built from the Go module proxy with ``go build``.
Both are built in a temporary directory that is renamed into place only when complete.

Runtime state (configs, data, logs, pid files) goes to the per-checkout state dir
(``ITSM_STATE_DIR``, default ``<repo root>/.localstack``).

Ports: ``KAFKA_PORT`` (9092), ``KAFKA_CONTROLLER_PORT`` (9093), ``MONGO_PORT`` (27017),
``ITSM_POSTGRES_PORT`` (5433, PostgreSQL backend only).

FerretDB's backend: ``ITSM_FERRETDB_BACKEND`` = ``sqlite`` (default: files in the state dir) or
``postgresql``: then `up` first starts a private PostgreSQL cluster (the installed server
programs, initdb'd into ``<state dir>/postgres`` on first use, loopback only) and `down` stops it
after FerretDB (see ``postgres``).

Kafka heap: ``KAFKA_HEAP_OPTS`` (default ``-Xms256m -Xmx768m``).

Only the standard library is required; ``pymongo`` is used for the FerretDB readiness check when
it is importable (plain TCP connect otherwise).

Package layout: ``config`` (versions, ports, cache/state dirs, component table), ``logs``
(messages, log tails), ``files`` (locks, atomic cache builds), ``process`` (spawn/stop, pid files,
ports), ``kafka`` and ``ferretdb`` (provisioning, configuration, readiness), ``postgres``
(FerretDB's PostgreSQL cluster), ``stack`` (shared stack lifecycle) and ``cli``; ``secure`` (with
``certs`` and ``acls``) runs a second, secured broker: SASL/SCRAM over TLS, mTLS and ACLs (it
needs ``cryptography`` and ``aiokafka``).
Everything public is re-exported here.
"""

from __future__ import annotations

from devtools.localstack.cli import (
    EXIT_ERROR,
    EXIT_NOT_RUNNING,
    main,
)
from devtools.localstack.config import (
    COMPONENT_NAMES,
    DEFAULT_KAFKA_CONTROLLER_PORT,
    DEFAULT_KAFKA_HEAP_OPTS,
    DEFAULT_KAFKA_PORT,
    DEFAULT_MONGO_PORT,
    DEFAULT_POSTGRES_PORT,
    DEFAULT_TIMEOUT,
    FERRETDB,
    FERRETDB_BACKENDS,
    FERRETDB_MODULE,
    FERRETDB_VERSION,
    HOST,
    KAFKA,
    KAFKA_VERSION,
    LOG4J_VERSION,
    POLL_INTERVAL,
    SCALA_VERSION,
    STOP_TIMEOUT,
    Component,
    LocalstackError,
    cache_dir,
    component,
    env_vars,
    ferretdb_backend,
    kafka_bootstrap,
    kafka_controller_port,
    kafka_port,
    logs_dir,
    mongo_port,
    mongo_url,
    postgres_port,
    repo_root,
    state_dir,
)
from devtools.localstack.ferretdb import (
    ferretdb_binary,
    ferretdb_command,
    ferretdb_home,
    ferretdb_ping,
    provision_ferretdb,
    start_ferretdb,
)
from devtools.localstack.files import COMPLETE_MARKER
from devtools.localstack.kafka import _kafka_cluster_id as _kafka_cluster_id  # used by tests
from devtools.localstack.kafka import (
    kafka_home,
    kafka_libs_dir,
    kafka_ready,
    provision_kafka,
)
from devtools.localstack.logs import tail
from devtools.localstack.postgres import PostgresCluster, postgres_bin_dir
from devtools.localstack.process import (
    free_port,
    port_in_use,
    running_pid,
    stop_process,
)
from devtools.localstack.stack import (
    Status,
    down,
    is_ready,
    provision,
    start,
    status,
    stop,
    up,
    wait_ready,
)

__all__ = [
    "COMPLETE_MARKER",
    "COMPONENT_NAMES",
    "DEFAULT_KAFKA_CONTROLLER_PORT",
    "DEFAULT_KAFKA_HEAP_OPTS",
    "DEFAULT_KAFKA_PORT",
    "DEFAULT_MONGO_PORT",
    "DEFAULT_POSTGRES_PORT",
    "DEFAULT_TIMEOUT",
    "EXIT_ERROR",
    "EXIT_NOT_RUNNING",
    "FERRETDB",
    "FERRETDB_BACKENDS",
    "FERRETDB_MODULE",
    "FERRETDB_VERSION",
    "HOST",
    "KAFKA",
    "KAFKA_VERSION",
    "LOG4J_VERSION",
    "POLL_INTERVAL",
    "SCALA_VERSION",
    "STOP_TIMEOUT",
    "Component",
    "LocalstackError",
    "PostgresCluster",
    "Status",
    "cache_dir",
    "component",
    "down",
    "env_vars",
    "ferretdb_backend",
    "ferretdb_binary",
    "ferretdb_command",
    "ferretdb_home",
    "ferretdb_ping",
    "free_port",
    "is_ready",
    "kafka_bootstrap",
    "kafka_controller_port",
    "kafka_home",
    "kafka_libs_dir",
    "kafka_port",
    "kafka_ready",
    "logs_dir",
    "main",
    "mongo_port",
    "mongo_url",
    "port_in_use",
    "postgres_bin_dir",
    "postgres_port",
    "provision",
    "provision_ferretdb",
    "provision_kafka",
    "repo_root",
    "running_pid",
    "start",
    "start_ferretdb",
    "state_dir",
    "status",
    "stop",
    "stop_process",
    "tail",
    "up",
    "wait_ready",
]
