"""`make run`'s process: the embedded platform started as its own process, used over real HTTP
with a token minted by the dev token CLI — what a person does after `make run`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.apps import free_port
from tests.support.polling import eventually


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    port = free_port()
    env = {
        **os.environ,
        "ITSM_DEV_SIGNING_KEY_FILE": str(tmp_path / "dev-signing-key"),
        "ITSM_LOG_JSON": "true",
    }
    env.pop("ITSM_DEV_SIGNING_KEY", None)
    env.pop("ITSM_AUTH_MODE", None)
    log = (tmp_path / "embedded.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "launcher.embedded", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}", env
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()


async def test_the_embedded_platform_serves_over_http_with_cli_minted_tokens(
    embedded: tuple[str, dict[str, str]],
) -> None:
    base_url, env = embedded
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:

        async def live() -> int:
            try:
                return (await client.get("/livez")).status_code
            except httpx.TransportError:
                return 0

        await eventually(live, until=lambda s: s == 200, timeout=60, what="the embedded platform")
        minted = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "shared.auth.cli", "--sub", "alice", "--role", "requester"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        token = minted.stdout.strip()
        headers = {"Authorization": f"Bearer {token}"}
        created = await client.post(
            "/api/v1/incidents", json={"title": "Laptop won't boot"}, headers=headers
        )
        assert created.status_code == 201, created.text
        listed = await client.get("/api/v1/incidents", headers=headers)
        assert listed.json()["total"] == 1
        assert (await client.get("/docs")).status_code == 200
        assert (await client.post("/api/v1/incidents", json={})).status_code == 401
