"""The platform on a secured broker: SASL/SCRAM-SHA-512 over TLS, mutual TLS and ACLs.

One secured broker per session (devtools/localstack/secure.py: its own JVM, CA, SCRAM users and
ACLs, on free loopback ports in pytest's tmp dir; the shared plaintext broker is not touched).
The incidents service runs on it as principal `incidents` (its
settings are what `python -m devtools.localstack secure env incidents` prints): an incident
created over HTTP is published by its outbox relay over SASL_SSL and read by another principal's
SASL_SSL consumer. Then the whole platform runs on it, each service as its own principal, the SLA
worker (Faust) included. Then what must be refused is: a wrong password, an unknown user,
plaintext, SASL without TLS, mTLS without a client certificate or with one from another CA, and
every write or group a principal's ACLs do not grant.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    TopicAuthorizationFailedError,
)
from pydantic import SecretStr

from devtools.localstack import free_port
from devtools.localstack.certs import Authority, write_private
from devtools.localstack.secure import SecureBroker, acl_bindings, principals
from services.changes.main import ChangesSettings
from services.changes.main import create_app as create_changes
from services.incidents.main import IncidentsSettings, create_app
from services.incidents.main import create_app as create_incidents
from services.notify.main import NotifySettings
from services.notify.main import create_app as create_notify
from services.sla.main import SlaApiSettings
from services.sla.main import create_app as create_sla_api
from shared.bus.kafka import KafkaBus
from shared.bus.security import kafka_client_kwargs, kafka_security
from shared.bus.topics import KAFKA_ACCESS, kafka_access
from shared.contracts import Topic
from shared.contracts.codec import KafkaRecord, decode
from shared.settings import ServiceSettings
from tests.support.apps import http_server
from tests.support.kafka import TopicTail
from tests.support.polling import eventually
from tests.support.sla_workers import ServiceProcess, run_id

pytestmark = pytest.mark.infra
Auth = Callable[..., dict[str, str]]
FAIL_FAST = {"request_timeout_ms": 5_000, "retry_backoff_ms": 100}


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    """A secured broker for this session, on free ports; stopped and deleted afterwards."""
    home = tmp_path_factory.mktemp("kafka-secure")
    ports: set[int] = set()
    while len(ports) < 3:
        ports.add(free_port())
    secured = SecureBroker(home, *sorted(ports))
    try:
        secured.up(timeout=120)
        yield secured
    finally:
        secured.down(purge=True)


def settings_for(broker: SecureBroker, principal: str, *, mtls: bool = False) -> ServiceSettings:
    """The platform settings `secure env <principal>` prints (read as the services read them)."""
    env = broker.env(principal, mtls=mtls)
    return ServiceSettings(**{key.removeprefix("ITSM_").lower(): v for key, v in env.items()})


@asynccontextmanager
async def secured_tail(
    broker: SecureBroker, principal: str, topic: str
) -> AsyncIterator[TopicTail]:
    """Every partition of `topic` from its current end, read over SASL_SSL as `principal`
    (assigned, no consumer group: Read on the topic is all it needs)."""
    settings = settings_for(broker, principal)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        **kafka_client_kwargs(settings),
    )
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()  # the topics its ACLs let it see
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        assert partitions, f"{principal} sees no partitions of {topic}"
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for tp in partitions:
            await consumer.position(tp)
        yield TopicTail(consumer)
    finally:
        await consumer.stop()


def incidents_on(broker: SecureBroker, signing_key: str, mongo_url: str, database: str) -> Any:
    env = broker.env("incidents")
    assert set(env) >= {"ITSM_KAFKA_SASL_PASSWORD_FILE", "ITSM_KAFKA_SSL_CAFILE"}
    assert "ITSM_KAFKA_SASL_PASSWORD" not in env  # the password only ever in its file
    settings = IncidentsSettings(
        **{key.removeprefix("ITSM_").lower(): value for key, value in env.items()},
        mongo_url=mongo_url,
        mongo_database=database,
        auth_mode="dev",
        dev_signing_key=SecretStr(signing_key),
        relay_poll_interval=0.5,
        log_json=False,
    )
    assert settings.kafka_security_protocol == "SASL_SSL"
    return create_app(settings)


# ----------------------------------------------------------------------------- the platform


async def test_incident_event_travels_over_sasl_ssl_between_two_principals(
    broker: SecureBroker, signing_key: str, mongo_url: str, mongo_db: Any, auth: Auth
) -> None:
    app = incidents_on(broker, signing_key, mongo_url, mongo_db.name)
    async with (
        http_server(app) as client,
        secured_tail(broker, "notify", Topic.INCIDENTS) as topic,
    ):
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text  # Kafka answers over SASL_SSL
        response = await client.post(
            "/api/v1/incidents",
            json={"title": "Core switch down", "impact": 1, "urgency": 1},
            headers=auth("alice", "requester"),
        )
        assert response.status_code == 201, response.text
        incident = response.json()
        key = incident["id"].encode()
        records = await topic.collect(lambda rs: any(r.key == key for r in rs), what="the event")
    record = next(r for r in records if r.key == key)
    envelope = decode(KafkaRecord(record.key, record.value, tuple(record.headers)))
    assert envelope.type == "itsm.incident.created.v1"
    assert envelope.data["number"] == incident["number"]


def service_settings(
    settings_class: type[ServiceSettings], broker: SecureBroker, principal: str, **extra: Any
) -> Any:
    """A service's settings as its pod gets them: its principal's Kafka settings, dev tokens."""
    env = broker.env(principal)
    return settings_class(
        **{key.removeprefix("ITSM_").lower(): value for key, value in env.items()},
        auth_mode="dev",
        relay_poll_interval=0.5,
        log_json=False,
        **extra,
    )


async def test_the_platform_runs_on_sasl_ssl_each_service_as_its_own_principal(
    broker: SecureBroker, signing_key: str, mongo_url: str, mongo_db: Any, auth: Auth,
    tmp_path: Path,
) -> None:  # fmt: skip
    """Every service on the secured broker, each as its own principal: incidents, changes, the
    SLA API and notify (in-process servers) and the SLA worker (Faust, a subprocess, with its
    consumer group and internal topics under its prefix). An incident's event reaches the SLA
    worker, whose SLA fact reaches the SLA API's read model: three principals, two consumer
    groups and Faust's own topics, all over SASL_SSL under least-privilege ACLs."""
    app_id = f"itsm-sla-t{run_id()}"
    assert app_id.startswith(kafka_access("sla-worker").group_prefix)
    env = {
        **os.environ,
        **broker.env("sla-worker"),
        "ITSM_SLA_APP_ID": app_id,
        "ITSM_SLA_TOPIC_PARTITIONS": "3",
        "ITSM_SLA_AUTO_OFFSET_RESET": "latest",
        "ITSM_SLA_DATA_DIR": str(tmp_path / "sla"),
        "ITSM_SLA_SESSION_TIMEOUT": "6",
        "ITSM_LOG_JSON": "true",
    }
    worker = ServiceProcess("sla-worker", env, tmp_path / "sla-worker.log")
    await worker.start()
    common = {
        "mongo_url": mongo_url,
        "mongo_database": mongo_db.name,
        "dev_signing_key": SecretStr(signing_key),
        "topic_partitions": 3,
    }
    apps = {
        "incidents": create_incidents(service_settings(IncidentsSettings, broker, "incidents", **common)),
        "changes": create_changes(service_settings(ChangesSettings, broker, "changes", **common)),
        "sla-api": create_sla_api(service_settings(SlaApiSettings, broker, "sla-api", **common)),
        "notify": create_notify(
            service_settings(
                NotifySettings, broker, "notify", **common, ack_link_key=SecretStr("k" * 32)
            )
        ),
    }  # fmt: skip
    try:

        async def rearmed() -> bool:
            worker.check_alive()
            return bool(worker.events("sla.wakeups.rearmed"))

        await eventually(rearmed, timeout=90, interval=0.2, what="the worker's assignment")
        async with AsyncExitStack() as running:
            clients = {name: await running.enter_async_context(http_server(app)) for name, app in apps.items()}  # fmt: skip
            for name, client in clients.items():
                ready = await client.get("/readyz")
                assert ready.status_code == 200, f"{name}: {ready.text}"
            # ann's L1 group reaches the SLA API over the secured broker (its read ACL on
            # the incident events): she works the unassigned ticket's SLA.
            group = {"name": "service-desk", "tier": "L1", "members": ["ann"]}
            response = await clients["incidents"].post(
                "/api/v1/groups", json=group, headers=auth("root", "admin")
            )
            assert response.status_code == 201, response.text
            response = await clients["incidents"].post(
                "/api/v1/incidents",
                json={"title": "Mail relay rejects", "impact": 2, "urgency": 2},
                headers=auth("bob", "requester"),
            )
            assert response.status_code == 201, response.text
            ticket = response.json()["id"]

            async def timers() -> int:
                worker.check_alive()
                answer = await clients["sla-api"].get(
                    f"/api/v1/sla/tickets/{ticket}", headers=auth("ann", "agent")
                )
                return answer.status_code

            await eventually(
                timers, until=lambda status: status == 200, timeout=60, what="the SLA timers"
            )
    finally:
        await worker.stop()
    assert "AuthorizationFailed" not in worker.tail(200_000)


