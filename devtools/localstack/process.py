"""Process management: tool lookup, build steps, spawning/stopping servers, pid files, ports."""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from devtools.localstack.config import (
    FERRETDB,
    HOST,
    KAFKA,
    POLL_INTERVAL,
    LocalstackError,
    component,
)
from devtools.localstack.logs import _print_log_tails, _say

# Popen objects of processes started by this Python process, so that they can be reaped.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
# Helpers that watch a server of ours and end when it does (FerretDB's index keeper), by the
# server's pid, so that stopping the server also reaps them.
_COMPANIONS: dict[int, list[subprocess.Popen[bytes]]] = {}


def _tool(name: str, home_env: str | None = None) -> str:
    """Path of an executable: `$home_env/bin/name` if that exists, else looked up on PATH."""
    if home_env:
        home = os.environ.get(home_env)
        if home and (Path(home) / "bin" / name).is_file():
            return str(Path(home) / "bin" / name)
    found = shutil.which(name)
    if not found:
        raise LocalstackError(f"`{name}` not found on PATH (needed to provision/run the stack)")
    return found


def _as_user(user: str | None) -> dict[str, Any]:
    """subprocess arguments that run the child as `user` (its own group only); {} for None."""
    if user is None:
        return {}
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise LocalstackError(f"there is no user account {user!r}") from None
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _run_logged(
    cmd: Sequence[str],
    log_path: Path,
    cwd: Path,
    env: dict[str, str] | None = None,
    user: str | None = None,
) -> None:
    """Run a build step (as `user` if given), output to `log_path`; on failure show its tail
    and raise."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"$ {shlex.join(cmd)}\n".encode())
        log.flush()
        result = subprocess.run(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            **_as_user(user),
        )
    if result.returncode != 0:
        _print_log_tails([log_path])
        raise LocalstackError(f"`{shlex.join(cmd)}` failed with exit code {result.returncode}")


def _pid_alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)  # reap if it is our (zombie) child
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _pid_cmdline(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace")


_CMDLINE_MARKERS = {KAFKA: "kafka.Kafka", FERRETDB: "ferretdb"}


def running_pid(name: str) -> int | None:
    """Pid of the shared component if its pid file points at a live process of the right kind."""
    comp = component(name)
    try:
        pid = int(comp.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if pid <= 0 or not _pid_alive(pid):
        return None
    cmdline = _pid_cmdline(pid)
    if cmdline is not None and _CMDLINE_MARKERS[comp.name] not in cmdline:
        return None  # pid reused by an unrelated process
    return pid


def port_in_use(port: int, host: str = HOST) -> bool:
    """True if something accepts connections on / is bound to host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        if probe.connect_ex((host, port)) == 0:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = HOST) -> int:
    """A currently unused TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _spawn(
    cmd: Sequence[str], log_path: Path, cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a detached server process (own session) with stdout+stderr appended to log_path;
    `env` replaces the inherited environment when given."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} $ {shlex.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    _CHILDREN[proc.pid] = proc
    return proc


def _forget_child(pid: int) -> None:
    """Drop the Popen object of a stopped child started by this Python process."""
    _CHILDREN.pop(pid, None)


def _spawn_companion(
    server_pid: int, cmd: Sequence[str], log_path: Path, cwd: Path
) -> subprocess.Popen[bytes]:
    """Start a helper that ends by itself when the server `server_pid` does."""
    proc = _spawn(cmd, log_path, cwd)
    _COMPANIONS.setdefault(server_pid, []).append(proc)
    return proc


def _reap_companions(server_pid: int, timeout: float = 5.0) -> None:
    """Wait for the helpers of a stopped server to end (stopping those that do not)."""
    for proc in _COMPANIONS.pop(server_pid, []):
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _terminate_pid(proc.pid, timeout)
            proc.wait()
        _forget_child(proc.pid)


def _terminate_pid(pid: int, timeout: float) -> None:
    """SIGTERM, wait up to `timeout`, then SIGKILL the process (group)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        time.sleep(POLL_INTERVAL)
    _say(f"pid {pid} did not exit after {timeout:.0f}s, sending SIGKILL")
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL)


def stop_recorded(
    label: str, pid: int, pid_file: Path, timeout: float, say: Callable[[str], None]
) -> None:
    """Stop a process recorded in `pid_file` (SIGTERM, SIGKILL after `timeout`), forget it and
    remove the file, saying so."""
    say(f"stopping {label} (pid {pid}) ...")
    started = time.monotonic()
    _terminate_pid(pid, timeout)
    _forget_child(pid)
    _reap_companions(pid)
    pid_file.unlink(missing_ok=True)
    say(f"stopped {label} ({time.monotonic() - started:.1f}s)")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop a server started with start_ferretdb() (SIGTERM, then SIGKILL) and reap it."""
    if proc.poll() is None:
        _terminate_pid(proc.pid, timeout)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5.0)
    _forget_child(proc.pid)
    _reap_companions(proc.pid)


def _wait_until_ready(
    probe: Callable[[], bool],
    pid: int | None,
    what: str,
    logs: Sequence[Path],
    timeout: float,
) -> None:
    """Poll `probe` until it succeeds; raise (showing the log tails) on timeout or process death."""
    deadline = time.monotonic() + timeout
    while True:
        if probe():
            return
        if pid is not None and not _pid_alive(pid):
            _print_log_tails(logs)
            raise LocalstackError(f"{what} exited during start-up (see {logs[0]})")
        if time.monotonic() >= deadline:
            _print_log_tails(logs)
            still = f"; pid {pid} is still running (`down` stops it)" if pid is not None else ""
            raise LocalstackError(f"{what} not ready after {timeout:.0f}s{still}")
        time.sleep(POLL_INTERVAL)
