"""PostgreSQL for FerretDB's `postgresql` backend: a private cluster of the local stack.

With ``ITSM_FERRETDB_BACKEND=postgresql``, `up` starts it before FerretDB and `down` stops it
(``pg_ctl stop -m fast``). Everything lives in its home dir (``<state dir>/postgres``): ``data/``,
initdb'd on first use (UTF8, C locale: what FerretDB accepts), and ``socket/``, the server's
unix socket dir. It listens on 127.0.0.1 only (``ITSM_POSTGRES_PORT``, 5433), trusts every
connection from there and from its own socket (pg_hba.conf), and holds the `ferretdb` database.

The server programs come from ``ITSM_POSTGRES_BIN``, else from the dir of `pg_ctl` on PATH (links
resolved), else from the newest ``/usr/lib/postgresql/*/bin`` (Debian, Ubuntu). PostgreSQL
refuses to run as root: run as root, its programs run as the `postgres` account, which then owns
``data/`` and ``socket/`` (and must be able to reach the home dir).
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from devtools.localstack.config import (
    DEFAULT_POSTGRES_PORT,
    DEFAULT_TIMEOUT,
    HOST,
    STOP_TIMEOUT,
    LocalstackError,
    postgres_home,
    postgres_log,
    postgres_port,
)
from devtools.localstack.files import COMPLETE_MARKER, _is_complete, _rmtree
from devtools.localstack.logs import _say
from devtools.localstack.process import _pid_alive, _pid_cmdline, _run_logged, port_in_use

SERVER_ACCOUNT = "postgres"  # whom the server programs run as when started by root
SUPERUSER = "postgres"  # the cluster's superuser (initdb --username), FerretDB's role
DATABASE = "ferretdb"
_PROGRAMS = ("initdb", "pg_ctl", "postgres", "psql")
_PG_HBA = """\
# devtools.localstack: trust, but only the cluster's own socket dir and 127.0.0.1
local all all trust
host  all all 127.0.0.1/32 trust
"""


def postgres_bin_dir() -> Path:
    """Dir of initdb, pg_ctl, postgres and psql (see the module docstring for where it looks)."""
    explicit = os.environ.get("ITSM_POSTGRES_BIN", "").strip()
    if explicit:
        candidates = [Path(explicit).expanduser()]
    else:
        on_path = shutil.which("pg_ctl")
        candidates = [Path(on_path).resolve().parent] if on_path else []
        versions = Path("/usr/lib/postgresql").glob("*/bin")
        candidates += sorted(versions, key=lambda p: int("0" + p.parent.name), reverse=True)
    for candidate in candidates:
        if all((candidate / program).is_file() for program in _PROGRAMS):
            return candidate
    looked = ", ".join(map(str, candidates)) or "PATH, /usr/lib/postgresql/*/bin"
    raise LocalstackError(
        f"PostgreSQL server programs ({', '.join(_PROGRAMS)}) not found in {looked}: install "
        f"them (Debian: `apt-get install postgresql`) or set ITSM_POSTGRES_BIN"
    )


def _server_user() -> str | None:
    """The account to run the server programs as: None (this one) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_ACCOUNT)
    except KeyError:
        raise LocalstackError(
            f"PostgreSQL refuses to run as root and there is no {SERVER_ACCOUNT!r} account to "
            f"run it as; run the stack as an ordinary user"
        ) from None
    return SERVER_ACCOUNT


