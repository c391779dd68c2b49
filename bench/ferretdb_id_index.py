"""FerretDB's lookups by `_id` with the local stack's index keeper, beside FerretDB as it comes.

    python -m bench.ferretdb_id_index [--sizes 100 1000 5000] [--calls 40]

Two private FerretDB 1.24.2 servers on SQLite, started side by side from the same binary on free
loopback ports: one as it comes (`ITSM_FERRETDB_ID_INDEX=0`), one with the index keeper of
devtools/localstack/sqlite_index.py. Each gets the same collection of N documents of about 2 KB
(UUID string ids, a one-entry `outbox` array, as the services write them); once the keeper has
indexed it, each operation is timed on `--calls` random ids, alternating between the servers so
that both share whatever else the machine is doing. Printed: p50 per operation with the keeper,
beside FerretDB as it comes (the baseline), and their ratio; and SQLite's plan for FerretDB's
`_id` statement on each. The servers and their data are removed at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from pymongo import MongoClient, ReturnDocument

from bench.common import Results, percentile
from devtools import localstack
from devtools.localstack.sqlite_index import id_lookup_plan

Collection = Any
OPERATIONS: dict[str, Callable[[Collection, str], object]] = {
    "find_one({_id})": lambda c, i: c.find_one({"_id": i}),
    "update_one({_id}, $set)": lambda c, i: c.update_one({"_id": i}, {"$set": {"n": -1}}),
    "update_one({_id}, $pullAll outbox) (relay removal)": lambda c, i: c.update_one(
        {"_id": i}, {"$pullAll": {"outbox": ["gone"]}}
    ),
    "find_one_and_update({_id}, $inc) (counter)": lambda c, i: c.find_one_and_update(
        {"_id": i}, {"$inc": {"n": 1}}, return_document=ReturnDocument.AFTER
    ),
    "insert_one": lambda c, i: c.insert_one({"_id": str(uuid.uuid4()), "pad": "x" * 2000}),
}


@contextmanager
def private_ferretdb(root: Path, name: str, keeper: bool) -> Iterator[tuple[Collection, Path]]:
    previous = os.environ.get("ITSM_FERRETDB_ID_INDEX")
    os.environ["ITSM_FERRETDB_ID_INDEX"] = "1" if keeper else "0"
    try:
        port = localstack.free_port()
        proc = localstack.start_ferretdb(port, root / name / "data", root / name / "ferretdb.log")
    finally:
        if previous is None:
            os.environ.pop("ITSM_FERRETDB_ID_INDEX")
        else:
            os.environ["ITSM_FERRETDB_ID_INDEX"] = previous
    try:
        client: MongoClient[dict[str, Any]]
        with MongoClient("127.0.0.1", port, directConnection=True) as client:
            yield client["bench"]["docs"], root / name / "data" / "bench.sqlite"
    finally:
        localstack.stop_process(proc)


def plan(database: Path) -> str:
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        (table,) = conn.execute("SELECT table_name FROM _ferretdb_collections").fetchone()
        return id_lookup_plan(conn, table)


def fill(collection: Collection, size: int) -> list[str]:
    collection.drop()
    ids = [str(uuid.uuid4()) for _ in range(size)]
    for start in range(0, size, 500):
        collection.insert_many(
            [
                {"_id": i, "n": 0, "outbox": [{"id": i}], "pad": "x" * 2000}
                for i in ids[start : start + 500]
            ]
        )
    return ids


def until_indexed(database: Path, within: float = 30.0) -> str:
    deadline = time.monotonic() + within
    while "USING INDEX" not in (found := plan(database)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def timed(
    operation: Callable[[Collection, str], object], collection: Collection, id_: str
) -> float:
    started = time.perf_counter()
    operation(collection, id_)
    return (time.perf_counter() - started) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--calls", type=int, default=40)
    args = parser.parse_args()
    results = Results()
    plans = []
    with tempfile.TemporaryDirectory(prefix="bench-ferretdb-id-") as tmp:
        root = Path(tmp)
        with private_ferretdb(root, "as-it-comes", keeper=False) as (plain, plain_db), \
                private_ferretdb(root, "keeper", keeper=True) as (kept, kept_db):  # fmt: skip
            for size in args.sizes:
                ids = fill(plain, size)
                fill(kept, size)
                plans.append((size, plan(plain_db), until_indexed(kept_db)))
                for name, operation in OPERATIONS.items():
                    with_keeper, as_it_comes = [], []
                    for id_ in random.choices(ids, k=args.calls):
                        as_it_comes.append(timed(operation, plain, id_))
                        with_keeper.append(timed(operation, kept, id_))
                    results.add(
                        f"{name}, {size:,} documents, p50",
                        percentile(with_keeper, 50),
                        percentile(as_it_comes, 50),
                        "ms",
                    )
    print(f"p50 of {args.calls} calls each; baseline = FerretDB as it comes, same run\n")
    print(results.table())
    print("\nSQLite's plan for FerretDB's `_id` statement (as it comes | with the keeper):")
    for size, without, with_ in plans:
        print(f"  {size:>6,} documents: {without} | {with_}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
