"""Lifecycle of the shared stack: provision, up/start, wait, down/stop, status."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from devtools.localstack.config import (
    COMPONENT_NAMES,
    DEFAULT_TIMEOUT,
    FERRETDB,
    HOST,
    KAFKA,
    POSTGRESQL,
    STOP_TIMEOUT,
    Component,
    LocalstackError,
    component,
    ferretdb_backend,
    kafka_controller_port,
    postgres_home,
    postgres_log,
    state_dir,
)
from devtools.localstack.ferretdb import _spawn_ferretdb, ferretdb_ping, provision_ferretdb
from devtools.localstack.files import _file_lock, _rmtree
from devtools.localstack.kafka import _spawn_kafka, kafka_ready, provision_kafka
from devtools.localstack.logs import _say
from devtools.localstack.postgres import PostgresCluster
from devtools.localstack.process import (
    _pid_cmdline,
    _wait_until_ready,
    port_in_use,
    running_pid,
    stop_recorded,
)


def provision(names: Sequence[str] = COMPONENT_NAMES) -> None:
    """Download/build everything the named components need (in parallel; no-op when cached)."""
    steps = {KAFKA: provision_kafka, FERRETDB: provision_ferretdb}
    todo = [steps[component(n).name] for n in dict.fromkeys(names)]
    if len(todo) == 1:
        todo[0]()
        return
    with ThreadPoolExecutor(max_workers=len(todo)) as pool:
        for future in [pool.submit(step) for step in todo]:
            future.result()


def is_ready(name: str, timeout: float = 2.0) -> bool:
    """True if the shared component answers on its port (regardless of who started it)."""
    comp = component(name)
    if comp.name == KAFKA:
        return kafka_ready(comp.port, timeout=timeout)
    return ferretdb_ping(comp.port, timeout=timeout)


def wait_ready(name: str, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Block until the shared component answers; raise LocalstackError on timeout or death."""
    comp = component(name)
    _wait_until_ready(
        lambda: is_ready(comp.name, timeout=1.0),
        running_pid(comp.name),
        f"{comp.name} at {comp.address}",
        (comp.log_path, *comp.extra_logs),
        timeout,
    )


def _check_ports_free(comp: Component) -> None:
    """Raise if another process (not ours) already holds one of the component's ports."""
    for port in comp.ports:
        if port_in_use(port):
            env_names = "KAFKA_PORT/KAFKA_CONTROLLER_PORT" if comp.name == KAFKA else "MONGO_PORT"
            raise LocalstackError(
                f"cannot start {comp.name}: port {port} on {HOST} is already in use by another "
                f"process (not started from this checkout's state dir {state_dir()}); stop it "
                f"or choose other ports via {env_names}"
            )
    if comp.name == FERRETDB and ferretdb_backend() == POSTGRESQL:
        PostgresCluster.default().check_startable()


def _launch(name: str) -> int:
    """Start the shared component's process if needed (no waiting); returns its pid."""
    comp = component(name)
    pid = running_pid(comp.name)
    if pid is not None:
        _say(f"{comp.name} already running (pid {pid}) at {comp.address}")
        handler = f"--handler={ferretdb_backend()}"
        if comp.name == FERRETDB and handler not in (_pid_cmdline(pid) or handler):
            _say(f"note: it does not run with {handler}; `down {comp.name}` first to switch")
        return pid
    comp.pid_file.unlink(missing_ok=True)
    _check_ports_free(comp)
    state_dir().mkdir(parents=True, exist_ok=True)
    if comp.name == KAFKA:
        proc = _spawn_kafka()
        detail = f"controller {HOST}:{kafka_controller_port()}, log {comp.log_path}"
    else:
        binary = provision_ferretdb()
        data_dir, ferret_state = comp.data_dirs[:2]
        url = None
        if ferretdb_backend() == POSTGRESQL:
            cluster = PostgresCluster.default()
            cluster.start()
            url = cluster.url
        proc = _spawn_ferretdb(
            comp.port, data_dir, ferret_state, comp.log_path, binary=binary, postgresql_url=url
        )
        detail = f"data {url or data_dir}, log {comp.log_path}"
    comp.pid_file.write_text(f"{proc.pid}\n")
    _say(f"started {comp.name} (pid {proc.pid}) at {comp.address} ({detail})")
    return proc.pid


def start(name: str, timeout: float = DEFAULT_TIMEOUT) -> int:
    """Start one shared component (idempotent) and wait until it answers; returns its pid."""
    return up([name], timeout=timeout)[component(name).name]


def up(names: Sequence[str] = COMPONENT_NAMES, timeout: float = DEFAULT_TIMEOUT) -> dict[str, int]:
    """Provision, start and wait for the named components; returns {name: pid}."""
    names = [component(n).name for n in dict.fromkeys(names)]
    with _file_lock(state_dir() / ".lock"):
        missing = [n for n in names if running_pid(n) is None]
        for name in missing:
            _check_ports_free(component(name))  # fail fast, before any download/build
        if missing:
            provision(missing)
        started = time.monotonic()
        pids = {name: _launch(name) for name in names}
        for name in names:
            wait_ready(name, timeout=max(1.0, timeout - (time.monotonic() - started)))
    if missing:
        _say(f"ready in {time.monotonic() - started:.1f}s: {', '.join(names)}")
    return pids


def stop(name: str, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop one shared component (FerretDB: then its PostgreSQL, if that runs, whatever
    ``ITSM_FERRETDB_BACKEND`` says now); True if it was running."""
    comp = component(name)
    pid = running_pid(comp.name)
    if pid is None:
        comp.pid_file.unlink(missing_ok=True)
    else:
        stop_recorded(comp.name, pid, comp.pid_file, timeout, _say)
    if comp.name == FERRETDB:
        cluster = PostgresCluster(postgres_home(), log_path=postgres_log())
        return cluster.stop(timeout) or pid is not None
    return pid is not None


def down(names: Sequence[str] = COMPONENT_NAMES, purge: bool = False) -> None:
    """Stop the named components (all in parallel); with purge=True also delete their data."""
    comps = [component(n) for n in dict.fromkeys(names)]
    with _file_lock(state_dir() / ".lock"):
        with ThreadPoolExecutor(max_workers=len(comps)) as pool:
            for future in [pool.submit(stop, c.name) for c in comps]:
                future.result()
        if purge:
            for comp in comps:
                for path in comp.data_dirs:
                    if path.exists():
                        _say(f"deleting {path}")
                        _rmtree(path)


@dataclass(frozen=True)
class Status:
    """What `status` reports for one shared component."""

    name: str
    pid: int | None
    ready: bool
    address: str
    log_path: Path
    port_busy: bool = False

    @property
    def running(self) -> bool:
        return self.pid is not None and self.ready

    @property
    def state(self) -> str:
        if self.pid is None:
            return "stopped*" if self.port_busy else "stopped"
        return "running" if self.ready else "not-answering"


def status(name: str) -> Status:
    """Current state of one shared component (pid file, readiness probe, port occupancy)."""
    comp = component(name)
    pid = running_pid(comp.name)
    ready = pid is not None and is_ready(comp.name, timeout=2.0)
    busy = pid is None and any(port_in_use(port) for port in comp.ports)
    return Status(comp.name, pid, ready, comp.address, comp.log_path, busy)
