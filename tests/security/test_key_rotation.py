"""Signing keys rotate without downtime: during a rotation a service holds the current key and
the previous one; what the previous key signed still verifies, and stops verifying once the
previous key is removed. Covered for each key the platform signs with:

- the dev/local JWT signing key (ITSM_DEV_SIGNING_KEY, ITSM_DEV_SIGNING_PREVIOUS_KEY), read
  from the environment by the service's own settings, against a running API;
- notify's acknowledgement-link key (ITSM_NOTIFY_ACK_LINK_KEY, …_PREVIOUS_KEY);
- a person's webhook secret (directory `webhook.secret` and `webhook.previous_secret`): the
  delivery is signed with both, so a receiver still holding the old secret keeps verifying
  until the previous secret is dropped from the directory entry; delivered over loopback to a
  real receiver that checks the signature.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from pydantic import SecretStr

from services.incidents.main import IncidentsSettings
from services.incidents.main import create_app as incidents_app
from services.notify.channels import (
    ChannelTimeouts,
    Kind,
    Message,
    Notice,
    SignatureRejected,
    Templates,
    WebhookChannel,
    verify_signature,
)
from services.notify.domain.acklinks import AckClaim, create_token
from services.notify.domain.model import Notification
from services.notify.main import create_app as notify_app
from services.notify.routing import route
from shared.auth.tokens import mint_dev_token
from shared.ids import uuid7
from shared.runtime import in_memory
from tests.security.services import Tokens, settings_for
from tests.support.apps import asgi_client, http_server

OLD, NEW = secrets.token_urlsafe(48), secrets.token_urlsafe(48)
INCIDENTS = "/api/v1/incidents"


def token(key: str, subject: str) -> dict[str, str]:
    minted = mint_dev_token(
        key, subject=subject, roles=["requester"], issuer="itsm-dev", audience="itsm"
    )
    return {"Authorization": f"Bearer {minted}"}


@asynccontextmanager
async def incidents_with_keys(
    monkeypatch: pytest.MonkeyPatch, current: str, previous: str | None
) -> AsyncIterator[httpx.AsyncClient]:
    """The incidents API configured from the environment, as a deployment configures it."""
    with monkeypatch.context() as env:
        env.setenv("ITSM_AUTH_MODE", "dev")
        env.setenv("ITSM_DEV_SIGNING_KEY", current)
        if previous is None:
            env.delenv("ITSM_DEV_SIGNING_PREVIOUS_KEY", raising=False)
        else:
            env.setenv("ITSM_DEV_SIGNING_PREVIOUS_KEY", previous)
        settings = IncidentsSettings(log_json=False, api_rate_per_second=0)
    async with asgi_client(incidents_app(settings, in_memory(settings))) as client:
        yield client


async def test_a_jwt_signed_with_the_previous_key_verifies_until_that_key_is_removed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = token(OLD, "alice")  # issued before the rotation
    async with incidents_with_keys(monkeypatch, OLD, None) as api:
        assert (await api.get(INCIDENTS, headers=before)).status_code == 200
    async with incidents_with_keys(monkeypatch, NEW, OLD) as api:  # rotating: both verify
        assert (await api.get(INCIDENTS, headers=before)).status_code == 200
        assert (await api.get(INCIDENTS, headers=token(NEW, "bob"))).status_code == 200
    async with incidents_with_keys(monkeypatch, NEW, None) as api:  # rotation over
        refused = await api.get(INCIDENTS, headers=before)
        assert refused.status_code == 401
        assert "Signature verification failed" in refused.json()["detail"]
        assert (await api.get(INCIDENTS, headers=token(NEW, "bob"))).status_code == 200


async def test_a_jwt_signed_with_neither_key_is_refused_during_a_rotation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with incidents_with_keys(monkeypatch, NEW, OLD) as api:
        forged = token(secrets.token_urlsafe(48), "mallory")
        assert (await api.get(INCIDENTS, headers=forged)).status_code == 401


def ack_token(key: str) -> str:
    claim = AckClaim(
        uuid7(), "no-such-escalation", "alice", datetime.now(UTC).replace(microsecond=0)
        + timedelta(hours=1),
    )  # fmt: skip
    return create_token(claim, key.encode())


@asynccontextmanager
async def notify_with_link_keys(
    signing_key: str, current: str, previous: str | None
) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_for("notify", signing_key).model_copy(
        update={
            "ack_link_key": SecretStr(current),
            "ack_link_previous_key": SecretStr(previous) if previous else None,
        }
    )
    async with asgi_client(notify_app(settings, in_memory(settings))) as client:
        yield client


async def test_an_ack_link_signed_with_the_previous_key_verifies_until_that_key_is_removed(
    signing_key: str,
) -> None:
    """The confirmation page (GET, which acknowledges nothing): an authentic link for an unknown
    escalation is 404 (its signature passed), a link with a bad signature is 403."""
    link = f"/api/v1/notify/ack/{ack_token(OLD)}"
    async with notify_with_link_keys(signing_key, NEW, OLD) as notify:
        passed = await notify.get(link)
        assert passed.status_code == 404, passed.text
    async with notify_with_link_keys(signing_key, NEW, None) as notify:
        refused = await notify.get(link)
        assert refused.status_code == 403 and refused.json()["reason"] == "bad_signature"
        fresh = await notify.get(f"/api/v1/notify/ack/{ack_token(NEW)}")
        assert fresh.status_code == 404


# --- webhook secrets ------------------------------------------------------------------------


class Receiver:
    """A webhook receiver holding one secret; it answers 204 or 401 as the signature checks."""

    def __init__(self) -> None:
        self.secret = ""
        self.app = FastAPI()
        self.app.post("/hook")(self.receive)

    async def receive(self, request: Request) -> Response:
        body = await request.body()
        try:
            verify_signature(self.secret, dict(request.headers), body, datetime.now(UTC))
        except SignatureRejected:
            return Response(status_code=401)
        return Response(status_code=204)


async def put_webhook(
    notify: httpx.AsyncClient, boss: dict[str, str], hook: dict[str, Any]
) -> None:
    current = await notify.get("/api/v1/notify/people/alice", headers=boss)
    headers = {**boss, "If-Match": current.headers["etag"]} if current.status_code == 200 else boss
    body = {"name": "Alice", "webhook": hook}
    answer = await notify.put("/api/v1/notify/people/alice", json=body, headers=headers)
    assert answer.status_code in (200, 201), answer.text
    # Secrets are write-only: the answer names the channel, never a secret.
    assert "webhook" in answer.json()["channels"]
    assert not [v for k, v in hook.items() if k.endswith("secret") and v in answer.text]


def message() -> Message:
    notice = Notice(
        kind=Kind.INCIDENT_P1_OPENED, dedup_key=f"{uuid7()}:alice:webhook", ticket_id="inc-1",
        ticket_number="INC0000001", title="Core switch down", priority="P1",
        ticket_url="https://itsm.test/api/v1/incidents/inc-1",
    )  # fmt: skip
    return Templates().render(notice, now=datetime.now(UTC))


async def deliver(app: FastAPI, http: httpx.AsyncClient) -> int | None:
    """Route a webhook notification to alice from her stored directory entry and send it."""
    person = await app.state.notify.people.get("alice")
    now = datetime.now(UTC)
    notification = Notification(
        key=f"{uuid7()}:alice:webhook", event_id=str(uuid7()),
        event_type="itsm.incident.created.v1", ticket_id="inc-1", priority="P1",
        recipient="alice", channel="webhook", reason="subscription", created_at=now,
        deliver_at=now, subscription="p1_opened",
    )  # fmt: skip
    target = route(notification, person, "smtp:none").target
    result = await WebhookChannel(http, ChannelTimeouts(connect=2, total=5)).send(message(), target)
    return result.status


async def test_a_receiver_with_the_previous_webhook_secret_verifies_until_it_is_removed(
    signing_key: str,
) -> None:
    old_secret, new_secret = "whsec-old-" + "o" * 16, "whsec-new-" + "n" * 16
    receiver = Receiver()
    boss = Tokens(signing_key).headers("boss", "manager")
    settings = settings_for("notify", signing_key)
    app = notify_app(settings, in_memory(settings))
    async with (
        asgi_client(app) as notify,
        http_server(receiver.app) as hooks,
        httpx.AsyncClient() as http,
    ):
        url = f"{hooks.base_url}/hook"
        receiver.secret = old_secret
        await put_webhook(notify, boss, {"url": url, "secret": old_secret})
        assert await deliver(app, http) == 204
        # Rotation starts: the sender signs with both; the receiver still has the old secret.
        await put_webhook(
            notify, boss, {"url": url, "secret": new_secret, "previous_secret": old_secret}
        )
        assert await deliver(app, http) == 204
        receiver.secret = new_secret  # the receiver switches at its own pace
        assert await deliver(app, http) == 204
        # Rotation over: a receiver still on the old secret is refused its deliveries.
        await put_webhook(notify, boss, {"url": url, "secret": new_secret})
        assert await deliver(app, http) == 204
        receiver.secret = old_secret
        assert await deliver(app, http) == 401
