"""`create_app` builds what the settings say, without touching a broker."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.sla.processor import SlaSettings, create_app, default_catalog, due_topic_name
from services.sla.processor.settings import TargetOverride
from services.sla.processor.topics import changelog_topic_name
from shared.contracts.topics import Topic

NOW = datetime(2026, 3, 2, tzinfo=UTC)


def test_the_app_follows_the_settings() -> None:
    settings = SlaSettings(
        app_id="sla-factory-test", kafka_bootstrap="k1:9092,k2:9093", topic_partitions=3
    )
    app = create_app(settings)

    assert app.conf.id == "sla-factory-test"
    assert [str(url) for url in app.conf.broker] == ["kafka://k1:9092", "kafka://k2:9093"]
    assert str(app.conf.store) == "memory:"
    assert app.conf.processing_guarantee.value == "at_least_once"
    assert app.conf.web_enabled is False
    assert app.conf.topic_partitions == 3
    topics = app.sla.topics
    assert set(topics) == {
        Topic.INCIDENTS, Topic.SLA, Topic.DEAD_LETTER, due_topic_name("sla-factory-test"),
        Topic.SLA_KPIS,
    }  # fmt: skip
    assert {t.partitions for t in topics.values()} == {3}
    assert topics[Topic.DEAD_LETTER].config == {"retention.ms": str(30 * 24 * 3600 * 1000)}
    assert app.sla.table.partitions == 3
    changelog = app.sla.table.changelog_topic.get_topic_name()
    assert (
        changelog
        == changelog_topic_name("sla-factory-test")
        == "sla-factory-test-sla-state-changelog"
    )
    assert set(app.copartitioned) == {
        Topic.INCIDENTS,
        Topic.CHANGES,
        "sla-factory-test-sla-due",
        "sla-factory-test-sla-state-changelog",
    }


def test_the_rocksdb_store_runs_on_rocksdict(tmp_path: Path) -> None:
    # rocksdict is a dependency: faust-streaming's RocksDB store uses it (python-rocksdb is gone).
    assert importlib.util.find_spec("rocksdict") is not None
    settings = SlaSettings(app_id="sla-factory-rocks", store="rocksdb://", data_dir=tmp_path)
    store = create_app(settings).sla.table.data
    assert type(store).__module__ == "faust.stores.rocksdb" and store.use_rocksdict


def test_targets_can_be_overridden_per_priority_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ITSM_SLA_TARGETS", '{"P1": {"first_response": 2}}')
    settings = SlaSettings()
    assert settings.targets == {"P1": TargetOverride(first_response=2)}

    catalog = default_catalog(settings.targets)
    p1 = catalog.sla_policy("incident", "P1", None, None, at=NOW)
    p2 = catalog.sla_policy("service_request", "P2", None, None, at=NOW)
    assert p1 is not None and p2 is not None
    assert (p1.first_response, p1.resolution) == (timedelta(seconds=2), timedelta(hours=4))
    assert (p2.first_response, p2.resolution) == (timedelta(minutes=30), timedelta(hours=8))
    assert p1.calendar.always_open
