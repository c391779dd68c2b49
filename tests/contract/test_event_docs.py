"""The committed event documentation matches the contracts it is generated from."""

from __future__ import annotations

import json
from pathlib import Path

from shared.contracts import registered_types
from shared.contracts.docs import asyncapi, rendered

DOCS = Path(__file__).resolve().parents[2] / "docs" / "events"


def test_committed_event_docs_are_up_to_date() -> None:
    for name, content in rendered().items():
        path = DOCS / name
        assert path.exists(), f"{path} missing: run `make schemas`"
        assert path.read_text() == content, f"{path} is stale: run `make schemas`"


def test_asyncapi_lists_every_event_type_on_its_topic() -> None:
    document = asyncapi()
    assert document["asyncapi"] == "3.0.0"
    assert set(document["components"]["messages"]) == set(registered_types())
    incidents = document["channels"]["incidents"]
    assert incidents["address"] == "itsm.incidents.events.v1"
    assert "itsm.incident.created.v1" in incidents["messages"]
    json.dumps(document)  # serialisable


def test_every_event_type_is_listed_in_the_events_page() -> None:
    page = (DOCS.parent / "events.md").read_text()
    missing = [t for t in registered_types() if f"`{t}`" not in page]
    assert not missing, f"docs/events.md does not list {missing}"
