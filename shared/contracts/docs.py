"""Generate the event documentation from the contracts: one JSON Schema per event type and an
AsyncAPI 3 document. `python -m shared.contracts.docs docs/events` (or `make schemas`); a test
fails when the committed files drift from the contracts."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from shared.contracts import Topic, json_schemas

CE_HEADERS = {
    "type": "object",
    "required": ["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_subject", "ce_sequence"],
    "properties": {
        "ce_specversion": {"const": "1.0"},
        "ce_id": {"type": "string", "description": "UUIDv7, unique per event"},
        "ce_source": {"type": "string", "description": "Producing service, e.g. /itsm/incidents"},
        "ce_type": {"type": "string", "description": "Versioned event type"},
        "ce_subject": {"type": "string", "description": "Aggregate id (also the record key)"},
        "ce_time": {"type": "string", "format": "date-time"},
        "ce_sequence": {
            "type": "string",
            "pattern": "^[0-9]+$",
            "description": "Aggregate version after this event; consumers skip <= last applied",
        },
        "content-type": {"const": "application/json"},
        "traceparent": {"type": "string", "description": "W3C trace context"},
    },
}


def asyncapi() -> dict[str, Any]:
    schemas = json_schemas()
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for topic in Topic:
        channel_id = topic.name.lower()
        names = [n for n, s in schemas.items() if s["x-topic"] == str(topic)]
        channels[channel_id] = {
            "address": str(topic),
            "description": _TOPIC_DOCS[topic],
            "messages": {n: {"$ref": f"#/components/messages/{n}"} for n in names},
        }
        if names:
            operations[f"publish_{channel_id}"] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{channel_id}"},
                "messages": [{"$ref": f"#/channels/{channel_id}/messages/{n}"} for n in names],
            }
    for name, schema in schemas.items():
        payload = {k: v for k, v in schema.items() if not k.startswith(("$", "x-"))}
        messages[name] = {
            "name": name,
            "title": schema.get("title", name),
            "contentType": "application/json",
            "headers": CE_HEADERS,
            "payload": payload,
            "bindings": {"kafka": {"key": {"type": "string"}, "bindingVersion": "0.5.0"}},
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "ITSM platform events",
            "version": "1.0.0",
            "description": "CloudEvents 1.0 in Kafka binary mode (structured mode accepted "
            "from external producers). Record key = aggregate id.",
        },
        "defaultContentType": "application/json",
        "servers": {"local": {"host": "127.0.0.1:9092", "protocol": "kafka"}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


_TOPIC_DOCS = {
    Topic.INCIDENTS: "Incident lifecycle facts, keyed by incident id.",
    Topic.CHANGES: "Change request facts, keyed by change id.",
    Topic.SLA: "SLA timer facts (started, warning, breached, met), keyed by ticket id.",
    Topic.SLA_POLICIES: "Compacted: every version of every SLA/OLA policy and business calendar, "
    "keyed policy:<id>:<version> or calendar:<id>:<version>.",
    Topic.SLA_KPIS: "Compacted: the latest snapshot of every streaming KPI partial, keyed by it.",
    Topic.NOTIFY: "Notification and escalation facts.",
    Topic.INGEST: "External producers (monitoring alerts, CI/CD, any CloudEvent).",
    Topic.DEAD_LETTER: "Records that could not be decoded or applied, with dlq-* headers.",
}


def rendered() -> dict[str, str]:
    """File name -> content of every generated document."""
    files = {f"{name}.schema.json": _dump(schema) for name, schema in json_schemas().items()}
    files["asyncapi.json"] = _dump(asyncapi())
    return files


def _dump(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    target = Path(argv[0] if argv else "docs/events")
    target.mkdir(parents=True, exist_ok=True)
    for name, content in rendered().items():
        (target / name).write_text(content)
    print(f"wrote {len(rendered())} files to {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
