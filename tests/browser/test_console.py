"""The console end to end in headless Chromium against the running embedded platform: the live
queue and its SLA countdowns, a breach, an acknowledgement, a freeze refusal and the KPIs.
Every wait is Playwright's auto-waiting `expect`; nothing sleeps."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from playwright.async_api import Locator, Page, expect

from tests.browser.conftest import Platform, SignIn, desk
from tests.support.polling import eventually

REQUESTER = ("rita", "requester")
MANAGER = ("max", "manager")
CHANGE_MANAGER = ("carl", "change-manager")


def queue_row(page: Page, title: str) -> Locator:
    return page.locator("tbody tr", has_text=title)


async def open_queue(page: Page) -> None:
    await page.get_by_role("link", name="Queue").click()
    await expect(page.locator("table[data-live=connected]")).to_be_visible()


async def test_an_agent_sees_a_new_incident_appear_and_its_countdown_run(
    platform: Platform, sign_in: SignIn, uid: str
) -> None:
    agent = f"ann-{uid}"
    await desk(platform, uid, agent)
    page = await sign_in(agent, "agent")
    await open_queue(page)
    title = f"Disk full on build agent {uid}"
    await platform.call(
        REQUESTER, "POST", "/api/v1/incidents", {"title": title, "impact": 2, "urgency": 1}
    )

    clock = queue_row(page, title).locator(".sla")
    await expect(clock).to_have_attribute("data-state", "ok")
    await expect(clock).to_have_text(re.compile(r"response \d+:\d\d left"))
    first = await clock.inner_text()
    await expect(clock).not_to_have_text(first)  # it runs
    await expect(page.get_by_role("status")).to_contain_text(title)


async def test_a_breach_turns_the_countdown_amber_then_red(
    platform: Platform, sign_in: SignIn, uid: str
) -> None:
    agent = f"ann-{uid}"
    await desk(platform, uid, agent)
    service = f"payroll-{uid}"
    whole_day = ["00:00-24:00"]
    await platform.call(
        MANAGER,
        "POST",
        "/api/v1/sla/calendars",
        {
            "id": f"always-{uid}",
            "name": "Always open",
            "time_zone": "UTC",
            "hours": {day: whole_day for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")},
        },
    )
    await platform.call(
        MANAGER,
        "POST",
        "/api/v1/sla/policies",
        {
            "id": f"short-{uid}",
            "name": "A very short response target",
            "ticket_type": "incident",
            "priority": "P3",
            "service": service,
            "first_response_seconds": 4,
            "resolution_seconds": 3600,
            "calendar_id": f"always-{uid}",
            "warnings": [50],
        },
    )
    page = await sign_in(agent, "agent")
    await open_queue(page)
    title = f"Payroll export fails {uid}"
    await platform.call(
        REQUESTER,
        "POST",
        "/api/v1/incidents",
        {"title": title, "impact": 2, "urgency": 2, "service": service},
    )

    clock = queue_row(page, title).locator(".sla")
    await expect(clock).to_have_attribute("data-state", "warning")
    await expect(clock).to_have_attribute("data-state", "breached")
    await expect(clock).to_have_text(re.compile(r"response overdue"))
    assert await clock.evaluate("node => getComputedStyle(node).color") == "rgb(163, 20, 29)"


async def test_an_acknowledgement_from_the_console_stops_the_escalation(
    platform: Platform, sign_in: SignIn, uid: str
) -> None:
    agent = f"ann-{uid}"
    await desk(platform, uid, agent)
    service = f"mail-{uid}"
    await platform.call(
        MANAGER,
        "POST",
        "/api/v1/notify/policies",
        {
            "id": f"page-{uid}",
            "name": "New incident on the mail service",
            "match": {"event_types": ["itsm.incident.created.v1"], "services": [service]},
            "levels": [
                {
                    "delay_seconds": 0,
                    "targets": [{"kind": "user", "name": agent}],
                    "channels": ["email"],
                },
                {
                    "delay_seconds": 600,
                    "targets": [{"kind": "user", "name": "max"}],
                    "channels": ["email"],
                },
            ],
        },
    )
    incident = await platform.call(
        REQUESTER, "POST", "/api/v1/incidents", {"title": f"Mail bounces {uid}", "service": service}
    )
    page = await sign_in(agent, "agent")
    await page.get_by_role("link", name="Escalations").click()

    acknowledge = page.get_by_role("button", name=f"Acknowledge {incident['number']}")
    await acknowledge.click()
    row = page.locator("tr", has_text=incident["number"])
    await expect(row.locator("[data-field=status]")).to_have_text("acknowledged")
    (escalation,) = await platform.call(
        (agent, "agent"), "GET", f"/api/v1/notify/escalations?ticket_id={incident['id']}"
    )
    assert escalation["status"] == "acknowledged"
    assert escalation["acknowledged_by"] == agent
    assert escalation["next_level_at"] is None  # the manager is never paged


async def test_an_incident_shows_the_changes_linked_to_it(
    platform: Platform, sign_in: SignIn, uid: str
) -> None:
    agent = f"ann-{uid}"
    await desk(platform, uid, agent)
    item = f"lb-{uid}"
    await platform.call(CHANGE_MANAGER, "POST", "/api/v1/configuration-items", {"name": item})
    start = datetime.now(UTC) + timedelta(days=3)

    async def change(title: str, implementer: str | None) -> dict:
        return await platform.call(
            REQUESTER,
            "POST",
            "/api/v1/changes",
            {
                "title": title,
                "change_type": "normal",
                "implementer": implementer,
                "configuration_items": [item],
                "plan": {"implementation": "swap", "backout": "swap back", "test": "curl"},
                "planned_start": start.isoformat(),
                "planned_end": (start + timedelta(hours=1)).isoformat(),
            },
        )

    theirs = await change(f"Rotate load balancer certificates {uid}", agent)
    hidden = await change(f"Resize load balancer pool {uid}", None)  # the agent may not see it
    incident = await platform.call(
        REQUESTER,
        "POST",
        "/api/v1/incidents",
        {"title": f"TLS errors since {theirs['number']} and {hidden['number']} {uid}"},
    )
    await eventually(  # the changes service links them when it reads the incident's event
        lambda: platform.call(MANAGER, "GET", f"/api/v1/changes?incident={incident['id']}"),
        until=lambda page: page["total"] == 2,
        what="both changes linked",
    )

    page = await sign_in(agent, "agent")
    await page.goto(platform.url + f"/console/#/incident/{incident['id']}")
    linked = page.get_by_role("region", name="Linked changes")
    rows = linked.locator("tbody tr")
    await expect(rows).to_have_count(1)
    await expect(rows).to_contain_text(theirs["title"])
    await expect(rows.locator("[data-field=status]")).to_have_text("draft")
    await expect(rows).to_contain_text("named in this incident")
    await expect(linked).not_to_contain_text(hidden["number"])
    await linked.get_by_role("link", name=theirs["number"]).click()
    await expect(page.locator("main h1")).to_contain_text(theirs["number"])

    page = await sign_in(*MANAGER)  # sees every change
    await page.goto(platform.url + f"/console/#/incident/{incident['id']}")
    await expect(
        page.get_by_role("region", name="Linked changes").locator("tbody tr")
    ).to_have_count(2)


async def test_a_change_inside_a_freeze_window_is_shown_refused(
    platform: Platform, sign_in: SignIn, uid: str
) -> None:
    service, item = f"billing-{uid}", f"db-{uid}"
    start = (datetime.now(UTC) + timedelta(days=10)).replace(
        hour=8, minute=0, second=0, microsecond=0
    )
    await platform.call(
        CHANGE_MANAGER, "POST", "/api/v1/configuration-items", {"name": item, "service": service}
    )
    await platform.call(
        CHANGE_MANAGER,
        "POST",
        "/api/v1/change-templates",
        {
            "name": f"restart-{uid}",
            "title": "Restart the database",
            "implementation": "restart",
            "backout": "start again",
            "test": "select 1",
            "services": [service],
        },
    )
    await platform.call(
        CHANGE_MANAGER,
        "POST",
        "/api/v1/freeze-windows",
        {
            "name": f"Billing run {uid}",
            "start": start.isoformat(),
            "end": (start + timedelta(days=1)).isoformat(),
            "services": [service],
        },
    )
    change = await platform.call(
        REQUESTER,
        "POST",
        "/api/v1/changes",
        {
            "change_type": "standard",
            "template": f"restart-{uid}",
            "configuration_items": [item],
            "services": [service],
            "planned_start": (start + timedelta(hours=2)).isoformat(),
            "planned_end": (start + timedelta(hours=3)).isoformat(),
        },
    )
    page = await sign_in(REQUESTER[0], "requester")
    await page.get_by_role("link", name="Changes").click()
    row = page.locator("tbody tr", has_text=change["number"])
    await expect(row).to_contain_text(f"in freeze: Billing run {uid}")

    await row.get_by_role("link", name=change["number"]).click()
    await page.get_by_role("button", name="Submit for scheduling").click()
    await expect(page.get_by_role("alert")).to_have_text(
        f"Refused: the planned window falls in the freeze Billing run {uid}."
    )
    stored = await platform.call(REQUESTER, "GET", f"/api/v1/changes/{change['id']}")
    assert stored["status"] == "draft"


async def test_the_kpi_chart_changes_after_a_resolution(
    platform: Platform, sign_in: SignIn, uid: str
) -> None:
    agent = f"ann-{uid}"
    team = await desk(platform, uid, agent)
    incident = await platform.call(
        REQUESTER, "POST", "/api/v1/incidents", {"title": f"Slow VPN {uid}"}
    )
    await platform.call(
        (agent, "agent"),
        "POST",
        f"/api/v1/incidents/{incident['id']}/assignment",
        {"group": team, "assignee": agent},
    )
    page = await sign_in(agent, "agent")
    await page.get_by_role("link", name="KPIs").click()
    await page.get_by_label("Team").fill(team)
    await page.get_by_label("Team").dispatch_event("change")
    chart = page.locator(".chart svg")
    await expect(chart).to_have_attribute("data-total", "0")
    await expect(page.locator("[data-kpi=resolved] .value")).to_have_text(
        re.compile("^(\u2013|0)$")
    )

    await platform.call(
        (agent, "agent"),
        "POST",
        f"/api/v1/incidents/{incident['id']}/resolve",
        {"code": "fixed", "notes": "Moved the tunnel to the new concentrator."},
    )
    await expect(chart).to_have_attribute("data-total", "1")  # redrawn from the live KPI stream
    await expect(page.locator("[data-kpi=resolved] .value")).to_have_text("1")
    await expect(chart.locator("rect.bar[data-value='1']")).to_have_count(1)
