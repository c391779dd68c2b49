"""The SLA read API on the in-memory adapters: facts and KPI partials consumed from the bus and
served over HTTP, role checks, and problem+json for bad parameters and bad records."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import httpx
import pytest

from services.sla.domain.kpis import Dims, KpiFigures, KpiPartial
from services.sla.main import SlaApiSettings, create_app
from shared.bus.memory import InMemoryBus
from shared.contracts import Topic
from shared.contracts.codec import KafkaRecord, decode
from shared.contracts.envelope import Envelope
from shared.contracts.sla import SlaBreached, SlaPaused, SlaStarted
from shared.contracts.sla_kpis import KpiUpdated
from shared.runtime import Runtime, in_memory
from shared.settings import ServiceSettings
from tests.support.apps import asgi_client
from tests.support.notify import group_saved
from tests.support.polling import eventually
from tests.unit.test_sla_api_handlers import T0, H, M, fact

Auth = Callable[..., dict[str, str]]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self):  # type: ignore[no-untyped-def]
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def runtime(settings: ServiceSettings, clock: Clock) -> Runtime:
    runtime = in_memory(settings, InMemoryBus())
    runtime.clock = clock
    return runtime


@pytest.fixture
async def client(settings: ServiceSettings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    config = SlaApiSettings(**settings.model_dump())
    async with asgi_client(create_app(config, runtime)) as client:
        yield client


@pytest.fixture
async def agent(auth: Auth, runtime: Runtime) -> dict[str, str]:
    """An agent of the L1 group: she works the unassigned tickets these tests' facts are about
    (test_sla_access.py has who sees what)."""
    await publish(runtime, Topic.INCIDENTS, group_saved("service-desk", "L1", ["ann"]))
    return auth("ann", "agent")


async def publish(runtime: Runtime, topic: str, *envelopes: Envelope) -> None:
    await runtime.bus.publish(topic, list(envelopes))


async def until_served(
    client: httpx.AsyncClient, path: str, headers: dict[str, str], check: Callable[[dict], bool]
) -> dict:
    async def probe() -> dict:
        response = await client.get(path, headers=headers)
        return response.json() if response.status_code == 200 else {}

    return await eventually(probe, until=lambda body: bool(body) and check(body), timeout=5)


async def test_a_tickets_timers_are_served_with_time_remaining_at_the_request_time(
    client: httpx.AsyncClient, runtime: Runtime, clock: Clock, agent: dict[str, str]
) -> None:
    await publish(
        runtime,
        Topic.SLA,
        fact(SlaStarted, 1, metric="first_response", target=900, deadline=T0 + 15 * M),
        fact(SlaStarted, 2),
        fact(SlaPaused, 3, status="paused", elapsed=600, deadline=None, at=T0 + 10 * M),
    )
    clock.now = T0 + 12 * M
    body = await until_served(
        client, "/api/v1/sla/tickets/t-1", agent, lambda b: len(b["timers"]) == 2 and
        b["timers"][1]["status"] == "paused",
    )  # fmt: skip
    first, resolution = body["timers"]
    assert body["as_of"] == "2026-03-02T09:12:00Z"
    assert first["metric"] == "first_response" and first["remaining_seconds"] == 180
    assert first["percent_used"] == 80.0 and first["deadline"] == "2026-03-02T09:15:00Z"
    assert resolution["paused"] and resolution["remaining_seconds"] == 3000
    assert resolution["deadline"] is None and resolution["last_fact"] == "paused"

    clock.now = T0 + 20 * M  # the first response is now 5 minutes overdue
    later = (await client.get("/api/v1/sla/tickets/t-1", headers=agent)).json()
    assert later["timers"][0]["remaining_seconds"] == -300 and later["timers"][0]["breached"]


async def test_at_risk_takes_an_iso_duration_or_seconds_and_pages(
    client: httpx.AsyncClient, runtime: Runtime, clock: Clock, agent: dict[str, str]
) -> None:
    await publish(
        runtime,
        Topic.SLA,
        fact(SlaStarted, 1, ticket="a", deadline=T0 + 20 * M),
        fact(SlaStarted, 1, ticket="b", deadline=T0 + 10 * M, priority="P1"),
        fact(SlaStarted, 1, ticket="c", deadline=T0 + 3 * H, target=3 * 3600),
    )
    await until_served(client, "/api/v1/sla/at-risk?within=PT1H", agent, lambda b: b["total"] == 2)
    for within in ("PT30M", "1800"):
        response = await client.get(f"/api/v1/sla/at-risk?within={within}", headers=agent)
        body = response.json()
        assert [t["ticket_id"] for t in body["items"]] == ["b", "a"], within
    default = (await client.get("/api/v1/sla/at-risk", headers=agent)).json()
    assert default["total"] == 2  # 30 minutes unless told
    page = (await client.get("/api/v1/sla/at-risk?limit=1&offset=1", headers=agent)).json()
    assert [t["ticket_id"] for t in page["items"]] == ["a"]
    assert (page["total"], page["limit"], page["offset"]) == (2, 1, 1)
    p1 = (await client.get("/api/v1/sla/at-risk?priority=P1", headers=agent)).json()
    assert [t["ticket_id"] for t in p1["items"]] == ["b"]

    clock.now = T0 + 2 * H  # c has used 2 of its 3 hours; a and b are overdue
    used = (await client.get("/api/v1/sla/at-risk?percent=60", headers=agent)).json()
    assert [t["ticket_id"] for t in used["items"]] == ["c"]
    breached = (await client.get("/api/v1/sla/breached", headers=agent)).json()
    assert [t["ticket_id"] for t in breached["items"]] == ["a", "b"]


async def test_breached_filters_by_time_range(
    client: httpx.AsyncClient, runtime: Runtime, clock: Clock, agent: dict[str, str]
) -> None:
    await publish(
        runtime,
        Topic.SLA,
        fact(SlaBreached, 2, ticket="x", elapsed=3600, at=T0 + H),
        fact(SlaBreached, 2, ticket="y", elapsed=3600, deadline=T0 + 3 * H, at=T0 + 3 * H,
             target=3 * 3600),
    )  # fmt: skip
    clock.now = T0 + 4 * H
    await until_served(client, "/api/v1/sla/breached", agent, lambda b: b["total"] == 2)
    ranged = await client.get(
        "/api/v1/sla/breached",
        params={"from": "2026-03-02T11:00:00Z", "to": "2026-03-02T14:00:00+01:00"},
        headers=agent,
    )
    assert [t["ticket_id"] for t in ranged.json()["items"]] == ["y"]


def kpi_event(partial: KpiPartial) -> Envelope:
    data = KpiUpdated.model_validate(partial.to_document()).model_dump(mode="json")
    return Envelope(
        type=KpiUpdated.event_type,
        source="/itsm/sla",
        subject=partial.key,
        sequence=partial.sequence,
        data=data,
        time=partial.window_start,
    )


def partial(
    *, partition: int = 0, start=T0, team: str = "network", priority: str = "P2", **figures: int
) -> KpiPartial:
    return KpiPartial(
        source_topic=Topic.INCIDENTS,
        source_partition=partition,
        granularity="hour",
        window_start=start,
        dims=Dims(team=team, priority=priority),
        figures=KpiFigures(**figures),
        backlog=figures.get("opened", 0) - figures.get("resolved", 0),
        watermark=10,
    )


async def test_kpis_merge_partials_per_window_and_group_with_a_total(
    client: httpx.AsyncClient, runtime: Runtime, clock: Clock, agent: dict[str, str]
) -> None:
    clock.now = T0 + 3 * H
    older = partial(opened=1, sla_met=1)
    await publish(
        runtime,
        Topic.SLA_KPIS,
        kpi_event(older),
        kpi_event(replace(older, figures=KpiFigures(opened=4, sla_met=3, sla_missed=1),
                          watermark=20, backlog=4)),
        kpi_event(older),  # a stale snapshot arriving late changes nothing
        kpi_event(partial(partition=1, opened=2, resolved=1, sla_met=1)),
        kpi_event(partial(partition=1, team="desk", opened=5, sla_missed=5)),
        kpi_event(partial(start=T0 + H, opened=1)),
        kpi_event(partial(start=T0 - 2 * 24 * H, opened=100)),  # outside the default day
    )  # fmt: skip
    body = await until_served(
        client, "/api/v1/kpis?group_by=team", agent, lambda b: b["total"]["opened"] == 12
    )
    assert body["granularity"] == "hour" and body["group_by"] == ["team"]
    assert body["to"] == "2026-03-02T12:00:00Z" and body["from"] == "2026-03-01T12:00:00Z"
    rows = [(s["window_start"], s["group"], s["summary"]["opened"]) for s in body["series"]]
    assert rows == [
        ("2026-03-02T09:00:00Z", {"team": "desk"}, 5),
        ("2026-03-02T09:00:00Z", {"team": "network"}, 6),
        ("2026-03-02T10:00:00Z", {"team": "network"}, 1),
    ]
    network = body["series"][1]["summary"]
    assert network["sla_compliance_percent"] == 80.0 and network["partials"] == 2
    assert [(g["group"], g["summary"]["opened"]) for g in body["groups"]] == [
        ({"team": "desk"}, 5), ({"team": "network"}, 7),
    ]  # fmt: skip
    assert body["total"]["sla_met"] == 4 and body["total"]["sla_missed"] == 6

    filtered = await client.get(
        "/api/v1/kpis",
        params={"team": "desk", "from": "2026-03-02T09:30:00Z", "to": "2026-03-02T10:00:00Z"},
        headers=agent,
    )
    assert filtered.status_code == 200, filtered.text
    only = filtered.json()
    assert only["from"] == "2026-03-02T09:00:00Z"  # the window holding `from`
    assert [s["group"] for s in only["series"]] == [{}] and only["total"]["opened"] == 5
    history = await client.get(
        "/api/v1/kpis", params={"from": "2026-02-28T00:00:00Z"}, headers=agent
    )
    assert history.json()["total"]["opened"] == 112


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("/api/v1/sla/at-risk?within=soon", "within"),
        ("/api/v1/sla/at-risk?within=PT0S", "within must be more than 0"),
        ("/api/v1/sla/at-risk?within=P60D", "at most 31 days"),
        ("/api/v1/sla/at-risk?percent=150", "percent"),
        ("/api/v1/sla/at-risk?metric=uptime", "metric"),
        ("/api/v1/sla/at-risk?priority=P9", "priority"),
        ("/api/v1/sla/at-risk?limit=1000", "limit"),
        ("/api/v1/sla/breached?from=2026-03-02T10:00:00Z&to=2026-03-02T09:00:00Z", "before"),
        ("/api/v1/sla/breached?from=2026-03-02T10:00:00", "time zone"),
        ("/api/v1/kpis?granularity=week", "granularity"),
        ("/api/v1/kpis?group_by=colour", "group_by"),
        ("/api/v1/kpis?from=2025-01-01T00:00:00Z", "at most 31 days"),
        ("/api/v1/sla/stream?metric=uptime", "metric"),
    ],
)
async def test_bad_parameters_are_answered_422_with_what_is_wrong(
    client: httpx.AsyncClient, agent: dict[str, str], path: str, fragment: str
) -> None:
    response = await client.get(path, headers=agent)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert fragment in response.json()["detail"]


async def test_an_unknown_ticket_is_a_404_problem(
    client: httpx.AsyncClient, agent: dict[str, str]
) -> None:
    response = await client.get("/api/v1/sla/tickets/nope", headers=agent)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert "nope" in response.json()["detail"]


ENDPOINTS = [
    "/api/v1/sla/tickets/t-1",
    "/api/v1/sla/at-risk",
    "/api/v1/sla/breached",
    "/api/v1/kpis",
    "/api/v1/sla/stream",
    "/api/v1/kpis/stream",
]


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_every_endpoint_needs_a_token(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    forged = await client.get(path, headers={"Authorization": "Bearer not.a.jwt"})
    assert forged.status_code == 401


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("role", ["requester", "change-manager", "service"])
async def test_only_agents_managers_and_admins_may_read(
    client: httpx.AsyncClient, auth: Auth, path: str, role: str
) -> None:
    response = await client.get(path, headers=auth("rita", role))
    assert response.status_code == 403
    assert "agent" in response.json()["detail"]


@pytest.mark.parametrize("role", ["agent", "manager", "admin"])
async def test_staff_roles_read(
    client: httpx.AsyncClient, runtime: Runtime, auth: Auth, role: str
) -> None:
    await publish(runtime, Topic.INCIDENTS, group_saved("service-desk", "L1", ["sam"]))
    await publish(runtime, Topic.SLA, fact(SlaStarted, 1))
    await until_served(client, "/api/v1/sla/tickets/t-1", auth("sam", role), bool)
    for path in ("/api/v1/sla/at-risk", "/api/v1/sla/breached", "/api/v1/kpis"):
        assert (await client.get(path, headers=auth("sam", role))).status_code == 200


async def test_an_undecodable_record_is_dead_lettered_and_the_next_fact_applied(
    client: httpx.AsyncClient, runtime: Runtime, agent: dict[str, str]
) -> None:
    bus = runtime.bus
    assert isinstance(bus, InMemoryBus)
    await bus.publish_record(Topic.SLA, KafkaRecord(b"t-1", b"{not json", ()))
    await bus.publish_record(
        Topic.SLA_KPIS, KafkaRecord(b"k", b"{}", (("ce_specversion", b"0.3"),))
    )
    await publish(runtime, Topic.SLA, fact(SlaStarted, 1))
    await until_served(client, "/api/v1/sla/tickets/t-1", agent, bool)

    async def dead_letters() -> list[KafkaRecord]:
        return bus.records(Topic.DEAD_LETTER)

    letters = await eventually(dead_letters, until=lambda rs: len(rs) >= 2, timeout=5)
    sources = sorted(dict(r.headers)["dlq-source-topic"] for r in letters)
    assert sources == [b"itsm.sla.events.v1", b"itsm.sla.kpis.v1"]
    assert all(dict(r.headers)["dlq-consumer-group"].startswith(b"sla-api") for r in letters)


async def test_a_fact_breaking_the_contract_is_dead_lettered_with_the_reason(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    bus = runtime.bus
    assert isinstance(bus, InMemoryBus)
    await publish(runtime, Topic.SLA, fact(SlaStarted, 1, subject="another-ticket"))

    async def probe() -> list[Envelope]:
        return [decode(r) for r in bus.records(Topic.DEAD_LETTER)]

    await eventually(probe, until=lambda es: len(es) == 1, timeout=5)
    (letter,) = bus.records(Topic.DEAD_LETTER)
    assert b"subject 'another-ticket'" in dict(letter.headers)["dlq-error"]


async def test_the_openapi_document_describes_every_endpoint(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    templates = {p.replace("/t-1", "/{ticket_id}") for p in ENDPOINTS}
    assert templates <= set(paths)
    assert "text/event-stream" in paths["/api/v1/sla/stream"]["get"]["responses"]["200"]["content"]
