"""Browser tests: the embedded platform (what `make run` starts) as its own process on a free
port, driven through the console in Debian's headless Chromium by Playwright. Playwright never
downloads a browser here: it launches /usr/bin/chromium (`apt-get install chromium`)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from shared.auth.tokens import mint_dev_token
from tests.support.apps import free_port

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium waits on services it cannot reach here.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LAPTOP = {"width": 1366, "height": 800}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if CHROMIUM.exists():
        return
    # CI installs chromium (.ci/run); a developer machine without it skips, saying why.
    if os.environ.get("CI"):
        raise pytest.UsageError(f"{CHROMIUM} is missing: apt-get install -y chromium")
    skip = pytest.mark.skip(reason=f"needs {CHROMIUM} (apt-get install -y chromium)")
    for item in items:
        if (
            "tests/browser/" in str(item.fspath).replace(os.sep, "/")
            and "browser" in item.fixturenames
        ):
            item.add_marker(skip)


@dataclass
class Platform:
    """The running embedded platform, and API access as anyone (for arranging a scenario)."""

    url: str
    signing_key: str

    def token(self, subject: str, role: str) -> str:
        return mint_dev_token(
            self.signing_key, subject=subject, roles=[role], issuer="itsm-dev", audience="itsm"
        )

    async def call(self, who: tuple[str, str], method: str, path: str, body: object = None) -> dict:
        headers = {"Authorization": f"Bearer {self.token(*who)}"}
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            response = await client.request(method, path, json=body, headers=headers)
        assert response.status_code < 400, (
            f"{method} {path}: {response.status_code} {response.text}"
        )
        return response.json() if response.content else {}


def wait_until_live(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the embedded platform exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/livez", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)  # start-up poll, not a test synchronisation
    raise RuntimeError("the embedded platform did not start within 60 s")


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    state = tmp_path_factory.mktemp("console-platform")
    key = secrets.token_urlsafe(48)
    port = free_port()
    env = {
        **os.environ,
        "ITSM_AUTH_MODE": "dev",
        "ITSM_DEV_SIGNING_KEY": key,
        "ITSM_DEV_SIGNING_KEY_FILE": str(state / "dev-signing-key"),
        "ITSM_SLA_KPI_PUBLISH_INTERVAL": "0.5",
        "ITSM_LOG_LEVEL": "WARNING",
    }
    log = state / "embedded.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "launcher.embedded", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_live(url, process, log)
        yield Platform(url=url, signing_key=key)
    finally:
        process.terminate()
        process.wait(timeout=15)


# Playwright's async API on the suite's session event loop: its sync API would hold a running
# loop in the main thread and break every async test that runs after it.
@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        yield chromium
        await chromium.close()


SignIn = Callable[[str, str], Awaitable[Page]]


@pytest.fixture
async def sign_in(browser: Browser, platform: Platform) -> AsyncIterator[SignIn]:
    """Open the console in a fresh browser context and sign in through the development login."""
    contexts: list[BrowserContext] = []

    async def open_as(subject: str, role: str) -> Page:
        context = await browser.new_context(viewport=LAPTOP)
        contexts.append(context)
        page = await context.new_page()
        page.set_default_timeout(15_000)
        await page.goto(platform.url + "/console/")
        await page.get_by_label("User name").fill(subject)
        await page.get_by_label("Role").select_option(role)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
        return page

    yield open_as
    for context in contexts:
        await context.close()


@pytest.fixture
def uid() -> str:
    """A suffix that keeps one test's people, groups and services apart from another's."""
    return uuid.uuid4().hex[:8]


async def desk(platform: Platform, uid: str, agent: str) -> str:
    """An L1 group with `agent` in it: its members see the unassigned triage queue."""
    name = f"desk-{uid}"
    await platform.call(
        ("max", "manager"),
        "POST",
        "/api/v1/groups",
        {"name": name, "tier": "L1", "members": [agent], "manager": "max"},
    )
    return name
