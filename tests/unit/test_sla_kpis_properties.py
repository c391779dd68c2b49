"""Properties of the streaming KPIs (hypothesis), through the processor's own plan/apply code on
a dict table: partitioning does not change the figures, redelivery changes nothing, merging is
associative and commutative, merged plans write what the plans write one by one, figures add
field by field with nothing added changing nothing, and the sketch's quantiles are within its
stated error."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.sla.domain.kpi_partials import (
    NO_FIGURES,
    DurationStat,
    KpiFigures,
    KpiPartial,
    merge,
    summarize,
)
from services.sla.domain.kpi_sketch import RELATIVE_ACCURACY, QuantileSketch
from services.sla.domain.kpis import KpiPlan, TicketKpiView, contributions, merge_plans
from services.sla.processor.kpis import KpiRecorder, clock_key
from shared.contracts.incidents import (
    IncidentAssigned,
    IncidentCreated,
    IncidentEvent,
    IncidentRated,
    IncidentReplied,
    IncidentResolved,
)

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
TOPIC = "itsm.incidents.events.v1"


@dataclass(frozen=True)
class Step:
    ticket: str
    at: datetime
    event: IncidentEvent


def lifecycle(ticket: str, start: datetime, gaps: list[int], team: str, score: int) -> list[Step]:
    """created, assigned, replied, resolved, rated -- as many of them as `gaps` has minutes."""
    base = {"incident_id": ticket, "actor": "ann"}
    events: list[IncidentEvent] = [
        IncidentCreated(
            **base,
            status="new",
            number=ticket,
            title="t",
            requester="rita",
            impact=2,
            urgency=2,
            priority="P3",
            service="mail",
            opened_at=start,
        ),
        IncidentAssigned(
            **base,
            status="assigned",
            group=team,
            tier="L1",
            assignee=None,
            previous_group=None,
            previous_assignee=None,
            reassignment_count=0,
        ),
        IncidentReplied(
            **base, status="in_progress", body="hi", by_staff=True, first_response=True
        ),
        IncidentResolved(
            **base,
            status="resolved",
            resolution_code="fixed",
            resolution_notes="",
            resolved_at=start,
            first_contact_resolution=score > 3,
            group=team,
            tier="L1",
        ),
        IncidentRated(**base, status="resolved", score=score),
    ]
    steps, at = [], start
    for gap, event in zip([0, *gaps], events, strict=False):
        at += timedelta(minutes=gap)
        if isinstance(event, IncidentResolved):
            event = event.model_copy(update={"resolved_at": at})
        steps.append(Step(ticket, at, event))
    return steps


tickets = st.lists(
    st.tuples(
        st.integers(0, 600),  # start, minutes after T0
        st.lists(st.integers(0, 90), max_size=4),  # gaps between the lifecycle's events
        st.sampled_from(["L1-desk", "L2-mail"]),
        st.integers(1, 5),
    ),
    min_size=1,
    max_size=12,
)


def stream(spec: list[tuple[int, list[int], str, int]]) -> list[Step]:
    steps = [
        step
        for n, (start, gaps, team, score) in enumerate(spec)
        for step in lifecycle(f"INC-{n}", T0 + timedelta(minutes=start), gaps, team, score)
    ]
    return sorted(steps, key=lambda s: s.at)  # in event time: nothing is late


class Partition:
    """One source partition as the incident agent runs it: views per ticket, plans applied."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.table: dict[str, Any] = {}
        self.kpis = KpiRecorder(self.table)
        self.views: dict[str, TicketKpiView | None] = {}
        self.log: list[Step] = []

    def append(self, step: Step) -> None:
        self.log.append(step)
        self.process(len(self.log) - 1)

    def process(self, offset: int) -> None:
        step = self.log[offset]
        if self.kpis.already_applied(TOPIC, self.number, offset):
            return  # as the processor: the ticket's state says duplicate
        view, items = contributions(self.views.get(step.ticket), step.event, step.at)
        self.views[step.ticket] = view
        self.kpis.apply(self.kpis.plan(TOPIC, self.number, offset, items, seen=step.at))

    def partials(self) -> list[KpiPartial]:
        return [KpiPartial.from_document(v) for k, v in self.table.items() if k.startswith("kpi|")]


def run(steps: list[Step], partitions: int) -> list[Partition]:
    parts = [Partition(n) for n in range(partitions)]
    for step in steps:
        parts[int(step.ticket.split("-")[1]) % partitions].append(step)
    return parts


def summaries(parts: list[Partition]) -> dict[str, Any]:
    every = [p for part in parts for p in part.partials()]
    out = {}
    for granularity in ("hour", "day"):
        summary = summarize([p for p in every if p.granularity == granularity]).to_dict()
        summary.pop("partials")  # how many partials there are depends on the split
        out[granularity] = summary
    return out


