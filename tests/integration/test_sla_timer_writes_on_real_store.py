"""The SLA read model's timer documents on the real MongoDB-compatible server: a fact applied
to a timer and the ticket's assignment copied onto it at the same moment both stay. On FerretDB
every update rewrites the whole document, so an unlocked multi-document update could put a timer
back to its state before the fact (found end to end: a `missed` fact lost under an assignment
that came 25 ms after it)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.sla.store import ASSIGNMENT_SEQUENCE, TimerStore, timer_key

pytestmark = pytest.mark.infra

TICKETS = 30


async def test_a_fact_and_an_assignment_written_together_both_stay(mongo_db: Any) -> None:
    timers = TimerStore(mongo_db)
    tickets = [f"t-{n}" for n in range(TICKETS)]
    for ticket in tickets:  # breached at sequence 6, unassigned
        fields = {"ticket_id": ticket, "metric": "first_response", "last_fact": "breached"}
        assert await timers.apply(timer_key(ticket, "first_response"), 6, fields)
    assignment = {"assignment_group": "service-desk", "assignee": "ann", ASSIGNMENT_SEQUENCE: 2}

    await asyncio.gather(*(
        write
        for ticket in tickets
        for write in (
            timers.apply(
                timer_key(ticket, "first_response"), 7,
                {"ticket_id": ticket, "metric": "first_response", "last_fact": "missed"},
            ),
            timers.assign(ticket, assignment),
        )
    ))  # fmt: skip

    for ticket in tickets:
        [timer] = await timers.of_ticket(ticket)
        assert (timer["last_fact"], timer["assignee"], timer[ASSIGNMENT_SEQUENCE]) == (
            "missed", "ann", 2,
        ), ticket  # fmt: skip
    # an older assignment changes nothing
    await timers.assign(tickets[0], {**assignment, "assignee": "bob", ASSIGNMENT_SEQUENCE: 1})
    [timer] = await timers.of_ticket(tickets[0])
    assert timer["assignee"] == "ann"