async def test_mutual_tls_is_a_principal_too(broker: SecureBroker) -> None:
    """The incidents service's client certificate on the mTLS listener: the platform's bus
    publishes and reads its own topic, and is refused another service's topic."""
    settings = settings_for(broker, "incidents", mtls=True)
    assert settings.kafka_security_protocol == "SSL" and settings.kafka_ssl_certfile
    bus = KafkaBus(
        settings.kafka_bootstrap, "tests-mtls", security=kafka_client_kwargs(settings),
        start_timeout=15,
    )  # fmt: skip
    await bus.start()
    try:
        async with secured_tail(broker, "incidents", Topic.INCIDENTS) as topic:
            key = f"mtls-{run_id()}"
            await bus.publish_record(Topic.INCIDENTS, KafkaRecord(key.encode(), b"{}", ()))
            await topic.collect(lambda rs: any(r.key == key.encode() for r in rs), what="it")
        with pytest.raises(TopicAuthorizationFailedError):
            await bus.publish_record(Topic.CHANGES, KafkaRecord(b"k", b"{}", ()))
    finally:
        await bus.stop()


# ----------------------------------------------------------------------------- refused


async def _connect(broker_address: str, **security: Any) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker_address, **FAIL_FAST, **security)
    try:
        await producer.start()
    finally:
        await producer.stop()


