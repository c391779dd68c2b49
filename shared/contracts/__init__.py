"""Event contracts: the ONLY event schemas of the platform.

`Envelope` is a CloudEvents 1.0 event as the platform handles it; `EventData` subclasses are
the versioned payloads, registered by type name; `codec` maps envelopes to Kafka records in
binary or structured mode.
"""

from shared.contracts.envelope import Envelope
from shared.contracts.registry import (
    EventData,
    UnknownEventType,
    contract_for,
    event_type,
    json_schemas,
    registered_types,
)
from shared.contracts.topics import Topic

__all__ = [
    "Envelope",
    "EventData",
    "Topic",
    "UnknownEventType",
    "contract_for",
    "event_type",
    "json_schemas",
    "registered_types",
]

# Importing the contract modules registers their event types.
from shared.contracts import alerts as alerts
from shared.contracts import changes as changes
from shared.contracts import incidents as incidents
from shared.contracts import notify as notify
from shared.contracts import sla as sla
from shared.contracts import sla_kpis as sla_kpis
from shared.contracts import sla_policies as sla_policies
