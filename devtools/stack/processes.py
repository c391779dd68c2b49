"""Lifecycle of the whole local stack: Kafka and FerretDB (devtools.localstack), then every
platform process; readiness, status and an orderly stop (services first, then infrastructure)."""

from __future__ import annotations

import os
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from devtools.localstack import stack as infra
from devtools.localstack.config import (
    COMPONENT_NAMES,
    DEFAULT_TIMEOUT,
    HOST,
    STOP_TIMEOUT,
    LocalstackError,
    repo_root,
    state_dir,
)
from devtools.localstack.files import _file_lock
from devtools.localstack.process import (
    _pid_alive,
    _pid_cmdline,
    _spawn,
    _wait_until_ready,
    port_in_use,
    stop_recorded,
)
from devtools.localstack.stack import Status
from devtools.stack.config import (
    ALL_NAMES,
    MAIL,
    SERVICE_NAMES,
    SLA_WORKER_READY,
    Service,
    ack_link_key_path,
    dev_key_path,
    mail_sink_enabled,
    service,
    service_env,
)


def say(message: str) -> None:
    print(f"stack: {message}", file=sys.stderr, flush=True)


def _ordered(names: Sequence[str]) -> list[str]:
    """The known names among `names`, in start order; LocalstackError for an unknown one."""
    unknown = [n for n in names if n not in ALL_NAMES]
    if unknown:
        expected = ", ".join(ALL_NAMES)
        raise LocalstackError(f"unknown process {unknown[0]!r} (expected one of {expected})")
    return [n for n in ALL_NAMES if n in names]


# --------------------------------------------------------------------------------------------
# One platform process: pid file, readiness
# --------------------------------------------------------------------------------------------


def _read_pid_file(svc: Service) -> tuple[int, int] | None:
    """(pid, log offset at its start) from the pid file, if there is a readable one."""
    try:
        lines = svc.pid_file.read_text().split()
        return int(lines[0]), int(lines[1]) if len(lines) > 1 else 0
    except (OSError, ValueError, IndexError):
        return None


def running_pid(name: str) -> int | None:
    """Pid of the platform process if its pid file points at a live process of the right kind."""
    svc = service(name)
    found = _read_pid_file(svc)
    if found is None:
        return None
    pid = found[0]
    if pid <= 0 or not _pid_alive(pid):
        return None
    cmdline = _pid_cmdline(pid)
    if cmdline is not None and svc.marker not in cmdline:
        return None  # pid reused by an unrelated process
    return pid


