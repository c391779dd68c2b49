"""structlog JSON logging with trace ids, and secret redaction."""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog
from opentelemetry import trace

_SECRET_KEYS = re.compile(r"(password|secret|token|authorization|signing_key|api_key)", re.I)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+")


def add_trace_context(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event["trace_id"] = format(context.trace_id, "032x")
        event["span_id"] = format(context.span_id, "016x")
    return event


def redact_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if _SECRET_KEYS.search(key):
            event[key] = "[redacted]"
        elif isinstance(value, str) and "Bearer" in value:
            event[key] = _BEARER.sub(r"\1[redacted]", value)
    return event


def configure_logging(level: str = "INFO", *, json: bool = True) -> None:
    """Route structlog and the standard library's logging through one JSON renderer."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_context,
        redact_secrets,
    ]
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "pymongo", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class RepeatSummary(logging.Filter):
    """Lets through one record per level every `interval` seconds and counts the others; the
    next one let through says how many were held back. For a library that logs a state once per
    event (Faust's `producer buffer full size …`, hundreds a second under backpressure)."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self.clock = clock
        self._last: dict[int, float] = {}  # level -> when a record of it was last let through
        self._held: dict[int, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        now, level = self.clock(), record.levelno
        last = self._last.get(level)
        if last is not None and now - last < self.interval:
            self._held[level] = self._held.get(level, 0) + 1
            return False
        self._last[level] = now
        held = self._held.pop(level, 0)
        if held and last is not None:
            since = now - last
            record.msg = f"{record.getMessage()} ({held} more like it in the last {since:.0f} s)"
            record.args = ()
        return True


def summarise_repeats(logger_name: str, interval: float = 10.0) -> RepeatSummary:
    """Install a `RepeatSummary` on a library's logger (once); returns it."""
    logger = logging.getLogger(logger_name)
    for existing in logger.filters:
        if isinstance(existing, RepeatSummary):
            return existing
    summary = RepeatSummary(interval)
    logger.addFilter(summary)
    return summary
