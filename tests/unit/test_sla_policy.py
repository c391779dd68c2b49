"""Policy selection: the most specific match wins, versions apply from their effective date,
ambiguous catalogs and bad targets are refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.sla.domain import (
    BusinessCalendar,
    OlaPolicy,
    PolicyCatalog,
    PolicyRef,
    SlaPolicy,
    Target,
)

H = timedelta(hours=1)
CAL = BusinessCalendar("24x7")
NOW = datetime(2026, 3, 16, 8, tzinfo=UTC)


def policy(pid: str, version: int = 1, **kwargs: Any) -> SlaPolicy:
    fields: dict[str, Any] = dict(
        name=pid, ticket_type="incident", priority="P2", calendar=CAL, first_response=H,
        resolution=8 * H,
    )  # fmt: skip
    fields.update(kwargs)
    return SlaPolicy(id=pid, version=version, **fields)


CATALOG = PolicyCatalog(
    sla=(
        policy("default"),
        policy("noc", group="noc"),
        policy("mail", service="mail"),
        policy("mail-noc", service="mail", group="noc"),
        policy("requests", ticket_type="service_request", first_response=None),
    )
)


@pytest.mark.parametrize(
    ("service", "group", "chosen"),
    [
        (None, None, "default"),
        ("web", "desk", "default"),
        (None, "noc", "noc"),
        ("mail", None, "mail"),
        ("mail", "desk", "mail"),  # the service's agreement outranks the default
        ("mail", "noc", "mail-noc"),
        ("web", "noc", "noc"),
    ],
)
def test_the_most_specific_policy_wins(service: str | None, group: str | None, chosen: str) -> None:
    found = CATALOG.sla_policy("incident", "P2", service, group, NOW)
    assert found is not None and found.id == chosen


def test_no_policy_for_an_unmatched_type_or_priority() -> None:
    assert CATALOG.sla_policy("incident", "P5", None, None, NOW) is None
    requests = CATALOG.sla_policy("service_request", "P2", None, None, NOW)
    assert requests is not None
    assert requests.target("first_response") is None  # measured on resolution only
    assert requests.target("resolution") is not None


def test_a_new_version_applies_from_its_effective_date() -> None:
    v2 = policy("default", version=2, resolution=4 * H, effective_from=NOW + 24 * H)
    catalog = PolicyCatalog(sla=(policy("default"), v2))
    before = catalog.sla_policy("incident", "P2", None, None, NOW)
    after = catalog.sla_policy("incident", "P2", None, None, NOW + 25 * H)
    assert before is not None and before.version == 1
    assert after is not None and after.version == 2
    assert catalog.version("default", 1).version == 1  # kept, to rebuild older timers
    with pytest.raises(LookupError):
        catalog.version("default", 3)


def test_first_response_never_pauses_resolution_follows_the_policy() -> None:
    p = policy("default", pause_on=frozenset({"awaiting_requester"}))
    response, resolution = p.target("first_response"), p.target("resolution")
    assert response is not None and resolution is not None
    assert not response.pauses("awaiting_requester") and not response.pauses(None)
    assert resolution.pauses("awaiting_requester") and resolution.pauses(None)
    assert not resolution.pauses("awaiting_change")


def test_ola_policy_selection() -> None:
    ola = PolicyCatalog(
        ola=(
            OlaPolicy("net", 1, "Network", "network", 4 * H, CAL),
            OlaPolicy("net-p1", 1, "Network P1", "network", H, CAL, priority="P1"),
        )
    )
    p1 = ola.ola_policy("network", "incident", "P1", NOW)
    p3 = ola.ola_policy("network", "incident", "P3", NOW)
    assert (p1.id if p1 else None, p3.id if p3 else None) == ("net-p1", "net")
    assert ola.ola_policy("database", "incident", "P1", NOW) is None


def test_ambiguous_or_duplicate_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="match the same tickets"):
        PolicyCatalog(sla=(policy("a"), policy("b")))
    with pytest.raises(ValueError, match="unique"):
        PolicyCatalog(sla=(policy("a"), policy("a", resolution=H)))


@pytest.mark.parametrize(
    ("duration", "warnings"),
    [(timedelta(0), (50,)), (H, (75, 50)), (H, (50, 50)), (H, (0,)), (H, (100,))],
)
def test_bad_targets_are_refused(duration: timedelta, warnings: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="policy p"):
        Target(PolicyRef("p", 1, "p"), duration, CAL, warnings)
