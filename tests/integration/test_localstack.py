"""Tests for devtools.localstack (local Kafka + FerretDB without Docker)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pymongo import MongoClient

from devtools import localstack


def test_env_prints_shell_sourceable_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_PORT", "19999")
    monkeypatch.setenv("MONGO_PORT", "28888")
    assert localstack.env_vars() == {
        "ITSM_KAFKA_BOOTSTRAP": "127.0.0.1:19999",
        "ITSM_MONGO_URL": "mongodb://127.0.0.1:28888",
    }


def test_kafka_cluster_id_format() -> None:
    cluster_id = localstack._kafka_cluster_id()
    assert len(cluster_id) == 22
    assert not cluster_id.startswith("-")


@pytest.mark.timeout(600)  # only slow if FerretDB still has to be built into the cache
def test_private_ferretdb_start_ping_stop(tmp_path: Path) -> None:
    port = localstack.free_port()
    log_path = tmp_path / "ferretdb.log"
    proc = localstack.start_ferretdb(port, tmp_path / "data", log_path, timeout=30.0)
    try:
        assert proc.poll() is None
        client: MongoClient[dict[str, object]] = MongoClient(
            "127.0.0.1", port, directConnection=True, serverSelectionTimeoutMS=5000
        )
        try:
            assert client.admin.command("ping")["ok"] == 1.0
            client["localstack_test"]["things"].insert_one({"_id": 1, "v": "x"})
            assert client["localstack_test"]["things"].find_one({"_id": 1}) == {"_id": 1, "v": "x"}
        finally:
            client.close()
    finally:
        localstack.stop_process(proc)
    assert proc.returncode is not None
    assert not localstack.ferretdb_ping(port, timeout=0.5)
    assert not localstack.port_in_use(port)
    assert log_path.is_file()


@pytest.mark.timeout(600)
def test_ferretdb_starts_past_an_empty_database_a_crash_left_and_keeps_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port, data = localstack.free_port(), tmp_path / "data"
    proc = localstack.start_ferretdb(port, data, tmp_path / "first.log", timeout=30.0)
    try:
        with MongoClient("127.0.0.1", port, directConnection=True) as client:
            client["kept"]["things"].insert_one({"_id": 1})
    finally:
        localstack.stop_process(proc)
    # What a crash while a database was being created leaves (FerretDB then exits at start
    # with "no such table: _ferretdb_collections"), and a write-ahead log whose database is
    # gone (harmless, left alone).
    (data / "bench_crashed.sqlite").touch()
    (data / "bench_crashed.sqlite-shm").touch()
    (data / "bench_gone.sqlite-wal").write_bytes(b"\0" * 4096)

    proc = localstack.start_ferretdb(port, data, tmp_path / "second.log", timeout=30.0)
    try:
        with MongoClient("127.0.0.1", port, directConnection=True) as client:
            assert client["kept"]["things"].find_one({"_id": 1}) == {"_id": 1}
    finally:
        localstack.stop_process(proc)
    assert "removed " + str(data / "bench_crashed.sqlite") in capsys.readouterr().err
    assert not (data / "bench_crashed.sqlite").exists()
    assert not (data / "bench_crashed.sqlite-shm").exists()
    assert (data / "bench_gone.sqlite-wal").exists()


@pytest.mark.infra
def test_status_reports_shared_stack_running() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devtools.localstack", "status"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines() if line}
    assert lines["kafka"] == "running"
    assert lines["ferretdb"] == "running"
    assert "_id index keeper: running, pid " in result.stdout  # FerretDB's SQLite lookups
