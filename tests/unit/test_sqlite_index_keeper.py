"""The `_id` index keeper of FerretDB's SQLite files (devtools/localstack/sqlite_index.py), on
database files shaped like FerretDB 1.24's; the real FerretDB is in
tests/integration/test_ferretdb_id_index.py."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from devtools.localstack.sqlite_index import IndexKeeper, id_lookup_plan


def ferretdb_database(path: Path, *tables: str) -> None:
    """A database as FerretDB 1.24 makes it: its catalogue, and per collection a table with
    the unique index on the expression its lookups do not use."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS _ferretdb_collections "
            "(name TEXT NOT NULL UNIQUE, table_name TEXT NOT NULL UNIQUE, settings TEXT NOT NULL)"
        )
        for table in tables:
            conn.execute(f'CREATE TABLE "{table}" (_ferretdb_sjson TEXT NOT NULL) STRICT')
            conn.execute(
                f'CREATE UNIQUE INDEX "{table}__id_" ON "{table}" (_ferretdb_sjson->"_id")'
            )
            conn.execute(
                "INSERT INTO _ferretdb_collections VALUES (?, ?, '{}')",
                (table.split("_")[0], table),
            )
            conn.executemany(
                f'INSERT INTO "{table}" VALUES (?)',  # noqa: S608 (a table name)
                [(f'{{"_id": "id-{i}"}}',) for i in range(50)],
            )


def plan_of_id_lookup(path: Path, table: str) -> str:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return id_lookup_plan(conn, table)


def test_a_collection_table_is_scanned_until_the_keeper_indexes_it(tmp_path: Path) -> None:
    database = tmp_path / "app.sqlite"
    ferretdb_database(database, "incidents_1a2b", "outbox_3c4d")
    assert plan_of_id_lookup(database, "incidents_1a2b").startswith("SCAN")

    indexed = IndexKeeper(tmp_path).sweep()

    assert sorted(indexed) == ["app.sqlite:incidents_1a2b", "app.sqlite:outbox_3c4d"]
    for table in ("incidents_1a2b", "outbox_3c4d"):
        assert "USING INDEX " + table + "__itsm_id_path" in plan_of_id_lookup(database, table)


def test_a_table_created_later_is_indexed_on_a_later_round(tmp_path: Path) -> None:
    database = tmp_path / "app.sqlite"
    ferretdb_database(database, "incidents_1a2b")
    keeper = IndexKeeper(tmp_path)
    keeper.sweep()

    assert keeper.sweep() == []  # nothing new
    ferretdb_database(database, "changes_5e6f")
    ferretdb_database(tmp_path / "other.sqlite", "timers_7a8b")

    assert sorted(keeper.sweep()) == ["app.sqlite:changes_5e6f", "other.sqlite:timers_7a8b"]


def test_a_busy_database_is_indexed_once_it_is_free(tmp_path: Path) -> None:
    database = tmp_path / "app.sqlite"
    ferretdb_database(database, "incidents_1a2b")
    keeper = IndexKeeper(tmp_path)
    with closing(sqlite3.connect(database, isolation_level=None)) as writer:
        writer.execute("BEGIN IMMEDIATE")  # FerretDB in the middle of a write

        assert keeper.sweep() == []

        writer.execute("COMMIT")
    # Nothing was written since: only the failed round makes the keeper look again.
    assert keeper.sweep() == ["app.sqlite:incidents_1a2b"]


def test_files_that_are_not_yet_ferretdb_databases_are_left_alone(tmp_path: Path) -> None:
    (tmp_path / "creating.sqlite").touch()  # FerretDB creating a database: still empty
    with closing(sqlite3.connect(tmp_path / "half.sqlite")) as conn:
        conn.execute("CREATE TABLE t (x)")  # written, but its catalogue not created yet

    keeper = IndexKeeper(tmp_path)

    assert keeper.sweep() == []
    assert (tmp_path / "creating.sqlite").stat().st_size == 0
    ferretdb_database(tmp_path / "half.sqlite", "incidents_1a2b")
    assert keeper.sweep() == ["half.sqlite:incidents_1a2b"]


def test_a_file_that_is_not_a_database_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "torn.sqlite").write_bytes(b"not a database, " * 512)
    ferretdb_database(tmp_path / "app.sqlite", "incidents_1a2b")

    assert IndexKeeper(tmp_path).sweep() == ["app.sqlite:incidents_1a2b"]