@settings(max_examples=60, deadline=None)
@given(tickets, st.integers(2, 5))
def test_splitting_the_stream_across_partitions_gives_the_same_figures(
    spec: list[Any], partitions: int
) -> None:
    steps = stream(spec)
    assert summaries(run(steps, partitions)) == summaries(run(steps, 1))


@settings(max_examples=60, deadline=None)
@given(tickets, st.data())
def test_redelivering_any_prefix_changes_nothing(spec: list[Any], data: st.DataObject) -> None:
    [part] = run(stream(spec), 1)
    before = dict(part.table)
    upto = data.draw(st.integers(0, len(part.log)))
    for offset in range(upto):
        part.process(offset)
    assert part.table == before


@settings(max_examples=60, deadline=None)
@given(tickets, st.randoms(use_true_random=False))
def test_merging_is_associative_and_commutative(spec: list[Any], rnd: random.Random) -> None:
    partials = [p for p in run(stream(spec), 3)[0].partials() if p.granularity == "hour"]
    partials += [p for p in run(stream(spec), 3)[1].partials() if p.granularity == "hour"]
    shuffled = partials[:]
    rnd.shuffle(shuffled)
    assert summarize(shuffled) == summarize(partials)
    cut = rnd.randint(0, len(partials))
    left, right = merge(partials[:cut]), merge(partials[cut:])
    assert left + right == right + left == merge(partials)


def plans_from_one_table(steps: list[Step]) -> list[KpiPlan]:
    """One plan per step, all planned against the same table, as a due record's tickets are."""
    recorder, views = KpiRecorder({}), dict[str, TicketKpiView | None]()
    plans = []
    for offset, step in enumerate(steps):
        views[step.ticket], items = contributions(views.get(step.ticket), step.event, step.at)
        plans.append(recorder.plan(TOPIC, 0, offset, items, seen=step.at))
    return plans


@settings(max_examples=60, deadline=None)
@given(tickets)
def test_a_merged_plan_writes_what_its_plans_write_one_by_one(spec: list[Any]) -> None:
    plans = plans_from_one_table(stream(spec))
    one_by_one, merged = dict[str, Any](), dict[str, Any]()
    for each in plans:
        KpiRecorder(one_by_one).apply(each)
    KpiRecorder(merged).apply(merge_plans(plans))

    def entries(table: dict[str, Any]) -> dict[str, Any]:
        # a partial's watermark is the last offset that wrote it, the merged plan's for all
        return {key: {**value, "watermark": None} for key, value in table.items()}

    assert entries(merged) == entries(one_by_one)
    assert merged[clock_key(TOPIC, 0)]["watermark"] == plans[-1].offset
    assert all(KpiRecorder(merged).already_applied(TOPIC, 0, p.offset) for p in plans)


COUNTS = ("opened", "resolved", "reopened", "csat_count", "csat_sum", "breaches", "late_events")
figures_of = st.builds(
    lambda counts, durations: KpiFigures(
        **counts, first_response=sum(map(DurationStat.of, durations), DurationStat())
    ),
    st.dictionaries(st.sampled_from(COUNTS), st.integers(0, 50)),
    st.lists(st.floats(0, 1e6, allow_nan=False), max_size=3),
)


@given(figures_of, figures_of)
def test_figures_add_field_by_field_and_no_figures_change_nothing(
    a: KpiFigures, b: KpiFigures
) -> None:
    total = a + b
    for name in COUNTS:
        assert getattr(total, name) == getattr(a, name) + getattr(b, name)
    assert total.first_response.count == a.first_response.count + b.first_response.count
    assert total.first_response.total == a.first_response.total + b.first_response.total
    # the shared empty figures are skipped, an equal fresh one is added: the same result
    for nothing in (NO_FIGURES, KpiFigures()):
        assert a + nothing == a and nothing + a == a


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(st.floats(0.001, 10**7, allow_nan=False), st.just(0.0)), min_size=1, max_size=300
    ),
    st.floats(0, 1),
)
def test_sketch_quantiles_are_within_the_stated_error(values: list[float], q: float) -> None:
    half = len(values) // 2
    sketch = QuantileSketch.of(values[:half]).merge(QuantileSketch.of(values[half:]))
    exact = sorted(values)[math.floor(q * (len(values) - 1))]
    estimate = sketch.quantile(q)
    assert estimate is not None
    assert abs(estimate - exact) <= RELATIVE_ACCURACY * exact + 1e-9
    assert sketch.count == len(values)