def _sasl(broker: SecureBroker, user: str, password: str, **extra: Any) -> dict[str, Any]:
    return {
        "security_protocol": "SASL_SSL",
        "ssl_context": broker.tls_context(),
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": user,
        "sasl_plain_password": password,
        **extra,
    }


async def test_the_right_password_gets_in(broker: SecureBroker) -> None:
    """The control for the refusals below: the same call with the real password works."""
    await _connect(
        broker.sasl_bootstrap, **_sasl(broker, "incidents", broker.password("incidents"))
    )


@pytest.mark.parametrize(
    "case",
    ["wrong password", "another user's password", "unknown user", "SCRAM-SHA-256"],
)
async def test_sasl_with_bad_credentials_is_refused(broker: SecureBroker, case: str) -> None:
    user, password, extra = "incidents", broker.password("incidents"), {}
    if case == "wrong password":
        password = password[:-1] + ("x" if password[-1] != "x" else "y")
    elif case == "another user's password":
        password = broker.password("notify")
    elif case == "unknown user":
        user = "mallory"
    else:
        extra = {"sasl_mechanism": "SCRAM-SHA-256"}  # not enabled on the listener
    with pytest.raises(KafkaError) as refused:
        await _connect(broker.sasl_bootstrap, **_sasl(broker, user, password, **extra))
    assert broker.password("incidents") not in str(refused.value)


async def test_plaintext_and_sasl_without_tls_are_refused(broker: SecureBroker) -> None:
    with pytest.raises(KafkaConnectionError):
        await _connect(broker.sasl_bootstrap)  # PLAINTEXT to the SASL_SSL listener
    with pytest.raises(KafkaConnectionError):
        await _connect(broker.mtls_bootstrap)  # PLAINTEXT to the mTLS listener
    with pytest.raises(KafkaError):
        await _connect(
            broker.sasl_bootstrap,
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_plain_username="incidents",
            sasl_plain_password=broker.password("incidents"),
        )


