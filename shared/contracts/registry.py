"""Registry of versioned event types and their JSON Schemas."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from shared.contracts.topics import Topic


class UnknownEventType(LookupError):
    pass


class EventData(BaseModel):
    """Base of every event payload. Frozen, and strict about unknown fields, so a producer
    that drifts from the contract is caught at the consumer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    topic: ClassVar[Topic]
    aggregate: ClassVar[str]


_REGISTRY: dict[str, type[EventData]] = {}

E = TypeVar("E", bound=type[EventData])


def event_type(name: str, *, topic: Topic, aggregate: str) -> Callable[[E], E]:
    """Class decorator: register a payload model under a versioned type name
    (`itsm.<aggregate>.<fact>.v<N>`)."""

    parts = name.split(".")
    if len(parts) < 4 or parts[0] != "itsm" or not parts[-1].startswith("v"):
        raise ValueError(f"event type {name!r} must look like itsm.<aggregate>.<fact>.v<N>")

    def register(cls: E) -> E:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"event type {name!r} registered twice")
        cls.event_type = name
        cls.topic = topic
        cls.aggregate = aggregate
        _REGISTRY[name] = cls
        return cls

    return register


def contract_for(type_name: str) -> type[EventData]:
    try:
        return _REGISTRY[type_name]
    except KeyError:
        raise UnknownEventType(type_name) from None


def is_registered(type_name: str) -> bool:
    return type_name in _REGISTRY


def registered_types() -> list[str]:
    return sorted(_REGISTRY)


def validate_data(type_name: str, data: Any) -> EventData:
    """Validate a payload against its registered contract; raises ValidationError."""
    return contract_for(type_name).model_validate(data)


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema (draft 2020-12) of every registered event type's `data`."""
    return {
        name: {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"urn:itsm:event:{name}",
            **cls.model_json_schema(mode="validation"),
            "x-topic": str(cls.topic),
            "x-aggregate": cls.aggregate,
        }
        for name, cls in sorted(_REGISTRY.items())
    }


__all__ = [
    "EventData",
    "UnknownEventType",
    "ValidationError",
    "contract_for",
    "event_type",
    "is_registered",
    "json_schemas",
    "registered_types",
    "validate_data",
]
