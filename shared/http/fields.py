"""Field types the services' HTTP models share."""

from __future__ import annotations

from datetime import time
from typing import Annotated, Any, TypeVar

from pydantic import WithJsonSchema

T = TypeVar("T")

# A wall-clock time in a named zone (a handoff, quiet hours, a maintenance window): "22:00" in,
# "22:00:00" out. JSON Schema's `format: time` is RFC 3339's full-time, which needs an offset, so
# the schema says what is really exchanged; an offset sent anyway is accepted and ignored.
LocalTime = Annotated[
    time,
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?"
            r"(Z|[+-][0-9]{2}:[0-9]{2})?$",
            "description": "Local wall-clock time, HH:MM or HH:MM:SS",
            "examples": ["22:00"],
        }
    ),
]


def refuse_null(value: T) -> T:
    """A `mode="before"` validator for partial updates (PATCH): a field may be left out, which
    keeps it, but not set to null when it has no empty value (a null title once reached the
    store, and every later read of the incident failed)."""
    if value is None:
        raise ValueError("may be left out, but not set to null")
    return value


def without_default(schema: dict[str, Any]) -> None:
    """`json_schema_extra` of such a field: its `None` default means "unchanged", not a value
    a client may send."""
    schema.pop("default", None)
