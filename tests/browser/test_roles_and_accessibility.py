"""What each role sees, and the basics of accessibility: every control has an accessible name
(computed from the accessibility tree), and the console works from the keyboard."""

from __future__ import annotations

import re

from playwright.async_api import Browser, Page, expect

from tests.browser.conftest import Platform, SignIn, desk


async def nav_links(page: Page) -> list[str]:
    navigation = page.get_by_role("navigation", name="Main")
    await expect(navigation.get_by_role("link").first).to_be_visible()
    return await navigation.get_by_role("link").all_inner_texts()


async def action_names(page: Page) -> list[str]:
    """The actions offered: a disclosure per action with fields, a button per one without."""
    actions = page.get_by_role("region", name="Actions")
    await expect(actions.locator("summary, .actions > form button").first).to_be_visible()
    return await actions.locator("summary, .actions > form button").all_inner_texts()


async def assert_every_control_is_named(page: Page) -> None:
    await expect(page.locator("main h1")).to_be_visible()
    controls = page.locator("main input, main select, main textarea, main button")
    for index in range(await controls.count()):
        await expect(controls.nth(index)).to_have_accessible_name(re.compile(r"\S"))


async def test_the_dev_login_shows_only_what_the_role_may_do(
    platform: Platform, sign_in: SignIn, uid: str
) -> None:
    requester = f"rita-{uid}"
    incident = await platform.call(
        (requester, "requester"), "POST", "/api/v1/incidents", {"title": f"Screen flickers {uid}"}
    )
    page = await sign_in(requester, "requester")
    assert await nav_links(page) == ["My tickets", "Changes"]
    await page.get_by_role("link", name=incident["number"]).click()
    # Its own ticket, still new: reply or cancel it, nothing an agent does.
    assert await action_names(page) == ["Reply", "Cancel"]
    await expect(page.get_by_role("heading", name="SLA")).to_have_count(0)  # SLA reads are staff's

    await page.goto(platform.url + "/console/#/kpis")  # not a requester's page: back home
    await expect(page.get_by_role("heading", name="My tickets")).to_be_visible()

    agent = f"ann-{uid}"
    await desk(platform, uid, agent)
    page = await sign_in(agent, "agent")
    assert await nav_links(page) == ["Queue", "Escalations", "KPIs"]
    await page.goto(platform.url + f"/console/#/incident/{incident['id']}")
    assert await action_names(page) == [
        "Assign",
        "Escalate to next tier",
        "Reply",
        "Add work note",
        "Promote to major incident",
        "Resolve",
        "Cancel",
    ]

    page = await sign_in(f"carl-{uid}", "change-manager")
    assert await nav_links(page) == ["Changes", "Approvals"]


async def test_the_dev_login_works_from_the_keyboard(browser: Browser, platform: Platform) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(platform.url + "/console/")
    await expect(page.get_by_label("User name")).to_be_visible()
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    await page.keyboard.press("Tab")
    await expect(page.get_by_label("User name")).to_be_focused()
    await page.keyboard.press("Control+A")
    await page.keyboard.type("kim")
    await page.keyboard.press("Tab")
    await expect(page.get_by_label("Role")).to_be_focused()
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("button", name="Sign in")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.get_by_text("kim (agent)")).to_be_visible()
    await expect(page.get_by_role("heading", name="Queue")).to_be_visible()
    await context.close()


async def test_every_control_on_the_main_screens_has_a_label(
    platform: Platform, sign_in: SignIn, uid: str
) -> None:
    agent = f"ann-{uid}"
    await desk(platform, uid, agent)
    incident = await platform.call(
        ("rita", "requester"), "POST", "/api/v1/incidents", {"title": f"Label check {uid}"}
    )
    page = await sign_in(agent, "agent")
    for route in ["queue", f"incident/{incident['id']}", "kpis"]:
        await page.goto(platform.url + f"/console/#/{route}")
        await expect(page.locator("main h1")).to_be_visible()
        await page.locator("main details").evaluate_all(
            "nodes => nodes.forEach(n => n.open = true)"
        )
        await assert_every_control_is_named(page)
    page = await sign_in("rita", "requester")
    await assert_every_control_is_named(page)  # My tickets, with the new-ticket form
    page = await sign_in("max", "manager")
    await page.goto(platform.url + "/console/#/changes")
    await expect(page.locator("main h1")).to_have_text("Changes")
    await assert_every_control_is_named(page)