def _http_ready(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=timeout) as response:  # noqa: S310
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _smtp_ready(port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            ready = sock.recv(512).startswith(b"220")
            sock.sendall(b"QUIT\r\n")
            return ready
    except OSError:
        return False


def _logged_since_start(svc: Service, needle: str) -> bool:
    """True if the process logged `needle` since its last start (offset kept in its pid file)."""
    found = _read_pid_file(svc)
    if found is None:
        return False
    try:
        with svc.log_path.open("rb") as log:
            log.seek(found[1])
            return needle.encode() in log.read()
    except OSError:
        return False


def is_ready(name: str, timeout: float = 2.0) -> bool:
    """APIs: /readyz answers 200 (MongoDB and Kafka reachable). The mail sink: it greets. The SLA
    worker: it logged that its partitions are assigned and its table recovered."""
    svc = service(name)
    if svc.kind == "api":
        return _http_ready(svc.url, timeout)
    if svc.kind == "mail":
        assert svc.port is not None
        return _smtp_ready(svc.port, timeout)
    return _logged_since_start(svc, SLA_WORKER_READY)


def wait_ready(name: str, timeout: float = DEFAULT_TIMEOUT) -> None:
    svc = service(name)
    _wait_until_ready(
        lambda: is_ready(name, timeout=1.0),
        running_pid(name),
        f"{name} ({svc.url})",
        (svc.log_path,),
        timeout,
    )


def _launch(name: str, env: dict[str, str]) -> int:
    """Start the process unless it runs (no waiting); returns its pid."""
    svc = service(name)
    pid = running_pid(name)
    if pid is not None:
        say(f"{name} already running (pid {pid})")
        return pid
    svc.pid_file.unlink(missing_ok=True)
    if svc.port is not None and port_in_use(svc.port):
        variable = {
            "api": f"ITSM_STACK_{name.upper().replace('-', '_')}_PORT",
            "mail": "ITSM_STACK_SMTP_PORT",
        }[svc.kind]
        raise LocalstackError(
            f"cannot start {name}: port {svc.port} on {HOST} is already in use by another "
            f"process; stop it or choose another port via {variable}"
        )
    svc.pid_file.parent.mkdir(parents=True, exist_ok=True)
    offset = svc.log_path.stat().st_size if svc.log_path.exists() else 0
    proc = _spawn(svc.command(), svc.log_path, cwd=repo_root(), env=env)
    svc.pid_file.write_text(f"{proc.pid}\n{offset}\n")
    say(f"started {name} (pid {proc.pid}) {svc.url if svc.port else ''}".rstrip())
    return proc.pid


def _keys(environ: dict[str, str]) -> tuple[str | None, str | None]:
    """The development signing key and notify's ack-link key, created once in the state dir
    (mode 0600, like `make run`) unless the environment gives them."""
    dev_mode = environ.get("ITSM_AUTH_MODE", "dev") == "dev"
    need_dev = dev_mode and not environ.get("ITSM_DEV_SIGNING_KEY")
    need_ack = not environ.get("ITSM_NOTIFY_ACK_LINK_KEY")
    if not (need_dev or need_ack):
        return None, None
    from launcher.embedded import ensure_dev_key  # heavy import: only when a key is needed

    dev = ensure_dev_key(dev_key_path()) if need_dev else None
    ack = ensure_dev_key(ack_link_key_path()) if need_ack else None
    return dev, ack


# --------------------------------------------------------------------------------------------
# The stack
# --------------------------------------------------------------------------------------------


def up(names: Sequence[str] = ALL_NAMES, timeout: float = DEFAULT_TIMEOUT) -> dict[str, int]:
    """Start (idempotently) and wait for the named processes; any platform process brings up
    Kafka and FerretDB first. Returns {name: pid}. A process that died is started again."""
    names = _ordered(names)
    started = time.monotonic()
    procs = [n for n in names if n in SERVICE_NAMES]
    if MAIL in procs and not mail_sink_enabled():
        procs.remove(MAIL)
        say("no mail sink: notify uses the relay in ITSM_NOTIFY_SMTP_HOST")
    wanted_infra = list(COMPONENT_NAMES) if procs else [n for n in names if n in COMPONENT_NAMES]
    pids: dict[str, int] = {}
    if wanted_infra:
        pids.update(infra.up(wanted_infra, timeout=timeout))
    if not procs:
        return pids
    environ = dict(os.environ)
    dev_key, ack_key = _keys(environ)
    env = service_env(environ, dev_key=dev_key, ack_link_key=ack_key)
    with _file_lock(state_dir() / ".stack.lock"):
        for name in procs:
            pids[name] = _launch(name, env)
        for name in procs:
            wait_ready(name, timeout=max(1.0, timeout - (time.monotonic() - started)))
    say(f"ready in {time.monotonic() - started:.1f}s: {', '.join(procs)}")
    return pids


def stop(name: str, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop one platform process (SIGTERM, SIGKILL after `timeout`); True if it was running."""
    svc = service(name)
    pid = running_pid(name)
    if pid is None:
        svc.pid_file.unlink(missing_ok=True)
        return False
    stop_recorded(name, pid, svc.pid_file, timeout, say)
    return True


def down(
    names: Sequence[str] = ALL_NAMES, timeout: float = STOP_TIMEOUT, purge: bool = False
) -> None:
    """Stop the named platform processes (all at once), then the named infrastructure; with
    purge=True also delete Kafka's and FerretDB's data."""
    names = _ordered(names)
    procs = [n for n in reversed(SERVICE_NAMES) if n in names]
    if procs:
        with _file_lock(state_dir() / ".stack.lock"), ThreadPoolExecutor(len(procs)) as pool:
            for future in [pool.submit(stop, n, timeout) for n in procs]:
                future.result()
    wanted_infra = [n for n in names if n in COMPONENT_NAMES]
    if wanted_infra:
        infra.down(wanted_infra, purge=purge)


def status(name: str) -> Status:
    """Current state of one process: pid, readiness, and whether a stranger holds its port."""
    if name in COMPONENT_NAMES:
        return infra.status(name)
    svc = service(name)
    pid = running_pid(name)
    ready = pid is not None and is_ready(name)
    busy = pid is None and svc.port is not None and port_in_use(svc.port)
    return Status(name, pid, ready, svc.url, svc.log_path, busy)


def listed(names: Sequence[str] = ALL_NAMES) -> list[str]:
    """The processes `status` shows: the mail sink only when it is in use or running."""
    names = _ordered(names)
    return [n for n in names if n != MAIL or mail_sink_enabled() or running_pid(MAIL)]
