"""A second, secured local broker: Kafka (KRaft, single node) with SASL/SCRAM-SHA-512 over TLS,
mutual TLS, and ACLs (StandardAuthorizer), beside the plaintext one and never touching it.

    python -m devtools.localstack secure up [--timeout S]   # start (first time: CA, users, ACLs)
    python -m devtools.localstack secure env [PRINCIPAL] [--mtls] [--export]
    python -m devtools.localstack secure status | down [--purge]

- Listeners on 127.0.0.1: `SASL_SSL` on ``KAFKA_SECURE_PORT`` (9094, SCRAM-SHA-512 over TLS),
  `MTLS` on ``KAFKA_MTLS_PORT`` (9095, TLS with ``ssl.client.auth=required``; also the
  inter-broker listener) and the controller on ``KAFKA_SECURE_CONTROLLER_PORT`` (9096, TLS with
  client certificates). No plaintext listener.
- A throwaway CA (certs.py) signs the broker's certificate (127.0.0.1, localhost) and one client
  certificate per principal; the CA key is discarded. A certificate's principal is its CN
  (``ssl.principal.mapping.rules``), the same name as the principal's SCRAM user, so both ways
  in meet the same ACLs.
- Principals: ``admin`` (super user: creates the topics and ACLs) and every principal of
  `shared.bus.topics.KAFKA_ACCESS` (incidents, changes, sla-worker, sla-api, notify,
  ingest-producer), each with a generated SCRAM-SHA-512 password, created at format time
  (``StorageTool format --add-scram``), and the ACLs that table gives it; nothing else is
  allowed (``allow.everyone.if.no.acl.found=false``).
- Everything lives in ``<state dir>/kafka-secure/`` (0700): ``tls/`` (PEM files), ``users/<name>``
  (passwords, 0600), ``data/``, the configs, the pid file and ``kafka.log``. Passwords and keys
  are generated at run time, never printed or logged (the format command is logged redacted);
  ``env`` prints the password *file*'s path (``ITSM_KAFKA_SASL_PASSWORD_FILE``).

Needs the Kafka jars of `devtools.localstack` (provisioned on first use) and the project's
Python dependencies (`cryptography` for the CA, `aiokafka` for topics and ACLs).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.localstack.acls import AclBinding, create_acls, describe_principal_acls
from devtools.localstack.certs import write_authority, write_private
from devtools.localstack.config import (
    DEFAULT_TIMEOUT,
    HOST,
    STOP_TIMEOUT,
    LocalstackError,
    _env_port,
    state_dir,
)
from devtools.localstack.files import _file_lock, _rmtree
from devtools.localstack.kafka import (
    _java_base,
    _kafka_api_versions,
    _kafka_find_coordinator,
    _kafka_log4j2_properties,
    provision_kafka,
)
from devtools.localstack.logs import _print_log_tails, _say
from devtools.localstack.process import (
    _forget_child,
    _pid_alive,
    _pid_cmdline,
    _spawn,
    _terminate_pid,
    _wait_until_ready,
    port_in_use,
)
from shared.bus.topics import KAFKA_ACCESS, platform_topics

DEFAULT_SECURE_PORT = 9094
DEFAULT_MTLS_PORT = 9095
DEFAULT_SECURE_CONTROLLER_PORT = 9096
DEFAULT_HEAP = "-Xms128m -Xmx512m"
ADMIN = "admin"
BROKER = "broker"
MECHANISM = "SCRAM-SHA-512"
TOPIC_PARTITIONS = 3


def principals() -> list[str]:
    """Every principal the secured broker knows (SCRAM user and client certificate)."""
    return [ADMIN, *(access.principal for access in KAFKA_ACCESS)]


def acl_bindings() -> list[AclBinding]:
    """The ACLs of `KAFKA_ACCESS`, as the broker stores them (allow only, any host)."""
    bindings = []
    for access in KAFKA_ACCESS:
        principal = f"User:{access.principal}"
        bindings += [AclBinding.topic(principal, str(t), "WRITE") for t in access.writes]
        bindings += [AclBinding.topic(principal, str(t), "READ") for t in access.reads]
        bindings += [
            AclBinding.topic(principal, str(t), "DESCRIBE_CONFIGS") for t in access.configs
        ]
        if access.group_prefix:
            bindings.append(AclBinding.group(principal, access.group_prefix, "READ"))
        if access.internal_prefix:
            bindings.append(
                AclBinding.topic(principal, access.internal_prefix, "ALL", prefixed=True)
            )
    return bindings


@dataclass(frozen=True)
class SecureBroker:
    """One secured broker: where its files live and the ports it listens on."""

    home: Path
    sasl_port: int = DEFAULT_SECURE_PORT
    mtls_port: int = DEFAULT_MTLS_PORT
    controller_port: int = DEFAULT_SECURE_CONTROLLER_PORT

    @classmethod
    def default(cls) -> SecureBroker:
        """The checkout's secured broker (state dir, ports from the environment)."""
        return cls(
            state_dir() / "kafka-secure",
            _env_port("KAFKA_SECURE_PORT", DEFAULT_SECURE_PORT),
            _env_port("KAFKA_MTLS_PORT", DEFAULT_MTLS_PORT),
            _env_port("KAFKA_SECURE_CONTROLLER_PORT", DEFAULT_SECURE_CONTROLLER_PORT),
        )

    # ---------------------------------------------------------------- files and addresses

    @property
    def tls_dir(self) -> Path:
        return self.home / "tls"

    @property
    def ca_file(self) -> Path:
        return self.tls_dir / "ca.crt"

    @property
    def pid_file(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def log_path(self) -> Path:
        return self.home / "kafka.log"

    @property
    def out_path(self) -> Path:
        return self.home / "kafka.out"

    @property
    def sasl_bootstrap(self) -> str:
        return f"{HOST}:{self.sasl_port}"

    @property
    def mtls_bootstrap(self) -> str:
        return f"{HOST}:{self.mtls_port}"

    def password_file(self, principal: str) -> Path:
        return self.home / "users" / principal

    def password(self, principal: str) -> str:
        return self.password_file(principal).read_text()

    def certfile(self, principal: str) -> Path:
        return self.tls_dir / f"{principal}.crt"

    def keyfile(self, principal: str) -> Path:
        return self.tls_dir / f"{principal}.key"

    # ---------------------------------------------------------------- client settings

    def env(self, principal: str, *, mtls: bool = False) -> dict[str, str]:
        """The platform's settings (`ITSM_KAFKA_*`) for `principal`: SASL_SSL with its SCRAM
        user (password from its file), or with `mtls` SSL with its client certificate."""
        if principal not in principals():
            raise LocalstackError(f"unknown principal {principal!r} (one of {principals()})")
        common = {"ITSM_KAFKA_SSL_CAFILE": str(self.ca_file)}
        if mtls:
            return common | {
                "ITSM_KAFKA_BOOTSTRAP": self.mtls_bootstrap,
                "ITSM_KAFKA_SECURITY_PROTOCOL": "SSL",
                "ITSM_KAFKA_SSL_CERTFILE": str(self.certfile(principal)),
                "ITSM_KAFKA_SSL_KEYFILE": str(self.keyfile(principal)),
            }
        return common | {
            "ITSM_KAFKA_BOOTSTRAP": self.sasl_bootstrap,
            "ITSM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "ITSM_KAFKA_SASL_MECHANISM": MECHANISM,
            "ITSM_KAFKA_SASL_USERNAME": principal,
            "ITSM_KAFKA_SASL_PASSWORD_FILE": str(self.password_file(principal)),
        }

    def tls_context(self, principal: str | None = None) -> ssl.SSLContext:
        """A client context trusting the local CA, presenting `principal`'s certificate."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if principal is not None:
            context.load_cert_chain(str(self.certfile(principal)), str(self.keyfile(principal)))
        return context

    def admin_kwargs(self) -> dict[str, Any]:
        """aiokafka arguments for the super user, over mTLS."""
        return {
            "bootstrap_servers": self.mtls_bootstrap,
            "security_protocol": "SSL",
            "ssl_context": self.tls_context(ADMIN),
        }

    # ---------------------------------------------------------------- configuration

    def _server_properties(self) -> str:
        sasl, mtls, ctrl = self.sasl_port, self.mtls_port, self.controller_port
        keystore, users = self.tls_dir / f"{BROKER}.keystore.pem", f"User:{BROKER};User:{ADMIN}"
        return f"""# generated by devtools/localstack/secure.py -- rewritten on every `up`
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers={HOST}:{ctrl}
listeners=SASL_SSL://{HOST}:{sasl},MTLS://{HOST}:{mtls},CONTROLLER://{HOST}:{ctrl}
advertised.listeners=SASL_SSL://{HOST}:{sasl},MTLS://{HOST}:{mtls}
controller.listener.names=CONTROLLER
listener.security.protocol.map=SASL_SSL:SASL_SSL,MTLS:SSL,CONTROLLER:SSL
inter.broker.listener.name=MTLS
sasl.enabled.mechanisms={MECHANISM}
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=\
org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location={keystore}
ssl.truststore.type=PEM
ssl.truststore.location={self.ca_file}
ssl.enabled.protocols=TLSv1.3,TLSv1.2
listener.name.mtls.ssl.client.auth=required
listener.name.controller.ssl.client.auth=required
ssl.principal.mapping.rules=RULE:^CN=([^,]+)$/$1/,DEFAULT
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users={users}
allow.everyone.if.no.acl.found=false
log.dirs={self.home / "data"}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
"""

    def _prepare(self, libs: Path) -> tuple[Path, Path]:
        """Configs every time; CA, passwords and storage (with the SCRAM users) the first time."""
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.home, 0o700)
        properties, log4j = self.home / "server.properties", self.home / "log4j2.properties"
        write_private(properties, self._server_properties().encode())
        log4j.write_text(_kafka_log4j2_properties(self.log_path))
        if (self.home / "data" / "meta.properties").is_file():
            return properties, log4j
        for stale in (self.home / "data", self.tls_dir, self.home / "users"):
            _rmtree(stale)
        _say(f"creating a CA, {len(principals())} principals and their passwords in {self.home}")
        write_authority(self.tls_dir, BROKER, principals())
        for principal in principals():
            write_private(self.password_file(principal), secrets.token_urlsafe(24).encode())
        cmd = [
            *_java_base(libs, log4j),
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-t",
            _cluster_id(),
            "-c",
            str(properties),
        ]
        for principal in principals():
            scram = f"{MECHANISM}=[name={principal},password={self.password(principal)}]"
            cmd += ["--add-scram", scram]
        _run_redacted(cmd, self.home / "format.log", [self.password(p) for p in principals()])
        return properties, log4j

    # ---------------------------------------------------------------- lifecycle

    def running_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if pid <= 0 or not _pid_alive(pid):
            return None
        cmdline = _pid_cmdline(pid)
        if cmdline is not None and str(self.home) not in cmdline:
            return None  # pid reused by an unrelated process
        return pid

    def ready(self, timeout: float = 2.0) -> bool:
        """The broker answers ApiVersions and FindCoordinator on its mTLS listener (as admin)."""
        try:
            context = self.tls_context(ADMIN)
            with (
                socket.create_connection((HOST, self.mtls_port), timeout=timeout) as raw,
                context.wrap_socket(raw, server_hostname=HOST) as sock,
            ):
                sock.settimeout(timeout)
                versions = _kafka_api_versions(sock)
                low, high = versions.get(10, (0, -1))
                if not low <= 1 <= high:
                    return True
                return _kafka_find_coordinator(sock, "itsm-localstack-probe") == 0
        except (OSError, ConnectionError, ValueError):
            return False

    def up(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Start the broker (idempotent), wait for it, create the platform's topics and the
        ACLs; returns its pid."""
        self.home.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.home.parent / ".kafka-secure.lock"):
            pid = self.running_pid()
            if pid is None:
                for port in (self.sasl_port, self.mtls_port, self.controller_port):
                    if port_in_use(port):
                        raise LocalstackError(
                            f"cannot start the secured broker: port {port} on {HOST} is in use "
                            "(move it with KAFKA_SECURE_PORT / KAFKA_MTLS_PORT / "
                            "KAFKA_SECURE_CONTROLLER_PORT)"
                        )
                started = time.monotonic()
                libs = provision_kafka()
                properties, log4j = self._prepare(libs)
                heap = shlex.split(os.environ.get("KAFKA_SECURE_HEAP_OPTS") or DEFAULT_HEAP)
                java, *rest = _java_base(libs, log4j)
                cmd = [java, *heap, "-XX:+ExitOnOutOfMemoryError", *rest, "kafka.Kafka"]
                proc = _spawn([*cmd, str(properties)], self.out_path, cwd=self.home)
                pid = proc.pid
                write_private(self.pid_file, f"{pid}\n".encode())
                _say(f"started the secured Kafka (pid {pid}): SASL_SSL {self.sasl_bootstrap}, "
                     f"mTLS {self.mtls_bootstrap}, log {self.log_path}")  # fmt: skip
                _wait_until_ready(
                    self.ready, pid, "secured kafka", (self.log_path, self.out_path), timeout
                )
                _say(f"secured Kafka ready in {time.monotonic() - started:.1f}s")
            try:
                # On a thread of its own: the caller may have an event loop (a test session's).
                with ThreadPoolExecutor(max_workers=1) as pool:
                    pool.submit(asyncio.run, self._provision_access()).result()
            except Exception as exc:
                _print_log_tails([self.log_path])
                raise LocalstackError(f"creating topics and ACLs failed: {exc!r}") from exc
            return pid

    async def _provision_access(self) -> None:
        from shared.bus.kafka import KafkaBus

        bus = KafkaBus(
            self.mtls_bootstrap, "itsm-localstack-admin", security=self._aiokafka_admin()
        )
        await bus.ensure_topics(platform_topics(TOPIC_PARTITIONS))
        await create_acls(self.admin_kwargs(), acl_bindings())

    def _aiokafka_admin(self) -> dict[str, Any]:
        kwargs = self.admin_kwargs()
        del kwargs["bootstrap_servers"]
        return kwargs

    async def acls_of(self, principal: str) -> list[AclBinding]:
        return await describe_principal_acls(self.admin_kwargs(), f"User:{principal}")

    def down(self, *, purge: bool = False, timeout: float = STOP_TIMEOUT) -> bool:
        """Stop the broker (SIGTERM, SIGKILL after `timeout`); True if it was running. `purge`
        deletes its data, CA and passwords too (the next `up` makes new ones)."""
        pid = self.running_pid()
        if pid is not None:
            _say(f"stopping the secured Kafka (pid {pid}) ...")
            _terminate_pid(pid, timeout)
            _forget_child(pid)
        self.pid_file.unlink(missing_ok=True)
        if purge and self.home.exists():
            _rmtree(self.home)
        return pid is not None


def _cluster_id() -> str:
    from devtools.localstack.kafka import _kafka_cluster_id

    return _kafka_cluster_id()


def _run_redacted(cmd: Sequence[str], log_path: Path, secrets_: Sequence[str]) -> None:
    """Run a build step whose arguments hold secrets; the log shows them as `***`."""

    def redact(text: str) -> str:
        for secret in secrets_:
            text = text.replace(secret, "***")
        return text

    result = subprocess.run(
        list(cmd), cwd=log_path.parent, stdin=subprocess.DEVNULL, capture_output=True, text=True
    )
    # The tool prints the SCRAM records it stores (salts, stored and server keys): kept only
    # when it failed, to see why.
    output = "" if result.returncode == 0 else result.stdout + result.stderr
    text = f"$ {shlex.join(cmd)}\nexit {result.returncode}\n{output}"
    write_private(log_path, redact(text).encode())
    if result.returncode != 0:
        _print_log_tails([log_path])
        raise LocalstackError(f"formatting the secured broker's storage failed ({log_path})")


def iter_env(env: dict[str, str], export: bool) -> Iterator[str]:
    prefix = "export " if export else ""
    for key, value in env.items():
        yield f"{prefix}{key}={shlex.quote(value)}"
