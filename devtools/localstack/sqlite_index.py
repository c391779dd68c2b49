"""The `_id` index FerretDB 1.24's SQLite backend misses, added by a companion process.

FerretDB 1.24.2 looks documents up by `_id` with ``WHERE _ferretdb_sjson->'$._id' = ?`` (its
``IDColumn``), in finds and in the query and write of every update and delete, but builds each
collection's unique `_id` index on ``_ferretdb_sjson->"_id"``. Both mean the same path, yet
SQLite uses an expression index only for the expression it was built on, so every one of those
statements scans the whole table: an `update_one` by `_id` took 13 ms at 3,000 documents, and
grows with the collection (docs/benchmarks.md, "FerretDB pushdown").

The keeper, started beside each FerretDB on SQLite, adds a plain index on FerretDB's own
expression to every collection table it finds in the data dir, soon after FerretDB creates
the table, and FerretDB's plans become index searches (0.35 ms at 3,000). FerretDB keeps
its own catalogue of indexes (`_ferretdb_collections`), so `listIndexes` and friends do not show
it; SQLite drops it with its table. It exits when its FerretDB does.

    python -m devtools.localstack.sqlite_index --data-dir DIR --watch-pid PID
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from devtools.localstack.process import _pid_alive

# FerretDB's expression for `_id` (internal/backends/sqlite/metadata: IDColumn).
ID_PATH = "_ferretdb_sjson->'$._id'"
MODULE = "devtools.localstack.sqlite_index"  # run as `python -m MODULE`
INDEX_SUFFIX = "__itsm_id_path"
INTERVAL = 0.2
# A table's first index build must not hold FerretDB's writers for long; a busy database is
# tried again on the next round.
BUSY_TIMEOUT_MS = 200

Signature = tuple[int, ...]


def tables_without_index(conn: sqlite3.Connection) -> list[str]:
    """FerretDB's collection tables in this database that lack the `_id` path index."""
    tables = [row[0] for row in conn.execute("SELECT table_name FROM _ferretdb_collections")]
    indexed = {
        row[0]
        for row in conn.execute(
            "SELECT tbl_name FROM sqlite_master WHERE type = 'index' AND name = tbl_name || ?",
            (INDEX_SUFFIX,),
        )
    }
    return [table for table in tables if table not in indexed]


def id_lookup_plan(conn: sqlite3.Connection, table: str) -> str:
    """SQLite's plan for the statement FerretDB sends for `{_id: ...}` on a collection table:
    `SCAN ...` without the index, `SEARCH ... USING INDEX ...` with it."""
    # Table names come from FerretDB's catalogue; SQL cannot take them as parameters.
    query = f'EXPLAIN QUERY PLAN SELECT _ferretdb_sjson FROM "{table}" WHERE {ID_PATH} = ?'  # noqa: S608
    return " ".join(row[-1] for row in conn.execute(query, ('"an id"',)))


def index_database(path: Path) -> tuple[list[str], bool]:
    """Add the missing `_id` path indexes of one FerretDB database file. Returns the tables
    indexed, and False if the database was locked, gone or not yet FerretDB's (`_ferretdb_
    collections` not created yet): it is then looked at again on the next round."""
    try:
        conn = sqlite3.connect(
            f"file:{path}?mode=rw", uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000
        )
    except sqlite3.DatabaseError:
        return [], False
    indexed = []
    try:
        for table in tables_without_index(conn):
            name = f"{table}{INDEX_SUFFIX}"
            conn.execute(f'CREATE INDEX IF NOT EXISTS "{name}" ON "{table}" ({ID_PATH})')
            indexed.append(table)
    except sqlite3.DatabaseError:  # busy, or not (yet) a database of FerretDB's
        return indexed, False
    finally:
        conn.close()
    return indexed, True


def _signature(path: Path) -> Signature | None:
    """What changes whenever FerretDB writes to a database: its file's and its log's stat;
    None if the database is gone or still an empty file."""
    parts: list[int] = []
    for file in (path, path.with_name(path.name + "-wal")):
        try:
            stat = file.stat()
        except FileNotFoundError:
            continue
        parts += [stat.st_ino, stat.st_size, stat.st_mtime_ns]
    return tuple(parts) if any(parts[1::3]) else None


class IndexKeeper:
    """Watches a FerretDB data dir and indexes each database's new collection tables."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._seen: dict[Path, Signature] = {}

    def sweep(self) -> list[str]:
        """One round: look into every database written since the last round; returns the
        `database:table` names indexed."""
        indexed = []
        seen = {}
        for path in sorted(self.data_dir.glob("*.sqlite")):
            signature = _signature(path)
            if signature is None:
                continue
            if self._seen.get(path) != signature:
                tables, complete = index_database(path)
                indexed += [f"{path.name}:{table}" for table in tables]
                if not complete:
                    continue  # not remembered: looked at again next round
                # After our own write, so that it does not make the next round look again.
                signature = _signature(path) or signature
            seen[path] = signature
        self._seen = seen
        return indexed


def keep_indexed(data_dir: Path, watch_pid: int, interval: float = INTERVAL) -> None:
    """Index new collection tables in `data_dir` until process `watch_pid` (FerretDB) exits."""
    keeper = IndexKeeper(data_dir)
    while _pid_alive(watch_pid):
        try:
            for name in keeper.sweep():
                _say(f"indexed the `_id` path of {name}")
        except Exception as exc:  # a keeper that stopped would go unnoticed
            _say(f"sweep failed, trying again: {exc!r}")
        time.sleep(interval)


def _say(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)


def keeper_of(ferretdb_pid: int) -> int | None:
    """The pid of the keeper that watches this FerretDB, if one runs (found in /proc)."""
    wanted = [MODULE, "--watch-pid", str(ferretdb_pid)]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if all(arg in args for arg in wanted):
            return int(entry.name)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--watch-pid", type=int, default=os.getppid())
    parser.add_argument("--interval", type=float, default=INTERVAL)
    args = parser.parse_args(argv)
    keep_indexed(args.data_dir, args.watch_pid, args.interval)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
