"""Who sees which ticket's SLA (issue #9, object level): the SLA API follows the assignment
groups and assignments from the incident events, copies each ticket's assignment onto its
timers, and scopes agents by the rule the incidents service uses (shared/auth/reach.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from services.sla import handlers
from services.sla.handlers import AtRisk, SlaReadModel
from services.sla.store import AccessStore, Document, KpiPartialStore, TimerFilter, TimerStore
from shared.auth.principal import Principal, Role
from shared.auth.reach import AgentReach
from shared.bus.port import PermanentEventError
from shared.contracts.envelope import Envelope
from shared.contracts.incidents import IncidentReplied
from shared.contracts.sla import SlaBreached, SlaStarted
from shared.errors import NotFound
from shared.store.memory import InMemoryDatabase
from tests.support.notify import assigned, group_saved, incident_event
from tests.unit.test_sla_api_handlers import T0, H, fact, read_model


def person(subject: str, role: Role = Role.AGENT) -> Principal:
    return Principal(subject=subject, roles=frozenset({role}))


@pytest.fixture
def model() -> SlaReadModel:
    return read_model(InMemoryDatabase())


async def follow(model: SlaReadModel, *envelopes: Envelope) -> list[bool]:
    return [await handlers.on_incident_event(model, e, now=T0) for e in envelopes]


async def world(model: SlaReadModel) -> None:
    """ann in the L1 desk, otto in L2 network; t-desk with the desk, t-net with network and
    assigned to ivan personally, t-new unassigned; each with a running resolution timer."""
    await follow(
        model,
        group_saved("service-desk", "L1", ["ann"]),
        group_saved("network", "L2", ["otto"]),
        assigned("t-desk", 3, "service-desk"),
        assigned("t-net", 3, "network", assignee="ivan", tier="L2"),
    )
    for ticket in ("t-desk", "t-net", "t-new"):
        await handlers.on_sla_fact(model, fact(SlaStarted, 1, ticket=ticket), now=T0)


async def visible(model: SlaReadModel, subject: str, role: Role = Role.AGENT) -> list[str]:
    reach = await handlers.reach_of(model, person(subject, role))
    seen = []
    for ticket in ("t-desk", "t-net", "t-new"):
        try:
            await handlers.ticket_sla(model, ticket, now=T0, reach=reach)
            seen.append(ticket)
        except NotFound:
            pass
    return seen


async def listed(model: SlaReadModel, subject: str, role: Role = Role.AGENT) -> list[str]:
    reach = await handlers.reach_of(model, person(subject, role))
    clauses = reach.clauses() if reach is not None else None
    filters = TimerFilter(reach=tuple(clauses) if clauses is not None else None)
    items, total = await handlers.at_risk(
        model, AtRisk(within=2 * H), filters, now=T0, limit=50, offset=0
    )
    assert total == len(items)
    return sorted(r.ticket_id for r in items)


@pytest.mark.parametrize(
    ("subject", "role", "expected"),
    [
        ("ann", Role.AGENT, ["t-desk", "t-new"]),  # her group's, and the triage queue (L1)
        ("otto", Role.AGENT, ["t-net"]),  # his group's; L2 has no triage queue
        ("ivan", Role.AGENT, ["t-net"]),  # assigned to him personally, in no group
        ("zoe", Role.AGENT, []),  # in no group, assigned nothing
        ("maria", Role.MANAGER, ["t-desk", "t-net", "t-new"]),
        ("root", Role.ADMIN, ["t-desk", "t-net", "t-new"]),
    ],
)
async def test_who_sees_which_tickets_sla_by_id_and_in_lists(
    model: SlaReadModel, subject: str, role: Role, expected: list[str]
) -> None:
    await world(model)
    assert await visible(model, subject, role) == expected
    assert await listed(model, subject, role) == expected


async def test_agents_see_all_when_configured(model: SlaReadModel) -> None:
    await world(model)
    everything = replace(model, agents_see_all=True)
    assert await visible(everything, "zoe") == ["t-desk", "t-net", "t-new"]
    assert await listed(everything, "zoe") == ["t-desk", "t-net", "t-new"]


async def test_a_reassignment_moves_the_ticket_between_agents_lists(model: SlaReadModel) -> None:
    await world(model)
    await follow(model, assigned("t-desk", 5, "network", tier="L2"))
    assert await listed(model, "ann") == ["t-new"]
    assert await listed(model, "otto") == ["t-desk", "t-net"]
    # a stale copy of the first assignment changes nothing
    assert await follow(model, assigned("t-desk", 3, "service-desk")) == [False]
    assert await listed(model, "otto") == ["t-desk", "t-net"]


async def test_a_group_change_of_members_takes_effect_and_stale_copies_do_not(
    model: SlaReadModel,
) -> None:
    await world(model)
    assert await follow(model, group_saved("network", "L2", ["otto", "ann"], sequence=2)) == [True]
    assert await visible(model, "ann") == ["t-desk", "t-net", "t-new"]
    assert await follow(model, group_saved("network", "L2", [], sequence=3)) == [True]
    assert await follow(model, group_saved("network", "L2", ["otto"], sequence=1)) == [False]
    assert await visible(model, "otto") == []
    assert await visible(model, "ann") == ["t-desk", "t-new"]


async def test_a_timer_written_after_its_assignment_carries_it_and_later_ones_update_it(
    model: SlaReadModel,
) -> None:
    await follow(model, assigned("t-1", 2, "service-desk"))
    await handlers.on_sla_fact(model, fact(SlaStarted, 1), now=T0)
    (timer,) = await model.timers.of_ticket("t-1")
    assert (timer["assignment_group"], timer["assignment_sequence"]) == ("service-desk", 2)
    await follow(model, assigned("t-1", 4, "network", assignee="otto", tier="L2"))
    (timer,) = await model.timers.of_ticket("t-1")
    assert (timer["assignment_group"], timer["assignee"]) == ("network", "otto")
    await handlers.on_sla_fact(model, fact(SlaBreached, 2, status="breached"), now=T0)
    (timer,) = await model.timers.of_ticket("t-1")
    assert (timer["assignment_group"], timer["last_fact"]) == ("network", "breached")


class RacingAccess(AccessStore):
    """An assignment lands (stored, and copied onto the timers there were: none yet) right after
    the fact's handler read the ticket's assignment, and before it wrote the timer."""

    def __init__(self, database: Any, timers: TimerStore) -> None:
        super().__init__(database)
        self.timers = timers
        self.raced = False

    async def assignment(self, ticket_id: str) -> Document:
        read = await super().assignment(ticket_id)
        if not self.raced:
            self.raced = True
            await self.apply_assignment(ticket_id, 2, "network", None)
            await self.timers.assign(ticket_id, await super().assignment(ticket_id))
        return read


async def test_an_assignment_racing_the_first_timer_write_still_reaches_the_timer() -> None:
    database = InMemoryDatabase()
    timers = TimerStore(database)
    model = SlaReadModel(
        timers=timers, kpis=KpiPartialStore(database), access=RacingAccess(database, timers)
    )
    await handlers.on_sla_fact(model, fact(SlaStarted, 1), now=T0)
    (timer,) = await model.timers.of_ticket("t-1")
    assert (timer["assignment_group"], timer["assignment_sequence"]) == ("network", 2)


async def test_a_redelivered_assignment_still_updates_the_timers(model: SlaReadModel) -> None:
    """A crash between storing the assignment and copying it onto the timers: the redelivery
    is not newer, but completes the copy."""
    await handlers.on_sla_fact(model, fact(SlaStarted, 1), now=T0)
    await model.access.apply_assignment("t-1", 2, "network", "otto")  # the crash came here
    assert await follow(model, assigned("t-1", 2, "network", assignee="otto", tier="L2")) == [False]
    (timer,) = await model.timers.of_ticket("t-1")
    assert timer["assignee"] == "otto"


async def test_other_incident_events_are_ignored_and_bad_ones_refused(
    model: SlaReadModel,
) -> None:
    reply = IncidentReplied(
        incident_id="t-1", actor="ann", status="in_progress", body="hi", by_staff=True,
        first_response=True,
    )  # fmt: skip
    assert await follow(model, incident_event(reply, 4, T0)) == [False]
    with pytest.raises(PermanentEventError, match="not keyed by its incident"):
        await follow(model, replace(assigned("t-1", 2, "network"), subject="t-2"))
    with pytest.raises(PermanentEventError, match="no sequence"):
        await follow(model, assigned("t-1", 0, "network"))
    with pytest.raises(PermanentEventError, match="not keyed by its group"):
        await follow(model, replace(group_saved("network", "L2", ["otto"]), subject="desk"))


@pytest.mark.parametrize(
    ("group", "assignee", "expected"),
    [
        ("desk", None, True),
        ("network", None, False),
        ("network", "ann", True),
        (None, None, True),  # triage: ann is in an L1 group
        ("network", "otto", False),
    ],
)
def test_the_shared_reach_rule(group: str | None, assignee: str | None, expected: bool) -> None:
    reach = AgentReach.of("ann", [("desk", "L1")])
    assert reach.reaches(group, assignee) is expected
    assert AgentReach.of("ann", [("desk", "L2")]).reaches(None, None) is False
    assert AgentReach.of("ann", [], everything=True).reaches("network", None) is True
