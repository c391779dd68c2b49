"""The console's own endpoints, in-process: the development login exists only in dev auth
mode, answers only its own origin, and the pages carry a strict Content-Security-Policy."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from services.console.main import ConsoleSettings, create_app
from shared.auth.tokens import TokenVerifier
from tests.support.apps import asgi_client

KEY = "k" * 48


def dev_settings() -> ConsoleSettings:
    return ConsoleSettings(auth_mode="dev", dev_signing_key=SecretStr(KEY))


def oidc_settings() -> ConsoleSettings:
    return ConsoleSettings(
        auth_mode="oidc",
        dev_signing_key=SecretStr(KEY),  # configured by mistake: still never used
        oidc_jwks_url="https://id.example/jwks",
        oidc_authority="https://id.example/realms/itsm",
        oidc_client_id="itsm-console",
    )


async def test_the_dev_login_mints_a_token_for_the_chosen_role() -> None:
    async with asgi_client(create_app(dev_settings())) as client:
        options = (await client.get("/console/config.json")).json()
        answer = await client.post("/console/dev-login", json={"subject": "ann", "role": "agent"})
    assert options == {
        "auth_mode": "dev",
        "dev_login": True,
        "oidc": None,
        "roles": ["requester", "agent", "change-manager", "manager", "admin"],
    }
    assert answer.status_code == 200, answer.text
    principal = TokenVerifier(issuer="itsm-dev", audience="itsm", dev_signing_key=KEY).verify(
        answer.json()["access_token"]
    )
    assert (principal.subject, sorted(principal.roles)) == ("ann", ["agent"])


async def test_there_is_no_dev_login_in_oidc_mode() -> None:
    async with asgi_client(create_app(oidc_settings())) as client:
        options = (await client.get("/console/config.json")).json()
        answer = await client.post("/console/dev-login", json={"subject": "ann", "role": "admin"})
        page = await client.get("/console/")
    assert answer.status_code == 404
    assert options["dev_login"] is False and options["roles"] == []
    assert options["oidc"] == {
        "authority": "https://id.example/realms/itsm",
        "client_id": "itsm-console",
        "scope": "openid profile email",
    }
    assert "connect-src 'self' https://id.example;" in page.headers["content-security-policy"]


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        ({"subject": "ann", "role": "service"}, {}, 422),  # machines do not sign in here
        ({"subject": "a b", "role": "agent"}, {}, 422),
        ({"subject": "ann", "role": "admin"}, {"Origin": "https://evil.example"}, 403),
    ],
)
async def test_the_dev_login_refuses(body: dict, headers: dict, status: int) -> None:
    async with asgi_client(create_app(dev_settings())) as client:
        answer = await client.post("/console/dev-login", json=body, headers=headers)
    assert answer.status_code == status, answer.text


async def test_the_dev_login_refuses_a_form_post_from_another_site() -> None:
    # A plain HTML form cannot send application/json, so it cannot mint a token.
    async with asgi_client(create_app(dev_settings())) as client:
        answer = await client.post("/console/dev-login", data={"subject": "ann", "role": "admin"})
    assert answer.status_code == 422


async def test_pages_are_served_with_a_strict_content_security_policy() -> None:
    async with asgi_client(create_app(dev_settings())) as client:
        root = await client.get("/")
        page = await client.get("/console/")
        script = await client.get("/console/js/app.js")
        escape = await client.get("/console/../main.py")
    assert root.status_code == 307 and root.headers["location"] == "/console/"
    assert page.status_code == 200 and '<main id="view"' in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert script.headers["content-type"].startswith("text/javascript")
    assert escape.status_code == 404


def test_the_console_container_needs_a_key_in_dev_mode() -> None:
    with pytest.raises(ValueError, match="ITSM_DEV_SIGNING_KEY"):
        create_app(ConsoleSettings(auth_mode="dev", dev_signing_key=None))
