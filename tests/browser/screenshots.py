"""Screenshots of the console's main screens for docs/img/ (not a test):

    .venv/bin/python -m tests.browser.screenshots

Starts the embedded platform with its demo data on a free port and signs in as each role."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, LAPTOP, wait_until_live
from tests.support.apps import free_port

OUT = Path(__file__).resolve().parents[2] / "docs" / "img"


def sign_in(page: Page, url: str, subject: str, role: str) -> None:
    page.goto(url + "/console/")
    page.evaluate("sessionStorage.clear()")
    page.reload()
    page.get_by_label("User name").fill(subject)
    page.get_by_label("Role").select_option(role)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def shoot(page: Page, name: str) -> None:
    page.mouse.move(0, 0)
    page.screenshot(path=OUT / f"console-{name}.png", full_page=True)


def take(url: str) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_context(viewport=LAPTOP).new_page()
        page.goto(url + "/console/")
        expect(page.get_by_role("button", name="Sign in")).to_be_visible()
        shoot(page, "sign-in")
        sign_in(page, url, "ann", "agent")
        expect(page.locator("table[data-live=connected]")).to_be_visible()
        shoot(page, "queue")
        page.get_by_role("link", name="INC0000002").click()
        expect(page.get_by_role("heading", name="Timeline")).to_be_visible()
        page.locator("main details").first.evaluate("node => node.open = true")
        shoot(page, "incident")
        page.get_by_role("link", name="Escalations").click()
        expect(page.get_by_role("button", name="Acknowledge INC0000001")).to_be_visible()
        shoot(page, "escalations")
        page.get_by_role("link", name="Queue").click()
        page.get_by_role("link", name="INC0000005").click()
        linked = page.get_by_role("region", name="Linked changes")
        expect(linked.get_by_role("link", name="CHG0000001")).to_be_visible()
        shoot(page, "incident-changes")
        sign_in(page, url, "max", "manager")
        page.get_by_role("link", name="KPIs").click()
        expect(page.locator(".chart svg")).to_be_visible()
        shoot(page, "kpis")
        page.get_by_role("link", name="Changes").click()
        page.get_by_label("Calendar view").select_option("month")
        expect(page.locator(".calendar .day.freeze").first).to_be_visible()
        shoot(page, "changes")
        sign_in(page, url, "carl", "change-manager")
        page.get_by_role("link", name="Approvals").click()
        refused = page.locator("tr", has_text="core-router")
        refused.get_by_role("button", name="Approve").click()
        expect(refused.get_by_role("alert")).to_contain_text("Refused")
        shoot(page, "approvals")
        sign_in(page, url, "rita", "requester")
        expect(page.get_by_role("heading", name="My tickets")).to_be_visible()
        shoot(page, "requester")
        browser.close()


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with tempfile.TemporaryDirectory() as state:
        log = Path(state) / "embedded.log"
        env = {
            **os.environ,
            "ITSM_AUTH_MODE": "dev",
            "ITSM_DEV_SIGNING_KEY": secrets.token_urlsafe(48),
        }
        with log.open("w") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "launcher.embedded", "--port", str(port), "--demo"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_live(url, process, log)
            take(url)
        finally:
            process.terminate()
            process.wait(timeout=15)
    print(f"screenshots in {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
