"""Every service API built in-process on the in-memory adapters, the operations of their OpenAPI
documents, and the tokens the security tests send (good ones, and each kind of bad one).

Shared by the authorization, object-level and fuzzing tests, so they all see the same apps and
enumerate the same operations."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import jwt
from fastapi import FastAPI
from pydantic import SecretStr

from services.changes.main import ChangesSettings
from services.changes.main import create_app as changes_app
from services.incidents.main import IncidentsSettings
from services.incidents.main import create_app as incidents_app
from services.notify.main import NotifySettings
from services.notify.main import create_app as notify_app
from services.sla.main import SlaApiSettings
from services.sla.main import create_app as sla_app
from shared.auth.dependencies import current_user
from shared.auth.principal import Role
from shared.auth.tokens import mint_dev_token
from shared.http.openapi import api_routes
from shared.runtime import in_memory
from tests.support.apps import asgi_client

ISSUER = "itsm-dev"
AUDIENCE = "itsm"
SERVICES = ("incidents", "changes", "sla", "notify")
ROLES = tuple(Role)
# Infrastructure routes every service serves without a token (probes and the scrape; /metrics,
# /openapi.json and /docs are not in the OpenAPI document, but are listed for completeness).
INFRASTRUCTURE = frozenset({"/livez", "/readyz", "/metrics", "/openapi.json", "/docs"})


@dataclass(frozen=True)
class Operation:
    service: str
    method: str  # upper case
    path: str  # the OpenAPI path template
    spec: dict[str, Any]

    @property
    def key(self) -> tuple[str, str]:
        return (self.method, self.path)

    @property
    def label(self) -> str:
        return f"{self.service} {self.method} {self.path}"

    @property
    def path_parameters(self) -> list[dict[str, Any]]:
        return [p for p in self.spec.get("parameters", []) if p["in"] == "path"]

    @property
    def by_id(self) -> bool:
        return bool(self.path_parameters)


def settings_for(service: str, signing_key: str) -> Any:
    common: dict[str, Any] = {
        "auth_mode": "dev",
        "dev_signing_key": SecretStr(signing_key),
        "log_json": False,
        "relay_poll_interval": 0.2,
        "topic_partitions": 3,
        # These tests send hundreds of requests a second as one client; the rate limits have
        # their own tests (test_rate_limits.py), which turn them on.
        "api_rate_per_second": 0,
        "intake_rate_per_second": 0,
    }
    if service == "incidents":
        return IncidentsSettings(**common, auto_close_interval_seconds=3600)
    if service == "changes":
        return ChangesSettings(**common)
    if service == "sla":
        # A short heartbeat: a fuzzed stream request sees its first bytes soon.
        return SlaApiSettings(**common, stream_heartbeat_seconds=0.05)
    if service == "notify":
        return NotifySettings(
            **common, ack_link_key=SecretStr("k" * 32), public_base_url="https://itsm.test"
        )
    raise ValueError(service)


FACTORIES: dict[str, Callable[..., FastAPI]] = {
    "incidents": incidents_app,
    "changes": changes_app,
    "sla": sla_app,
    "notify": notify_app,
}


def build_app(service: str, signing_key: str) -> FastAPI:
    """A fresh app of `service` on its own in-memory bus and store (lifespan not started)."""
    settings = settings_for(service, signing_key)
    return FACTORIES[service](settings, in_memory(settings))


def operations(service: str, app: FastAPI) -> list[Operation]:
    """Every operation of the app's OpenAPI document but the infrastructure routes."""
    document = app.openapi()
    found = []
    for path, item in document["paths"].items():
        if path in INFRASTRUCTURE:
            continue
        for method, spec in item.items():
            if method in {"get", "put", "post", "patch", "delete"}:
                found.append(Operation(service, method.upper(), path, spec))
    return found


def route_of(app: FastAPI, operation: Operation) -> Any:
    for route in api_routes(app):
        if route.path_format == operation.path and operation.method in route.methods:
            return route
    raise LookupError(operation.label)


def _dependency_calls(dependant: Any) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _dependency_calls(sub)


def declared_roles(app: FastAPI, operation: Operation) -> frozenset[Role] | None:
    """The roles the route admits, read from the `require_roles(...)` checks in its dependency
    tree (every one must pass, so their intersection). None: the route authenticates no one."""
    calls = list(_dependency_calls(route_of(app, operation).dependant))
    if current_user not in calls:
        return None
    admitted = frozenset(ROLES)
    for call in calls:
        if getattr(call, "__qualname__", "") == "require_roles.<locals>.check":
            closure = dict(zip(call.__code__.co_freevars, call.__closure__ or (), strict=True))
            admitted &= closure["allowed"].cell_contents
    return admitted


def filled_path(operation: Operation, values: dict[str, str] | None = None) -> str:
    """The path with each parameter set to `values[name]`, else a value its schema accepts."""
    path = operation.path
    for parameter in operation.path_parameters:
        name = parameter["name"]
        value = (values or {}).get(name)
        if value is None:
            schema = parameter.get("schema", {})
            if "enum" in schema:
                value = str(schema["enum"][0])
            elif schema.get("type") == "integer":
                value = "1"
            else:
                value = "no-such-object"
        path = path.replace("{" + name + "}", value)
    return path


