"""The embedded platform: every landed service in one process on the in-memory adapters."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.embedded import EmbeddedSettings, create_embedded_app, ensure_dev_key
from shared.settings import ServiceSettings
from tests.support.apps import asgi_client


async def test_embedded_platform_serves_every_service_with_docs(
    settings: ServiceSettings, auth
) -> None:
    async with asgi_client(create_embedded_app(settings)) as client:
        spec = (await client.get("/openapi.json")).json()
        assert "/api/v1/incidents" in spec["paths"]
        assert (await client.get("/docs")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        created = await client.post(
            "/api/v1/incidents", json={"title": "Wi-Fi down"}, headers=auth("al", "requester")
        )
        assert created.status_code == 201
        fetched = await client.get(created.headers["location"], headers=auth("al", "requester"))
        assert fetched.json()["title"] == "Wi-Fi down"


def test_the_dev_key_is_created_once_with_owner_only_access(tmp_path: Path) -> None:
    path = tmp_path / "state" / "dev-signing-key"
    key = ensure_dev_key(path)
    assert len(key) >= 32 and path.stat().st_mode & 0o777 == 0o600
    assert ensure_dev_key(path) == key


def test_embedded_mode_generates_a_key_when_none_is_configured(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ITSM_DEV_SIGNING_KEY_FILE", str(tmp_path / "key"))
    monkeypatch.delenv("ITSM_DEV_SIGNING_KEY", raising=False)
    create_embedded_app(EmbeddedSettings())
    assert (tmp_path / "key").exists()
