"""Every outbound call has an explicit, bounded timeout.

- **Structurally**: every construction of an outbound client in the platform's code (services,
  shared, launcher, devtools) -- HTTP (httpx, aiohttp, urllib, PyJWT's JWKS client), SMTP
  (aiosmtplib), MongoDB (PyMongo, `create_client`), Kafka (aiokafka producer, consumer, admin;
  the Faust app) and raw sockets -- passes its timeout arguments by name. A new client without
  them fails here (the way tests/contract/test_kafka_access.py holds the security arguments).
- **Behaviourally**: the notification channels against a loopback server that accepts the
  connection and never answers: each delivery (webhook, Slack, Teams, and e-mail over SMTP) ends
  as a timeout, recorded as a transient attempt to retry later, not as a hang (the test's own
  timeout fails a hang) and not as a failure for good.
"""

from __future__ import annotations

import ast
import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.notify import admin, handlers
from services.notify.api.schemas import PolicyCreate
from services.notify.channels import (
    ChannelTimeouts,
    EmailChannel,
    SlackChannel,
    SmtpConfig,
    SmtpSecurity,
    TeamsChannel,
    Templates,
    WebhookChannel,
    build_http_client,
)
from services.notify.documents import Person, WebhookEndpoint
from services.notify.domain.breaker import BreakerSettings
from services.notify.domain.delivery import RetryPolicy
from services.notify.handlers import Notify
from services.notify.main import NotifySettings
from services.notify.routing import Links
from services.notify.sender import DeliveryRules, DeliveryWorker
from shared.bus.limits import REQUEST_TIMEOUT_MS, FetchLimits
from shared.contracts.codec import KafkaRecord
from shared.store.memory import InMemoryDatabase
from tests.support.notify import breach, ladder

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("services", "shared", "launcher", "devtools")

# client (the called name) -> the keyword arguments that bound it; any one of a set suffices
# where the library has one knob, all of a tuple are required where it has several.
KAFKA = {"request_timeout_ms"}
TIMEOUTS: dict[str, tuple[set[str], ...]] = {
    "AsyncClient": ({"timeout"},),  # httpx
    "Client": ({"timeout"},),  # httpx
    "ClientSession": ({"timeout"},),  # aiohttp
    "SMTP": ({"timeout"},),  # aiosmtplib
    "urlopen": ({"timeout"},),
    "create_connection": ({"timeout"},),  # socket
    "PyJWKClient": ({"timeout"},),
    "AsyncMongoClient": ({"serverSelectionTimeoutMS"}, {"connectTimeoutMS"}, {"socketTimeoutMS"}),
    "MongoClient": ({"serverSelectionTimeoutMS"}, {"connectTimeoutMS"}, {"socketTimeoutMS"}),
    "create_client": ({"timeout_ms"},),  # shared/store/mongo.py
    "AIOKafkaProducer": (KAFKA,),
    "AIOKafkaConsumer": (KAFKA,),
    "AIOKafkaAdminClient": (KAFKA,),
    "SlaApp": ({"broker_request_timeout"}, {"producer_request_timeout"}),  # the Faust app
}
# Which module a generic name must come from to count (an aiosmtpd `SMTP` server is no client).
QUALIFIED = {"Client": "httpx", "SMTP": "aiosmtplib", "ClientSession": "aiohttp"}
# A `**` spread that carries the Kafka bounds (shared/bus/limits.py: FetchLimits.consumer_kwargs,
# checked below to include the request timeout).
BOUNDED_SPREADS = {"consumer_kwargs"}


def _called_name(call: ast.Call) -> tuple[str | None, str | None]:
    """(name, qualifier): `httpx.AsyncClient(` -> ("AsyncClient", "httpx")."""
    func = call.func
    if isinstance(func, ast.Name):
        return func.id, None
    if isinstance(func, ast.Attribute):
        value = func.value
        return func.attr, value.id if isinstance(value, ast.Name) else None
    return None, None


def _in_process_transports(tree: ast.AST) -> set[str]:
    """Names bound to an `httpx.ASGITransport(...)`: a client on one calls the app in-process."""
    names = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and _called_name(node.value)[0] == "ASGITransport"
        ):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _keywords(call: ast.Call) -> set[str]:
    found = {k.arg for k in call.keywords if k.arg is not None}
    for spread in (k.value for k in call.keywords if k.arg is None):
        if isinstance(spread, ast.Call) and _called_name(spread)[0] in BOUNDED_SPREADS:
            found |= KAFKA
    return found


def outbound_clients() -> tuple[list[str], list[str]]:
    """(every client construction found, those without their timeout arguments)."""
    found, missing = [], []
    for top in SCANNED:
        for path in sorted((ROOT / top).glob("**/*.py")):
            tree = ast.parse(path.read_text(), str(path))
            in_process = _in_process_transports(tree)
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                name, qualifier = _called_name(node)
                if name not in TIMEOUTS:
                    continue
                if name in QUALIFIED and qualifier != QUALIFIED[name]:
                    continue
                where = f"{path.relative_to(ROOT)}:{node.lineno} {name}"
                transport = next((k.value for k in node.keywords if k.arg == "transport"), None)
                if isinstance(transport, ast.Name) and transport.id in in_process:
                    continue  # not outbound: an ASGI app in this process
                found.append(where)
                given = _keywords(node)
                if not all(required & given for required in TIMEOUTS[name]):
                    missing.append(where)
    return found, missing


