"""FerretDB (SQLite or PostgreSQL backend): build from the Go module proxy, run, readiness,
private instances."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from devtools.localstack import sqlite_index
from devtools.localstack.config import (
    FERRETDB_MODULE,
    FERRETDB_VERSION,
    HOST,
    LocalstackError,
    cache_dir,
    ferretdb_id_index,
    mongo_port,
)
from devtools.localstack.files import _atomic_build, _is_complete, _make_writable
from devtools.localstack.logs import _say
from devtools.localstack.process import (
    _run_logged,
    _spawn,
    _spawn_companion,
    _tool,
    _wait_until_ready,
    port_in_use,
    stop_process,
)

# Location of the binary inside the cache dir (and inside the temporary build dir).
_BINARY = Path("bin", "ferretdb")


def ferretdb_home() -> Path:
    return cache_dir() / f"ferretdb-{FERRETDB_VERSION}"


def ferretdb_binary(provision: bool = True) -> Path:
    """Path of the FerretDB binary; builds it (once) unless told not to."""
    return provision_ferretdb() if provision else ferretdb_home() / _BINARY


def provision_ferretdb() -> Path:
    """Build FerretDB from the Go module proxy (once); returns the binary path."""
    home = ferretdb_home()
    binary = home / _BINARY
    if _is_complete(home):
        return binary
    go = _tool("go", "GOROOT")

    def build(tmp: Path) -> None:
        _say(f"building FerretDB v{FERRETDB_VERSION} from the Go module proxy into {home} ...")
        started = time.monotonic()
        env = {**os.environ, "GOWORK": "off", "CGO_ENABLED": os.environ.get("CGO_ENABLED", "0")}
        result = subprocess.run(
            [go, "mod", "download", "-json", f"{FERRETDB_MODULE}@v{FERRETDB_VERSION}"],
            cwd=tmp,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
        )
        try:
            info = json.loads(result.stdout)
        except json.JSONDecodeError:
            info = {}
        module_dir = info.get("Dir")
        if result.returncode != 0 or not module_dir:
            detail = info.get("Error") or result.stderr.strip() or result.stdout.strip()
            raise LocalstackError(f"go mod download {FERRETDB_MODULE} failed: {detail}")
        src = tmp / "src"
        shutil.copytree(module_dir, src, symlinks=True)
        _make_writable(src)
        # Without it the binary panics at start-up: "Invalid build/version/version.txt".
        (src / "build" / "version" / "version.txt").write_text(f"v{FERRETDB_VERSION}\n")
        (src / "build" / "version" / "package.txt").write_text("itsm-localstack\n")
        cmd = [
            go,
            "build",
            "-trimpath",
            "-buildvcs=false",
            "-o",
            str(tmp / _BINARY),
            "./cmd/ferretdb",
        ]
        _run_logged(cmd, tmp / "build.log", cwd=src, env=env)
        if not (tmp / _BINARY).is_file():
            raise LocalstackError(f"go build did not produce {_BINARY}")
        _say(f"FerretDB built ({time.monotonic() - started:.0f}s)")

    _atomic_build(home, build)
    return binary


def ferretdb_ping(port: int | None = None, host: str = HOST, timeout: float = 2.0) -> bool:
    """True if a MongoDB-compatible server answers `ping` (TCP connect if pymongo is missing)."""
    port = mongo_port() if port is None else port
    try:
        from pymongo import MongoClient
        from pymongo.errors import PyMongoError
    except ImportError:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except OSError:
            return False
    ms = max(int(timeout * 1000), 100)
    client: MongoClient[dict[str, object]] = MongoClient(
        host,
        port,
        directConnection=True,
        serverSelectionTimeoutMS=ms,
        connectTimeoutMS=ms,
        socketTimeoutMS=ms,
    )
    try:
        reply = client.admin.command("ping")
        return bool(reply.get("ok"))
    except PyMongoError:
        return False
    finally:
        client.close()


def ferretdb_command(
    port: int,
    data_dir: Path,
    state: Path,
    log_level: str = "WARN",
    binary: Path | None = None,
    postgresql_url: str | None = None,
) -> list[str]:
    """Command line for a FerretDB server on 127.0.0.1:port: SQLite backend with its files in
    `data_dir`, or the PostgreSQL backend at `postgresql_url` if given (data_dir unused)."""
    if postgresql_url is None:
        backend = ["--handler=sqlite", f"--sqlite-url=file:{data_dir}/"]
    else:
        backend = ["--handler=postgresql", f"--postgresql-url={postgresql_url}"]
    return [
        str(binary or ferretdb_binary()),
        *backend,
        f"--listen-addr={HOST}:{port}",
        "--debug-addr=-",
        "--telemetry=disable",
        f"--state-dir={state}",
        f"--log-level={log_level}",
        "--log-format=text",
    ]


def remove_empty_databases(data_dir: Path) -> list[Path]:
    """Remove the SQLite database files FerretDB cannot open and return them: empty ones with no
    write-ahead log to recover from, left by a crash while a database was being created. They
    hold nothing, yet FerretDB exits at start on each (`no such table: _ferretdb_collections`)."""
    removed = []
    for database in sorted(data_dir.glob("*.sqlite")):
        companions = [database.with_name(database.name + suffix) for suffix in ("-wal", "-shm")]
        if database.stat().st_size or (companions[0].exists() and companions[0].stat().st_size):
            continue
        for path in (database, *companions):
            path.unlink(missing_ok=True)
        removed.append(database)
    return removed


def _spawn_ferretdb(
    port: int,
    data_dir: Path,
    state: Path,
    log_path: Path,
    *,
    log_level: str = "WARN",
    binary: Path | None = None,
    postgresql_url: str | None = None,
) -> subprocess.Popen[bytes]:
    """Create the data/state dirs and start FerretDB (no waiting); output goes to log_path.
    On SQLite its `_id` index keeper (sqlite_index.py) starts beside it, logging next to it."""
    if postgresql_url is None:
        data_dir.mkdir(parents=True, exist_ok=True)
        for database in remove_empty_databases(data_dir):
            _say(f"removed {database}: an empty SQLite database FerretDB could not open")
    state.mkdir(parents=True, exist_ok=True)
    cmd = ferretdb_command(
        port, data_dir, state, log_level=log_level, binary=binary, postgresql_url=postgresql_url
    )
    proc = _spawn(cmd, log_path, cwd=state)
    if postgresql_url is None and ferretdb_id_index():
        keeper = [sys.executable, "-m", sqlite_index.MODULE]
        keeper += ["--data-dir", str(data_dir), "--watch-pid", str(proc.pid)]
        _spawn_companion(proc.pid, keeper, _keeper_log(log_path), cwd=state)
    return proc


def _keeper_log(log_path: Path) -> Path:
    return log_path.with_name(f"{log_path.stem}-id-index.log")


def start_ferretdb(
    port: int,
    data_dir: Path,
    log_path: Path,
    state: Path | None = None,
    *,
    wait: bool = True,
    timeout: float = 30.0,
    log_level: str = "WARN",
    postgresql_url: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start an extra, independent FerretDB (own port and data dir); stop it with stop_process().

    With wait=True (default) returns only once it answers `ping`. `state` defaults to
    `<data_dir>-state` next to the data dir. With `postgresql_url` (say a started
    `PostgresCluster(...).url`) it stores into that database instead of SQLite files.
    """
    data_dir = Path(data_dir).resolve()
    state = Path(state).resolve() if state else data_dir.with_name(f"{data_dir.name}-state")
    log_path = Path(log_path)
    if port_in_use(port):
        raise LocalstackError(f"port {port} is already in use")
    proc = _spawn_ferretdb(
        port, data_dir, state, log_path, log_level=log_level, postgresql_url=postgresql_url
    )
    if wait:
        try:
            _wait_until_ready(
                lambda: ferretdb_ping(port, timeout=1.0),
                proc.pid,
                f"FerretDB at {HOST}:{port}",
                (log_path,),
                timeout,
            )
        except BaseException:
            stop_process(proc)
            raise
    return proc
