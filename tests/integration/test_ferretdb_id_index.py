"""FerretDB 1.24 on SQLite looks documents up by `_id` with an expression its own `_id` index
is not built on, so each such lookup scans the collection; the local stack's index keeper
(devtools/localstack/sqlite_index.py) gives the tables the index their lookups can use. On a
private FerretDB: without the keeper the plan is a scan, with it an index search, on data
written before it started and on collections created while it runs."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from pymongo import MongoClient

from devtools import localstack
from devtools.localstack import process
from devtools.localstack.sqlite_index import id_lookup_plan

pytestmark = pytest.mark.timeout(600)  # only slow if FerretDB still has to be built


@contextmanager
def ferretdb(tmp_path: Path, name: str) -> Iterator[tuple[MongoClient[dict[str, object]], int]]:
    port = localstack.free_port()
    proc = localstack.start_ferretdb(port, tmp_path / "data", tmp_path / f"{name}.log")
    try:
        with MongoClient("127.0.0.1", port, directConnection=True) as client:
            yield client, proc.pid
    finally:
        localstack.stop_process(proc)


def plan_of_id_lookup(data: Path, database: str, collection: str) -> str:
    """SQLite's plan for the statement FerretDB sends for `{_id: ...}` on that collection."""
    with closing(sqlite3.connect(f"file:{data / database}.sqlite?mode=ro", uri=True)) as conn:
        (table,) = conn.execute(
            "SELECT table_name FROM _ferretdb_collections WHERE name = ?", (collection,)
        ).fetchone()
        return id_lookup_plan(conn, table)


def until_indexed(data: Path, database: str, collection: str, within: float = 10.0) -> str:
    deadline = time.monotonic() + within
    while "USING INDEX" not in (plan := plan_of_id_lookup(data, database, collection)):
        if time.monotonic() > deadline:
            return plan
        time.sleep(0.05)
    return plan


def test_id_lookups_scan_without_the_keeper_and_search_an_index_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    docs = [{"_id": f"id-{i}", "n": i} for i in range(200)]
    monkeypatch.setenv("ITSM_FERRETDB_ID_INDEX", "0")
    with ferretdb(tmp_path, "as-it-comes") as (client, pid):
        assert pid not in process._COMPANIONS
        client["app"]["incidents"].insert_many(docs)
        assert plan_of_id_lookup(data, "app", "incidents").startswith("SCAN")

    monkeypatch.delenv("ITSM_FERRETDB_ID_INDEX")
    with ferretdb(tmp_path, "indexed") as (client, pid):
        (keeper,) = process._COMPANIONS[pid]
        assert "USING INDEX" in until_indexed(data, "app", "incidents")  # data from before

        client["app"]["timers"].insert_one({"_id": "id-7"})  # a collection created now
        assert "USING INDEX" in until_indexed(data, "app", "timers")
        client["app"].drop_collection("timers")
        client["app"]["timers"].insert_one({"_id": "id-7", "again": True})
        assert "USING INDEX" in until_indexed(data, "app", "timers")

        # FerretDB answers as before and does not list the index as one of the collection's.
        incidents = client["app"]["incidents"]
        incidents.update_one({"_id": "id-7"}, {"$set": {"n": -7}})
        assert incidents.find_one({"_id": "id-7"}) == {"_id": "id-7", "n": -7}
        assert incidents.count_documents({}) == 200
        assert [index["name"] for index in incidents.list_indexes()] == ["_id_"]
        assert client["app"]["timers"].find_one({"_id": "id-7"}) == {"_id": "id-7", "again": True}

    assert keeper.returncode is not None  # it ended with its FerretDB, and was reaped
    assert (
        "indexed the `_id` path of app.sqlite:" in (tmp_path / "indexed-id-index.log").read_text()
    )