def test_every_outbound_client_is_built_with_explicit_timeouts() -> None:
    found, missing = outbound_clients()
    assert not missing, missing
    kinds = {where.rsplit(" ", 1)[1] for where in found}
    # The scan sees every kind the platform uses: HTTP channels, SMTP, the JWKS fetch, MongoDB,
    # Kafka's three clients and the Faust app, the dev tools' readiness probes.
    assert kinds >= {
        "AsyncClient", "SMTP", "PyJWKClient", "AsyncMongoClient", "MongoClient",
        "create_client", "AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient",
        "SlaApp", "urlopen", "create_connection",
    }, kinds  # fmt: skip
    assert len(found) >= 20, found


def test_the_bounds_the_scan_trusts_are_bounded() -> None:
    """What the scan accepts in place of a literal: the consumers' spread includes a request
    timeout; the configured timeouts have upper bounds (no setting makes a call wait forever)."""
    assert FetchLimits().consumer_kwargs()["request_timeout_ms"] == REQUEST_TIMEOUT_MS
    assert 0 < REQUEST_TIMEOUT_MS <= 120_000
    fields = NotifySettings.model_fields
    for name in ("connect_timeout_seconds", "total_timeout_seconds"):
        bounds = {type(m).__name__: m for m in fields[name].metadata}
        assert "Le" in bounds and "Gt" in bounds, name
    with pytest.raises(ValueError, match="less than or equal"):
        NotifySettings(total_timeout_seconds=10_000)


# --- behaviour: a receiver that accepts and never answers -----------------------------------

T0 = datetime(2026, 3, 16, 10, 0, tzinfo=UTC)
IMPATIENT = ChannelTimeouts(connect=0.2, total=0.5)
CHANNELS = ("webhook", "slack", "teams", "email")


@asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """Accepts every connection and never says a word (no HTTP answer, no SMTP greeting)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        try:
            await reader.read()  # until the client gives up and closes
        finally:
            writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in held:
            writer.close()
        await server.wait_closed()


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.mark.timeout(30)  # a hang (no timeout on a channel) fails here, not in CI's global limit
async def test_a_receiver_that_never_answers_is_a_timed_out_attempt_to_retry() -> None:
    database = InMemoryDatabase()
    notify = Notify.on(database)
    clock = Clock(T0)
    dead: list[KafkaRecord] = []

    async def dead_letter(record: KafkaRecord) -> None:
        dead.append(record)

    async with silent_server() as port, build_http_client(IMPATIENT) as http:
        base = f"http://127.0.0.1:{port}"
        smtp = SmtpConfig(
            host="127.0.0.1", port=port, sender="ITSM <itsm@example.com>",
            security=SmtpSecurity.PLAIN, timeouts=IMPATIENT,
        )  # fmt: skip
        senders = {
            "webhook": WebhookChannel(http, IMPATIENT).send,
            "slack": SlackChannel(http, IMPATIENT).send,
            "teams": TeamsChannel(http, IMPATIENT).send,
            "email": EmailChannel(smtp).send,
        }
        rules = DeliveryRules(
            retry=RetryPolicy(max_attempts=3, base=timedelta(seconds=10), jitter=0.5),
            breaker=BreakerSettings(failure_threshold=10),
        )
        links = Links(
            "https://itsm.test", "/incidents/{ticket_id}", [b"k" * 32], timedelta(hours=1)
        )
        worker = DeliveryWorker(
            notify, senders, Templates(), links, rules, smtp_endpoint=f"127.0.0.1:{port}",
            dead_letter=dead_letter, clock=clock, rng=lambda: 0.0,
        )  # fmt: skip
        alice = Person(
            "alice", 1, email="alice@example.com",
            webhook=WebhookEndpoint(f"{base}/hooks/alice", "s" * 32),
            slack_url=f"{base}/services/T0/B0/secret", teams_url=f"{base}/webhookb2/secret",
        )  # fmt: skip
        await notify.people.add(alice, [])
        await notify.people.add(Person("lead", 1, email="lead@example.com"), [])
        policy = PolicyCreate.model_validate(ladder(channels=CHANNELS)).to_policy("ladder", 1)
        await admin.create_policy(notify, policy, by="admin", now=T0)
        await handlers.on_sla_event(notify, breach("INC1", T0), now=T0)

        assert await worker.run_once() == len(CHANNELS)

    found, _ = await notify.deliveries.of_ticket("INC1", recipient=None, skip=0, limit=100)
    assert sorted(d.notification.channel for d in found) == sorted(CHANNELS)
    for delivery in found:
        channel = delivery.notification.channel
        assert delivery.status == "retrying", (channel, delivery.status)
        [attempt] = delivery.attempts
        assert attempt.outcome == "transient", (channel, attempt)
        assert "timed out" in attempt.detail, (channel, attempt.detail)
        assert delivery.next_attempt_at is not None and delivery.next_attempt_at > T0, channel
    assert dead == []  # a timeout is not a failure for good