def _private_dir(path: Path, user: str | None) -> None:
    """Create `path` with mode 0700, owned by `user` (if given)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _check_reachable(path: Path, user: str) -> None:
    """Raise if `user` cannot search every dir above `path` (say a 0700 temporary dir)."""
    entry = pwd.getpwnam(user)
    for parent in path.parents:
        mode = parent.stat()
        if mode.st_uid == entry.pw_uid or mode.st_mode & stat.S_IXOTH:
            continue
        if mode.st_gid == entry.pw_gid and mode.st_mode & stat.S_IXGRP:
            continue
        raise LocalstackError(
            f"PostgreSQL runs as {user!r}, which cannot enter {parent} (mode "
            f"{stat.filemode(mode.st_mode)}); put the cluster elsewhere (ITSM_STATE_DIR)"
        )


@dataclass(frozen=True)
class PostgresCluster:
    """One private cluster: `home` holds its data and socket dirs; it listens on HOST:port."""

    home: Path
    port: int = DEFAULT_POSTGRES_PORT
    log_path: Path | None = None  # default: <home>/postgres.log

    @classmethod
    def default(cls) -> PostgresCluster:
        """The stack's cluster (state and logs dirs, ``ITSM_POSTGRES_PORT``)."""
        return cls(postgres_home(), postgres_port(), postgres_log())

    @property
    def data_dir(self) -> Path:
        return self.home.resolve() / "data"

    @property
    def socket_dir(self) -> Path:
        return self.home.resolve() / "socket"

    @property
    def log(self) -> Path:
        return self.log_path or self.home / "postgres.log"

    @property
    def url(self) -> str:
        """FerretDB's ``--postgresql-url``."""
        return f"postgres://{SUPERUSER}@{HOST}:{self.port}/{DATABASE}"

    def initdb_command(self, bin_dir: Path) -> list[str]:
        return [
            str(bin_dir / "initdb"),
            f"--pgdata={self.data_dir}",
            f"--username={SUPERUSER}",
            "--auth=trust",  # pg_hba.conf is then replaced by _PG_HBA
            "--encoding=UTF8",
            "--no-locale",
        ]

    def start_command(self, bin_dir: Path, timeout: float = DEFAULT_TIMEOUT) -> list[str]:
        options = [
            f"--port={self.port}",
            f"--listen_addresses={HOST}",
            f"--unix_socket_directories={self.socket_dir}",
            "--unix_socket_permissions=0700",
        ]
        return [
            str(bin_dir / "pg_ctl"),
            "start",
            "--wait",
            f"--timeout={max(1, round(timeout))}",
            f"--pgdata={self.data_dir}",
            f"--options={shlex.join(options)}",  # pg_ctl hands them to the postgres command via sh
        ]

    def stop_command(self, bin_dir: Path, timeout: float = STOP_TIMEOUT) -> list[str]:
        return [
            str(bin_dir / "pg_ctl"),
            "stop",
            "--wait",
            f"--timeout={max(1, round(timeout))}",
            "--mode=fast",
            f"--pgdata={self.data_dir}",
        ]

    def _postmaster(self) -> tuple[int, int] | None:
        """(pid, port) of the running server, from its postmaster.pid; None if it is not up."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None
        if pid <= 0 or not _pid_alive(pid):
            return None
        cmdline = _pid_cmdline(pid)
        if cmdline is not None and "postgres" not in cmdline:
            return None  # pid reused by an unrelated process
        return pid, port

    def running_pid(self) -> int | None:
        running = self._postmaster()
        return None if running is None else running[0]

    def check_startable(self) -> None:
        """Raise unless the server could start: its programs found, its port free (or it runs)."""
        postgres_bin_dir()
        _server_user()
        if self._postmaster() is None and port_in_use(self.port):
            raise LocalstackError(
                f"cannot start postgres: port {self.port} on {HOST} is already in use by another "
                f"process; stop it or choose another port via ITSM_POSTGRES_PORT"
            )

    def start(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Start the cluster unless it runs (initdb on first use), wait until it accepts
        connections and has the `ferretdb` database; returns the server's pid."""
        bin_dir = postgres_bin_dir()
        running = self._postmaster()
        if running is not None:
            pid, port = running
            if port != self.port:
                raise LocalstackError(
                    f"postgres of {self.data_dir} already runs on port {port}, not {self.port}"
                )
            _say(f"postgres already running (pid {pid}) at {HOST}:{port}")
        else:
            self.check_startable()
            user = _server_user()
            self.home.mkdir(parents=True, exist_ok=True)
            if user is not None:
                _check_reachable(self.data_dir, user)
            if not _is_complete(self.data_dir):
                self._initdb(bin_dir, user)
            _private_dir(self.socket_dir, user)
            _run_logged(self.start_command(bin_dir, timeout), self.log, cwd=self.home, user=user)
            started = self.running_pid()
            if started is None:
                raise LocalstackError(f"pg_ctl started no postgres (see {self.log})")
            pid = started
            _say(f"started postgres (pid {pid}) at {HOST}:{self.port} (data {self.data_dir}, "
                 f"log {self.log})")  # fmt: skip
        self._create_database(bin_dir)
        return pid

    def _initdb(self, bin_dir: Path, user: str | None) -> None:
        if self.data_dir.exists():
            _say(f"removing incomplete {self.data_dir}")
            _rmtree(self.data_dir)
        _say(f"creating a PostgreSQL cluster in {self.data_dir}")
        _private_dir(self.data_dir, user)
        _run_logged(self.initdb_command(bin_dir), self.log, cwd=self.home, user=user)
        (self.data_dir / "pg_hba.conf").write_text(_PG_HBA)
        (self.data_dir / COMPLETE_MARKER).write_text(time.strftime("%Y-%m-%dT%H:%M:%S%z\n"))

    def _create_database(self, bin_dir: Path) -> None:
        psql = [str(bin_dir / "psql"), "-X", "-A", "-t", "-h", HOST, "-p", str(self.port),
                "-U", SUPERUSER, "-d", "postgres"]  # fmt: skip
        listed = subprocess.run(
            [*psql, "--list"], capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
        )
        if listed.returncode != 0:
            raise LocalstackError(f"psql at {HOST}:{self.port} failed: {listed.stderr.strip()}")
        if DATABASE not in {line.split("|")[0] for line in listed.stdout.splitlines()}:
            _run_logged([*psql, "-c", f"CREATE DATABASE {DATABASE}"], self.log, cwd=self.home)

    def stop(self, timeout: float = STOP_TIMEOUT) -> bool:
        """Stop the cluster (fast shutdown: sessions are ended, data is flushed); True if it ran."""
        pid = self.running_pid()
        if pid is None:
            return False
        _say(f"stopping postgres (pid {pid}) ...")
        started = time.monotonic()
        cmd = self.stop_command(postgres_bin_dir(), timeout)
        _run_logged(cmd, self.log, cwd=self.home, user=_server_user())
        _say(f"stopped postgres ({time.monotonic() - started:.1f}s)")
        return True
