"""Apache Kafka (KRaft, single node): jars from Maven Central, configs, storage, readiness probe."""

from __future__ import annotations

import base64
import os
import shlex
import socket
import struct
import subprocess
import time
import uuid
from pathlib import Path

from devtools.localstack.config import (
    DEFAULT_KAFKA_HEAP_OPTS,
    HOST,
    KAFKA,
    KAFKA_VERSION,
    LOG4J_VERSION,
    SCALA_VERSION,
    LocalstackError,
    cache_dir,
    component,
    kafka_controller_port,
    kafka_port,
    logs_dir,
    state_dir,
)
from devtools.localstack.files import _atomic_build, _is_complete, _rmtree
from devtools.localstack.logs import _say
from devtools.localstack.process import _run_logged, _spawn, _tool

# --------------------------------------------------------------------------------------------
# Provisioning
# --------------------------------------------------------------------------------------------

_KAFKA_ARTIFACTS = (
    ("org.apache.kafka", f"kafka_{SCALA_VERSION}", KAFKA_VERSION),
    ("org.apache.kafka", "kafka-server", KAFKA_VERSION),
    ("org.apache.kafka", "kafka-storage", KAFKA_VERSION),
    ("org.apache.kafka", "kafka-tools", KAFKA_VERSION),
    # Kafka 4.x depends on slf4j-api 1.7 but ships no binding: without this it logs nothing.
    ("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION),
)


def _kafka_pom() -> str:
    deps = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in _KAFKA_ARTIFACTS
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>itsm.localstack</groupId>
  <artifactId>kafka-dist</artifactId>
  <version>{KAFKA_VERSION}</version>
  <packaging>pom</packaging>
  <dependencies>
{deps}
  </dependencies>
</project>
"""


def kafka_home() -> Path:
    return cache_dir() / f"kafka-{KAFKA_VERSION}"


def kafka_libs_dir(provision: bool = True) -> Path:
    """Directory holding the Kafka jars (classpath `<dir>/*`); provisions it unless told not to."""
    return provision_kafka() if provision else kafka_home() / "libs"


def provision_kafka() -> Path:
    """Download the Kafka jars from Maven Central (once); returns the libs dir."""
    home = kafka_home()
    libs = home / "libs"
    if _is_complete(home):
        return libs
    mvn = _tool("mvn")

    def build(tmp: Path) -> None:
        _say(f"downloading Kafka {KAFKA_VERSION} jars from Maven Central into {home} ...")
        started = time.monotonic()
        (tmp / "pom.xml").write_text(_kafka_pom())
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(tmp / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp / 'libs'}",
        ]
        _run_logged(cmd, tmp / "mvn.log", cwd=tmp)
        jars = sorted(p.name for p in (tmp / "libs").glob("*.jar"))
        for _, artifact, version in _KAFKA_ARTIFACTS:
            if f"{artifact}-{version}.jar" not in jars:
                raise LocalstackError(f"maven did not produce {artifact}-{version}.jar in {tmp}")
        _say(f"Kafka jars ready ({len(jars)} jars, {time.monotonic() - started:.0f}s)")

    _atomic_build(home, build)
    return libs


# --------------------------------------------------------------------------------------------
# Readiness probe (minimal Kafka wire protocol, standard library only)
# --------------------------------------------------------------------------------------------


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        chunks.extend(chunk)
    return bytes(chunks)


def _kafka_string(value: str) -> bytes:
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


def _kafka_call(
    sock: socket.socket, api_key: int, api_version: int, correlation_id: int, body: bytes
) -> bytes:
    """Send one request with a v1 (non-flexible) header; return the response body."""
    header = struct.pack(">hhi", api_key, api_version, correlation_id)
    payload = header + _kafka_string("itsm-localstack") + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    response = _recv_exact(sock, size)
    (got,) = struct.unpack_from(">i", response, 0)
    if got != correlation_id:
        raise ConnectionError(f"unexpected correlation id {got} (sent {correlation_id})")
    return response[4:]


def _kafka_api_versions(sock: socket.socket) -> dict[int, tuple[int, int]]:
    """ApiVersions v0 (api_key 18): {api_key: (min_version, max_version)}; raises on error."""
    body = _kafka_call(sock, 18, 0, 1, b"")
    (error_code, count) = struct.unpack_from(">hi", body, 0)
    if error_code != 0:
        raise ConnectionError(f"ApiVersions error_code {error_code}")
    versions: dict[int, tuple[int, int]] = {}
    for index in range(max(count, 0)):
        key, low, high = struct.unpack_from(">hhh", body, 6 + 6 * index)
        versions[key] = (low, high)
    return versions


def _kafka_find_coordinator(sock: socket.socket, group: str) -> int:
    """FindCoordinator v1 (api_key 10) for a consumer group; returns its error_code.

    Asking for a coordinator makes the broker create and load __consumer_offsets, so a 0 here
    means consumer groups will work immediately.
    """
    body = _kafka_call(sock, 10, 1, 2, _kafka_string(group) + struct.pack(">b", 0))
    (_throttle, error_code) = struct.unpack_from(">ih", body, 0)
    return int(error_code)


def kafka_ready(port: int | None = None, host: str = HOST, timeout: float = 2.0) -> bool:
    """True if the broker answers ApiVersions and can serve a group coordinator."""
    port = kafka_port() if port is None else port
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            versions = _kafka_api_versions(sock)
            low, high = versions.get(10, (0, -1))
            if not low <= 1 <= high:  # cannot probe the coordinator this way; API answer suffices
                return True
            return _kafka_find_coordinator(sock, "itsm-localstack-probe") == 0
    except (OSError, ConnectionError, struct.error):
        return False


# --------------------------------------------------------------------------------------------
# Configuration, storage and command line of the shared broker
# --------------------------------------------------------------------------------------------


def _kafka_server_properties(data_dir: Path) -> str:
    port, ctrl = kafka_port(), kafka_controller_port()
    return f"""# generated by devtools/localstack/kafka.py -- rewritten on every `up`
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers={HOST}:{ctrl}
listeners=PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{ctrl}
advertised.listeners=PLAINTEXT://{HOST}:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data_dir}
num.partitions=3
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
"""


def _kafka_log4j2_properties(log_file: Path) -> str:
    return f"""# generated by devtools/localstack/kafka.py
status = warn
name = itsm-localstack-kafka
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = {log_file}
appender.file.filePattern = {log_file}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c{{1}})%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 10MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 2
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
logger.appinfo.name = org.apache.kafka.common.utils.AppInfoParser
logger.appinfo.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
"""


def _kafka_cluster_id() -> str:
    """Same format as `kafka-storage.sh random-uuid`: URL-safe base64 of 16 random bytes."""
    while True:
        raw = uuid.uuid4().bytes
        text = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        if not text.startswith("-") and any(raw):
            return text


def _java_base(libs: Path, log4j_config: Path) -> list[str]:
    return [
        _tool("java", "JAVA_HOME"),
        f"-Dlog4j2.configurationFile={log4j_config}",
        "-cp",
        f"{libs}/*",
    ]


def _prepare_kafka(libs: Path) -> tuple[Path, Path]:
    """Write configs and format the storage (first time only); returns (properties, log4j2)."""
    state, logs = state_dir(), logs_dir()
    comp = component(KAFKA)
    (data,) = comp.data_dirs
    logs.mkdir(parents=True, exist_ok=True)
    properties = state / "kafka-server.properties"
    properties.write_text(_kafka_server_properties(data))
    log4j = state / "kafka-log4j2.properties"
    log4j.write_text(_kafka_log4j2_properties(comp.log_path))
    meta = data / "meta.properties"
    if meta.is_file():
        return properties, log4j  # already formatted: reuse the data (listeners may change)
    if data.exists():
        _say(f"removing unformatted {data}")
        _rmtree(data)
    cluster_id = _kafka_cluster_id()
    _say(f"formatting Kafka storage in {data} (cluster id {cluster_id})")
    cmd = [
        *_java_base(libs, log4j),
        "kafka.tools.StorageTool",
        "format",
        "--standalone",
        "-t",
        cluster_id,
        "-c",
        str(properties),
    ]
    _run_logged(cmd, logs / "kafka-format.log", cwd=state)
    return properties, log4j


def _kafka_command(libs: Path, properties: Path, log4j: Path) -> list[str]:
    heap = shlex.split(os.environ.get("KAFKA_HEAP_OPTS") or DEFAULT_KAFKA_HEAP_OPTS)
    java, *rest = _java_base(libs, log4j)
    return [
        java,
        *heap,
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        *rest,
        "kafka.Kafka",
        str(properties),
    ]


def _spawn_kafka() -> subprocess.Popen[bytes]:
    """Provision (if needed), configure and start the shared broker; does not wait for it."""
    libs = provision_kafka()
    properties, log4j = _prepare_kafka(libs)
    cmd = _kafka_command(libs, properties, log4j)
    return _spawn(cmd, component(KAFKA).extra_logs[0], cwd=state_dir())
