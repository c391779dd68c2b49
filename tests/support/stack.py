"""A private local stack for end-to-end tests: its own Kafka and FerretDB on free loopback ports
and every service as its own process, all started and stopped by the project's one command
(`python -m devtools.stack`), with a state dir (pid files, logs) under the test's tmp dir.

Owning the broker means a test may restart it, and that nothing it does (consumer groups,
topics, a kill -9) reaches other tests on the shared stack. The services get `extra_env` on top
of the stack's defaults: a unique database, SLA app id and consumer groups per run, tiny SLA
targets, a loopback SMTP server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from devtools.localstack import free_port, tail
from shared.ids import uuid7

ROOT = Path(__file__).resolve().parents[2]
APIS = ("incidents", "changes", "sla-api", "notify")
PORT_VARIABLES = {
    "incidents": "ITSM_STACK_INCIDENTS_PORT",
    "changes": "ITSM_STACK_CHANGES_PORT",
    "sla-api": "ITSM_STACK_SLA_API_PORT",
    "notify": "ITSM_STACK_NOTIFY_PORT",
}


class StackCommandFailed(AssertionError):
    pass


@dataclass
class PrivateStack:
    """Handles on a running private stack."""

    state: Path
    env: dict[str, str]  # what every `python -m devtools.stack` call of this stack runs with
    run_id: str

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.env['KAFKA_PORT']}"

    @property
    def mongo_url(self) -> str:
        return f"mongodb://127.0.0.1:{self.env['MONGO_PORT']}"

    @property
    def database(self) -> str:
        return self.env["ITSM_MONGO_DATABASE"]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.env[PORT_VARIABLES[name]]}"

    def client(self, name: str, timeout: float = 30.0) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url(name), timeout=timeout)

    def log(self, name: str) -> Path:
        return self.state / "logs" / f"{name}.log"

    def pid(self, name: str) -> int | None:
        """The pid in the process's pid file (a platform process or the infrastructure)."""
        path = self.state / ("stack" if name not in ("kafka", "ferretdb") else "") / f"{name}.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(path.read_text().split()[0])
        return None

    def kill(self, name: str) -> int:
        """kill -9 the process: no shutdown, no flush, no commit, no goodbye to the group."""
        pid = self.pid(name)
        assert pid is not None, f"{name} has no pid file"
        os.kill(pid, signal.SIGKILL)
        return pid

    async def command(self, *args: str, timeout: float = 150.0) -> str:
        """Run `python -m devtools.stack <args>` for this stack; its output, or fail with it."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "devtools.stack", *args, cwd=ROOT, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            out, _ = await proc.communicate()
            raise StackCommandFailed(
                f"`devtools.stack {' '.join(args)}` took over {timeout:.0f}s:\n{out.decode()}"
            ) from None
        text = out.decode(errors="replace")
        if proc.returncode != 0:
            raise StackCommandFailed(
                f"`devtools.stack {' '.join(args)}` exited {proc.returncode}:\n{text}"
            )
        return text

    async def up(self, *names: str, timeout: float = 120.0) -> float:
        """Start what is not running (e.g. after a kill) and wait until it answers; seconds."""
        started = time.monotonic()
        await self.command("up", *names, "--timeout", str(timeout), timeout=timeout + 30)
        return time.monotonic() - started

    async def down(self, *names: str, timeout: float = 20.0) -> None:
        await self.command("down", *names, "--timeout", str(timeout), timeout=timeout * 3 + 30)

    def tails(self, lines: int = 30) -> str:
        """The end of every log, for a failure message."""
        logs = sorted((self.state / "logs").glob("*.log"))
        return "\n".join(f"----- {p.name} -----\n{tail(p, lines)}" for p in logs)

    def leaks(self, secrets: Mapping[str, str]) -> list[str]:
        """Which of `secrets` (and any bearer token: a JWT) some process wrote to its log."""
        logs = sorted((self.state / "logs").glob("*.log"))
        assert {p.stem for p in logs} >= SERVICE_LOGS, [p.name for p in logs]
        found = []
        for log in logs:
            text = log.read_bytes()
            found += [
                f"{what} in {log.name}" for what, value in secrets.items() if value.encode() in text
            ]
            found += [f"a JWT in {log.name}"] if JWT.search(text) else []
        return found


SERVICE_LOGS = {"incidents", "changes", "sla-api", "sla-worker", "notify"}
JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")


def stack_env(state: Path, run_id: str, extra_env: Mapping[str, str]) -> dict[str, str]:
    """Free ports for everything, the run's own names, quick polling for a test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITSM_")}
    env.update(
        ITSM_STATE_DIR=str(state),
        KAFKA_PORT=str(free_port()),
        KAFKA_CONTROLLER_PORT=str(free_port()),
        MONGO_PORT=str(free_port()),
        KAFKA_HEAP_OPTS="-Xms128m -Xmx512m",
        ITSM_MONGO_DATABASE=f"e2e_{run_id}",
        ITSM_NOTIFY_ACK_LINK_KEY=secrets.token_urlsafe(48),
        ITSM_SLA_APP_ID=f"e2e-sla-{run_id}",
        ITSM_SLA_API_CONSUMER_GROUP=f"e2e-sla-api-{run_id}",
        ITSM_NOTIFY_CONSUMER_GROUP=f"e2e-notify-{run_id}",
        ITSM_TOPIC_PARTITIONS="3",
        ITSM_SLA_SESSION_TIMEOUT="6",  # the broker's floor: a killed worker's partitions move fast
        ITSM_LOG_LEVEL="INFO",
    )
    env.update({variable: str(free_port()) for variable in PORT_VARIABLES.values()})
    env["ITSM_STACK_SMTP_PORT"] = str(free_port())
    env.update(extra_env)
    return env


@contextlib.asynccontextmanager
async def private_stack(
    tmp: Path, extra_env: Mapping[str, str], *, timeout: float = 150.0
) -> AsyncIterator[PrivateStack]:
    """`devtools.stack up` on free ports; `down` afterwards, also when a test or the start-up
    failed (the logs' tails are printed when the start-up did)."""
    run_id = uuid7().replace("-", "")[-10:]
    state = tmp / "stack"
    stack = PrivateStack(state, stack_env(state, run_id, extra_env), run_id)
    try:
        try:
            await stack.up(timeout=timeout)
        except BaseException:
            print(stack.tails(), file=sys.stderr)
            raise
        yield stack
    finally:
        await stack.down()
