"""The live streams: the fan-out hub (filters, a slow client dropped without holding up the
others) and server-sent events over a real loopback HTTP connection on the in-memory bus."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from services.sla.api.live import LiveClient, LiveHub, Wants
from services.sla.api.stream import server_sent_events, sla_fact_filter
from services.sla.main import SlaApiSettings, create_app
from shared.bus.memory import InMemoryBus
from shared.contracts import Topic
from shared.contracts.sla import SlaBreached, SlaStarted
from shared.runtime import in_memory
from shared.settings import ServiceSettings
from tests.support.apps import http_server
from tests.support.notify import assigned, group_saved
from tests.unit.test_sla_api_handlers import T0, H, fact
from tests.unit.test_sla_api_routes import Auth


def test_the_hub_gives_each_client_what_its_filter_wants() -> None:
    hub = LiveHub("test", queue_size=10)
    t1 = hub.connect(sla_fact_filter("t-1", None, None))
    p1 = hub.connect(sla_fact_filter(None, "P1", "resolution"))
    for envelope in (fact(SlaStarted, 1), fact(SlaStarted, 1, ticket="t-2", priority="P1")):
        hub.publish(envelope)
    assert [e.subject for e in drain(t1)] == ["t-1"]
    assert [e.subject for e in drain(p1)] == ["t-2"]


def test_a_client_that_falls_behind_is_dropped_and_the_others_still_get_everything() -> None:
    hub = LiveHub("test", queue_size=2)
    slow = hub.connect(lambda e: True)
    fast = hub.connect(lambda e: True)
    received = []
    for sequence in range(1, 6):
        hub.publish(fact(SlaStarted, sequence))
        received += drain(fast)  # the fast client keeps up
    assert slow.dropped and not fast.dropped
    assert hub.clients == 1
    assert [e.sequence for e in received] == [1, 2, 3, 4, 5]
    assert [e.sequence for e in drain(slow)] == [1, 2]  # what it had before it was dropped


async def test_a_dropped_client_is_told_and_its_stream_ends() -> None:
    hub = LiveHub("test", queue_size=1)
    events = server_sent_events(hub, lambda e: True, heartbeat=30)
    connected = await anext(events)
    assert connected.comment == "connected" and hub.clients == 1
    hub.publish(fact(SlaStarted, 1))
    hub.publish(fact(SlaStarted, 2))  # the queue is full: dropped
    dropped = await anext(events)
    assert dropped.event == "dropped"
    with pytest.raises(StopAsyncIteration):
        await anext(events)
    assert hub.clients == 0


async def test_shutting_down_ends_every_stream() -> None:
    hub = LiveHub("test", queue_size=5)
    events = server_sent_events(hub, lambda e: True, heartbeat=30)
    await anext(events)
    waiting = asyncio.create_task(anext(events))
    await asyncio.sleep(0)  # let it wait for the next event
    hub.close()
    # Woken at once, not at its next heartbeat 30 s later.
    assert (await asyncio.wait_for(waiting, 5)).event == "dropped"


def drain(client) -> list:  # type: ignore[no-untyped-def]
    items = []
    while not client.queue.empty():
        items.append(client.queue.get_nowait())
    return items


@dataclass
class EventStream:
    """Reads server-sent events off an open response, block by block."""

    lines: AsyncIterator[str]
    comments: list[str] = field(default_factory=list)
    retry: str | None = None

    async def next_event(self, timeout: float = 5) -> dict[str, str]:
        """The next block with data (comments and a bare `retry:` are remembered)."""
        async with asyncio.timeout(timeout):
            fields: dict[str, str] = {}
            async for line in self.lines:
                if not line:
                    if "data" in fields:
                        return fields
                    self.retry = fields.get("retry", self.retry)
                    fields = {}
                    continue
                name, _, value = line.partition(":")
                if not name:
                    self.comments.append(value.strip())
                else:
                    fields[name] = value.lstrip()
        raise AssertionError("the stream ended")

    async def comment(self, wanted: str, timeout: float = 5) -> None:
        async with asyncio.timeout(timeout):
            async for line in self.lines:
                if line.startswith(":") and line[1:].strip() == wanted:
                    return
        raise AssertionError(f"the stream ended before : {wanted}")


@pytest.fixture
async def served(settings: ServiceSettings) -> AsyncIterator[tuple[httpx.AsyncClient, InMemoryBus]]:
    bus = InMemoryBus()
    runtime = in_memory(settings, bus)
    # Already on the topic when the service starts: never replayed to a stream.
    await bus.publish(Topic.SLA, [fact(SlaStarted, 1, ticket="t-1")])
    # ann works the L1 triage queue (t-1 is unassigned); t-2 is with network.
    await bus.publish(
        Topic.INCIDENTS,
        [group_saved("service-desk", "L1", ["ann"]), assigned("t-2", 2, "network", tier="L2")],
    )
    config = SlaApiSettings(**settings.model_dump(), stream_heartbeat_seconds=0.2)
    async with http_server(create_app(config, runtime)) as client:
        yield client, bus


async def test_a_client_receives_the_facts_it_asked_for_live_with_heartbeats(
    served: tuple[httpx.AsyncClient, InMemoryBus], auth: Auth
) -> None:
    client, bus = served
    async with client.stream(
        "GET", "/api/v1/sla/stream?ticket=t-1", headers=auth("ann", "agent")
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = EventStream(response.aiter_lines())
        await stream.comment("connected")
        breach = fact(SlaBreached, 2, ticket="t-1", elapsed=3600, at=T0 + H)
        await bus.publish(Topic.SLA, [fact(SlaStarted, 1, ticket="t-2"), breach])
        event = await stream.next_event()
        assert event["event"] == "itsm.sla.breached.v1" and event["id"] == breach.id
        payload = json.loads(event["data"])
        assert payload["subject"] == "t-1" and payload["sequence"] == 2
        assert payload["data"]["metric"] == "resolution" and payload["data"]["status"] == "running"
        assert stream.retry == "3000"  # EventSource reconnects after 3 s
        await stream.comment("heartbeat")


async def test_an_agent_is_streamed_the_facts_of_the_tickets_they_work_only(
    served: tuple[httpx.AsyncClient, InMemoryBus], auth: Auth
) -> None:
    client, bus = served
    for subject, role, expected in (
        ("ann", "agent", ["t-1"]),
        ("maria", "manager", ["t-2", "t-1"]),
    ):
        async with client.stream(
            "GET", "/api/v1/sla/stream", headers=auth(subject, role)
        ) as response:
            stream = EventStream(response.aiter_lines())
            await stream.comment("connected")
            await bus.publish(
                Topic.SLA,
                [fact(SlaStarted, 1, ticket="t-2"), fact(SlaBreached, 2, ticket="t-1", at=T0 + H)],
            )
            subjects = [json.loads((await stream.next_event())["data"])["subject"]]
            if len(expected) == 2:
                subjects.append(json.loads((await stream.next_event())["data"])["subject"])
            assert subjects == expected, subject


async def test_an_agent_gets_heartbeats_while_only_others_tickets_have_facts(
    served: tuple[httpx.AsyncClient, InMemoryBus], auth: Auth
) -> None:
    """Facts of t-2 (network's) every 50 ms, none for ann: she still gets a heartbeat every
    0.2 s (the stream's interval here), so the connection never looks idle."""
    client, bus = served

    async def others_facts() -> None:
        for sequence in range(2, 1000):
            await bus.publish(Topic.SLA, [fact(SlaStarted, sequence, ticket="t-2")])
            await asyncio.sleep(0.05)

    async with client.stream("GET", "/api/v1/sla/stream", headers=auth("ann", "agent")) as response:
        stream = EventStream(response.aiter_lines())
        await stream.comment("connected")
        publishing = asyncio.create_task(others_facts())
        try:
            await stream.comment("heartbeat")
            await stream.comment("heartbeat")
        finally:
            publishing.cancel()


async def test_a_stream_refuses_requesters(
    served: tuple[httpx.AsyncClient, InMemoryBus], auth: Auth
) -> None:
    client, _ = served
    response = await client.get("/api/v1/kpis/stream", headers=auth("alice", "requester"))
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"


def dropped_clients() -> float:
    found = REGISTRY.get_sample_value("itsm_sla_stream_dropped_clients_total", {"stream": "sla"})
    return found or 0.0


async def test_a_client_that_stops_reading_is_dropped_with_its_queue_bounded(
    settings: ServiceSettings, auth: Auth
) -> None:
    """A real stream request whose client reads the headers and then nothing more (every send
    of the response body blocks, as when a TCP peer stops reading): the events published for it
    meanwhile fill its queue up to `stream_queue_size` and no further; the client is dropped from
    the hub (nothing more is kept for it) and its request ends when it goes away."""
    queue_size = 4
    config = SlaApiSettings(**settings.model_dump(), stream_queue_size=queue_size)
    app = create_app(config, in_memory(settings, InMemoryBus()))
    stalled = asyncio.Event()  # never set: the client never reads
    first_body = asyncio.Event()
    gone = asyncio.Event()
    sent: list[dict[str, Any]] = []

    requested: list[bool] = []

    async def receive() -> dict[str, Any]:
        if not requested:
            requested.append(True)
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body":
            first_body.set()
            await stalled.wait()

    headers = [(k.lower().encode(), v.encode()) for k, v in auth("ann", "agent").items()]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/api/v1/sla/stream", "raw_path": b"/api/v1/sla/stream",
        "query_string": b"", "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 50000), "server": ("test", 80),
    }  # fmt: skip
    async with app.router.lifespan_context(app):
        hub: LiveHub = app.state.sla_fact_hub
        assert hub.queue_size == queue_size  # the setting reaches the hub
        clients: list[LiveClient] = []
        connect = hub.connect

        def spy(wants: Wants) -> LiveClient:
            clients.append(connect(wants))
            return clients[-1]

        hub.connect = spy  # type: ignore[method-assign]
        request = asyncio.create_task(app(scope, receive, send))
        await asyncio.wait_for(first_body.wait(), 5)  # connected; its first body send blocks
        [client] = clients
        assert hub.clients == 1
        dropped_before = dropped_clients()

        for sequence in range(1, 10 * queue_size + 1):  # one burst while the client reads nothing
            hub.publish(fact(SlaStarted, sequence))

        assert client.dropped and hub.clients == 0
        assert client.queue.qsize() == queue_size  # held for it: the bound, not the burst
        assert dropped_clients() == dropped_before + 1
        hub.publish(fact(SlaStarted, 99))
        assert client.queue.qsize() == queue_size  # nothing more is kept for it
        assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]

        gone.set()  # the client goes away: its request ends
        await asyncio.wait_for(request, 5)