class Tokens:
    """Bearer tokens: valid ones for any subject and roles, and every kind of invalid one."""

    def __init__(self, signing_key: str) -> None:
        self.key = signing_key

    def mint(self, subject: str, *roles: str, **claims: Any) -> str:
        return mint_dev_token(
            self.key, subject=subject, roles=roles, issuer=ISSUER, audience=AUDIENCE, **claims
        )

    def with_claims(self, **claims: Any) -> str:
        """A validly signed token for the platform with these claims (any roles, even unknown
        ones), valid for ten minutes."""
        now = int(time.time())
        base = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 600}
        return jwt.encode({**base, **claims}, self.key, algorithm="HS256")

    def headers(self, subject: str, *roles: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.mint(subject, *roles)}"}

    def invalid(self) -> dict[str, dict[str, str]]:
        """Authorization headers that must all be refused with 401, by what is wrong with them.
        Each would otherwise be an admin's token."""
        roles = [r.value for r in ROLES]
        now = time.time()
        other_key = secrets.token_urlsafe(48)
        expired = mint_dev_token(
            self.key, subject="mallory", roles=roles, issuer=ISSUER, audience=AUDIENCE,
            ttl_seconds=600, now=now - 7200,
        )  # fmt: skip
        wrong_key = mint_dev_token(
            other_key, subject="mallory", roles=roles, issuer=ISSUER, audience=AUDIENCE
        )
        wrong_issuer = mint_dev_token(
            self.key, subject="mallory", roles=roles, issuer="https://evil.example",
            audience=AUDIENCE,
        )  # fmt: skip
        wrong_audience = mint_dev_token(
            self.key, subject="mallory", roles=roles, issuer=ISSUER, audience="another-api"
        )
        claims = {"sub": "mallory", "roles": roles, "iss": ISSUER, "aud": AUDIENCE,
                  "iat": int(now), "exp": int(now) + 600}  # fmt: skip
        unsigned = jwt.encode(claims, None, algorithm="none")
        no_expiry = jwt.encode(
            {k: v for k, v in claims.items() if k != "exp"}, self.key, algorithm="HS256"
        )
        bearer = {
            "expired": expired,
            "wrong-key": wrong_key,
            "wrong-issuer": wrong_issuer,
            "wrong-audience": wrong_audience,
            "alg-none": unsigned,
            "no-expiry": no_expiry,
            "garbage": "not-a-jwt",
        }
        return {
            "missing": {},
            "basic-scheme": {"Authorization": "Basic YWRtaW46YWRtaW4="},
            **{name: {"Authorization": f"Bearer {token}"} for name, token in bearer.items()},
        }


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


async def request(
    app: FastAPI, method: str, path: str, headers: dict[str, str] | None = None,
    body: Any = None,
) -> Answer:  # fmt: skip
    """One request straight to the ASGI app (its lifespan must be running). Unlike an HTTP
    client, it also returns for a server-sent event stream, which never ends: the head and the
    first chunk of the body are the answer, then the stream is cancelled."""
    raw = b"" if body is None else json.dumps(body).encode()
    sent = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    if body is not None:
        sent.append((b"content-type", b"application/json"))
    path_only, _, query = path.partition("?")
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path_only, "raw_path": path_only.encode(),
        "query_string": query.encode(), "root_path": "", "headers": sent,
        "client": ("127.0.0.1", 50000), "server": ("test", 80),
    }  # fmt: skip
    state: dict[str, Any] = {"status": None, "headers": {}, "body": b""}
    done = asyncio.Event()
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            state["status"] = message["status"]
            state["headers"] = {k.decode(): v.decode() for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            state["body"] += message.get("body", b"")
            streaming = state["headers"].get("content-type", "").startswith("text/event-stream")
            if not message.get("more_body", False) or (streaming and state["body"]):
                done.set()

    task = asyncio.create_task(app(scope, receive, send))
    answered = asyncio.create_task(done.wait())
    await asyncio.wait({task, answered}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    answered.cancel()
    if state["headers"].get("content-type", "").startswith("text/event-stream"):
        task.cancel()  # the stream would never end
        with contextlib.suppress(asyncio.CancelledError):
            await task
    else:
        await asyncio.wait_for(task, 10)  # an exception the app raised surfaces here
    assert state["status"] is not None, f"{method} {path}: no answer within 10 s"
    return Answer(state["status"], state["headers"], state["body"])


def admin(signing_key: str) -> dict[str, str]:
    """Headers of a caller holding every role."""
    return Tokens(signing_key).headers("root", *(role.value for role in Role))


@contextlib.asynccontextmanager
async def running_apps(signing_key: str) -> AsyncIterator[dict[str, FastAPI]]:
    """Every service's app, started (lifespan run) in-process, by service name."""
    async with contextlib.AsyncExitStack() as stack:
        running = {}
        for name in SERVICES:
            app = build_app(name, signing_key)
            await stack.enter_async_context(asgi_client(app))
            running[name] = app
        yield running