async def test_mtls_without_a_trusted_client_certificate_is_refused(
    broker: SecureBroker, tmp_path: Path
) -> None:
    with pytest.raises(KafkaConnectionError):  # TLS, but no client certificate
        await _connect(
            broker.mtls_bootstrap, security_protocol="SSL", ssl_context=broker.tls_context()
        )
    stranger = Authority.create("not-the-platform-ca")  # a certificate named like a principal
    cert, key = stranger.issue("admin", server=False)
    write_private(tmp_path / "admin.crt", cert)
    write_private(tmp_path / "admin.key", key)
    context = broker.tls_context()
    context.load_cert_chain(tmp_path / "admin.crt", tmp_path / "admin.key")
    with pytest.raises(KafkaConnectionError):
        await _connect(broker.mtls_bootstrap, security_protocol="SSL", ssl_context=context)


async def test_the_broker_certificate_is_verified(broker: SecureBroker) -> None:
    """A client that does not trust the local CA refuses the broker (no blind TLS)."""
    with pytest.raises(KafkaConnectionError):
        await _connect(
            broker.sasl_bootstrap,
            **_sasl(broker, "incidents", broker.password("incidents"))
            | {"ssl_context": ssl.create_default_context()},
        )


# ----------------------------------------------------------------------------- ACLs


async def test_the_broker_holds_exactly_the_acls_of_the_access_table(broker: SecureBroker) -> None:
    expected = sorted(acl_bindings())
    for principal in principals():
        held = await broker.acls_of(principal)
        assert held == [b for b in expected if b.principal == f"User:{principal}"], principal


@pytest.mark.parametrize("access", KAFKA_ACCESS, ids=lambda a: a.principal)
async def test_a_principal_may_write_only_the_topics_it_owns(
    broker: SecureBroker, access: Any
) -> None:
    settings = settings_for(broker, access.principal)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", **FAIL_FAST,
        **kafka_client_kwargs(settings),
    )  # fmt: skip
    await producer.start()
    try:
        for topic in Topic:
            if topic in access.writes:
                await producer.send_and_wait(topic, b"{}", key=b"acl-probe")
            else:
                with pytest.raises(TopicAuthorizationFailedError):
                    await producer.send_and_wait(topic, b"{}", key=b"acl-probe")
    finally:
        await producer.stop()


async def test_a_principal_joins_only_its_own_consumer_groups(broker: SecureBroker) -> None:
    settings = settings_for(broker, "notify")
    groups = {"own": f"notify-{run_id()}", "foreign": "incidents-alert-intake"}
    consumers = {
        name: AIOKafkaConsumer(
            Topic.INCIDENTS, bootstrap_servers=settings.kafka_bootstrap, group_id=group,
            **FAIL_FAST, **kafka_client_kwargs(settings),
        )
        for name, group in groups.items()
    }  # fmt: skip
    try:
        own = consumers["own"]
        await own.start()

        async def assigned() -> set[TopicPartition]:
            await own.getmany(timeout_ms=100)
            return own.assignment()

        await eventually(assigned, timeout=30, what="the own group's assignment")
        foreign = consumers["foreign"]
        with pytest.raises(GroupAuthorizationFailedError):  # at start, or at the first fetch
            await foreign.start()
            await eventually(lambda: foreign.getmany(timeout_ms=100), timeout=30, what="refusal")
    finally:
        for consumer in consumers.values():
            await consumer.stop()


async def test_no_secret_in_the_resolved_settings(broker: SecureBroker) -> None:
    settings = settings_for(broker, "incidents")
    password = broker.password("incidents")
    assert password not in repr(settings) and password not in repr(kafka_security(settings))
    assert oct(broker.password_file("incidents").stat().st_mode & 0o777) == "0o600"
    assert oct(broker.keyfile("incidents").stat().st_mode & 0o777) == "0o600"
    assert oct(broker.home.stat().st_mode & 0o777) == "0o700"
    assert password not in broker.log_path.read_text(errors="replace")
    assert password not in (broker.home / "format.log").read_text()
