"""Settings precedence, and what logs may and may not contain."""

from __future__ import annotations

import json
import logging

import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from services.incidents.main import IncidentsSettings
from shared.logs import configure_logging


def test_service_prefix_overrides_the_platform_wide_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ITSM_KAFKA_BOOTSTRAP", "kafka-a:9092")
    monkeypatch.setenv("ITSM_MONGO_URL", "mongodb://shared")
    monkeypatch.setenv("ITSM_INCIDENTS_MONGO_URL", "mongodb://incidents-only")
    settings = IncidentsSettings()
    assert settings.kafka_bootstrap == "kafka-a:9092"
    assert settings.mongo_url == "mongodb://incidents-only"


def test_secrets_are_not_printed_by_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITSM_DEV_SIGNING_KEY", "s3cret-s3cret-s3cret-s3cret-s3cret!")
    assert "s3cret" not in repr(IncidentsSettings())


def test_json_logs_carry_trace_ids_and_redact_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json=True)
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("request") as span:
        structlog.get_logger("t").info(
            "login", password="hunter2", header="Bearer abc.def.ghi", user="alice"
        )
        context = span.get_span_context()
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["event"] == "login" and line["user"] == "alice"
    assert line["trace_id"] == format(context.trace_id, "032x")
    assert line["span_id"] == format(context.span_id, "016x")
    assert line["password"] == "[redacted]" and "abc.def" not in line["header"]
    logging.getLogger().handlers.clear()
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_production_defaults_fail_closed_without_an_oidc_issuer() -> None:
    from shared.runtime import verifier_from

    with pytest.raises(ValueError, match="ITSM_OIDC_JWKS_URL"):
        verifier_from(IncidentsSettings())
