"""Fixtures shared by every test layer."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest
from pydantic import SecretStr

from shared.auth.tokens import mint_dev_token
from shared.settings import ServiceSettings

TokenFactory = Callable[..., str]


@pytest.fixture(scope="session")
def signing_key() -> str:
    return secrets.token_urlsafe(48)


@pytest.fixture
def settings(signing_key: str) -> ServiceSettings:
    return ServiceSettings(
        service_name="test",
        auth_mode="dev",
        dev_signing_key=SecretStr(signing_key),
        relay_poll_interval=0.2,
        topic_partitions=3,
        log_json=False,
    )


@pytest.fixture(scope="session")
def mint(signing_key: str) -> TokenFactory:
    def make(subject: str, *roles: str, **claims: object) -> str:
        return mint_dev_token(
            signing_key,
            subject=subject,
            roles=roles,
            issuer="itsm-dev",
            audience="itsm",
            **claims,
        )

    return make


@pytest.fixture(scope="session")
def auth(mint: TokenFactory) -> Callable[..., dict[str, str]]:
    """Authorization headers for a subject with roles: auth("alice", "agent")."""

    def headers(subject: str, *roles: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint(subject, *roles)}"}

    return headers
