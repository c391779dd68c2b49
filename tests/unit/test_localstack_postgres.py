"""devtools.localstack with FerretDB on PostgreSQL (``ITSM_FERRETDB_BACKEND=postgresql``): the
settings, the command lines, and real PostgreSQL + FerretDB servers on free ports (the installed
PostgreSQL server programs are required: these tests fail, not skip, without them)."""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from pymongo import MongoClient

from devtools import localstack
from devtools.localstack.postgres import PostgresCluster, _check_reachable, _server_user

BIN = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture(autouse=True)
def private_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ITSM_STATE_DIR", str(tmp_path / "state"))
    for name in ("ITSM_FERRETDB_BACKEND", "ITSM_POSTGRES_PORT", "ITSM_POSTGRES_BIN", "MONGO_PORT"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "state"


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A scratch dir the `postgres` account can enter when the tests run as root (pytest's own
    tmp dirs are 0700)."""
    base = Path(tempfile.mkdtemp(prefix="localstack-pg-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_sqlite_stays_the_default_and_its_component_is_unchanged(
    monkeypatch: pytest.MonkeyPatch, private_state: Path
) -> None:
    assert localstack.ferretdb_backend() == "sqlite"
    monkeypatch.setenv("ITSM_FERRETDB_BACKEND", " ")
    assert localstack.ferretdb_backend() == "sqlite"
    comp = localstack.component("ferretdb")
    assert comp.data_dirs == (private_state / "ferretdb-data", private_state / "ferretdb-state")
    assert comp.extra_logs == (private_state / "logs" / "ferretdb-id-index.log",)  # its keeper


@pytest.mark.parametrize(("raw", "backend"), [("postgresql", "postgresql"), (" PostgreSQL ", "postgresql"), ("sqlite", "sqlite")])  # fmt: skip
def test_the_backend_setting_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, raw: str, backend: str
) -> None:
    monkeypatch.setenv("ITSM_FERRETDB_BACKEND", raw)
    assert localstack.ferretdb_backend() == backend


@pytest.mark.parametrize("raw", ["postgres", "mysql", "sqlite3"])
def test_an_unknown_backend_is_refused(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("ITSM_FERRETDB_BACKEND", raw)
    with pytest.raises(localstack.LocalstackError, match=f"ITSM_FERRETDB_BACKEND='{raw}' is not one of sqlite, postgresql"):  # fmt: skip
        localstack.component("ferretdb")


def test_the_postgres_port_is_5433_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert localstack.postgres_port() == 5433
    monkeypatch.setenv("ITSM_POSTGRES_PORT", "25433")
    assert localstack.postgres_port() == 25433
    for bad in ("x", "70000"):
        monkeypatch.setenv("ITSM_POSTGRES_PORT", bad)
        with pytest.raises(localstack.LocalstackError, match="ITSM_POSTGRES_PORT"):
            localstack.postgres_port()


def test_on_postgresql_the_ferretdb_component_includes_the_cluster(
    monkeypatch: pytest.MonkeyPatch, private_state: Path
) -> None:
    monkeypatch.setenv("ITSM_FERRETDB_BACKEND", "postgresql")
    monkeypatch.setenv("ITSM_POSTGRES_PORT", "25433")
    comp = localstack.component("ferretdb")
    assert comp.data_dirs == (private_state / "ferretdb-data", private_state / "ferretdb-state", private_state / "postgres")  # fmt: skip
    assert comp.extra_logs == (private_state / "logs" / "postgres.log",)
    cluster = PostgresCluster.default()
    assert (cluster.home, cluster.port, cluster.log) == (private_state / "postgres", 25433, private_state / "logs" / "postgres.log")  # fmt: skip
    assert cluster.data_dir == private_state.resolve() / "postgres" / "data"
    assert cluster.url == "postgres://postgres@127.0.0.1:25433/ferretdb"


def test_ferretdb_command_line_per_backend(tmp_path: Path) -> None:
    binary = Path("/opt/ferretdb")
    common = ["--listen-addr=127.0.0.1:27217", "--debug-addr=-", "--telemetry=disable", f"--state-dir={tmp_path}/state", "--log-level=WARN", "--log-format=text"]  # fmt: skip
    sqlite = localstack.ferretdb_command(27217, tmp_path / "data", tmp_path / "state", binary=binary)  # fmt: skip
    assert sqlite == ["/opt/ferretdb", "--handler=sqlite", f"--sqlite-url=file:{tmp_path}/data/", *common]  # fmt: skip
    url = "postgres://postgres@127.0.0.1:25433/ferretdb"
    on_pg = localstack.ferretdb_command(27217, tmp_path / "data", tmp_path / "state", binary=binary, postgresql_url=url)  # fmt: skip
    assert on_pg == ["/opt/ferretdb", "--handler=postgresql", f"--postgresql-url={url}", *common]


def test_cluster_command_lines(tmp_path: Path) -> None:
    cluster = PostgresCluster(tmp_path / "my pg", 25433)  # a space: pg_ctl passes options via sh
    data = tmp_path.resolve() / "my pg" / "data"
    assert cluster.initdb_command(BIN) == [f"{BIN}/initdb", f"--pgdata={data}", "--username=postgres", "--auth=trust", "--encoding=UTF8", "--no-locale"]  # fmt: skip
    start = cluster.start_command(BIN, timeout=20)
    assert start[:5] == [f"{BIN}/pg_ctl", "start", "--wait", "--timeout=20", f"--pgdata={data}"]
    assert start[5].startswith("--options=")
    assert shlex.split(start[5].removeprefix("--options=")) == ["--port=25433", "--listen_addresses=127.0.0.1", f"--unix_socket_directories={data.parent}/socket", "--unix_socket_permissions=0700"]  # fmt: skip
    assert cluster.stop_command(BIN) == [f"{BIN}/pg_ctl", "stop", "--wait", "--timeout=30", "--mode=fast", f"--pgdata={data}"]  # fmt: skip
    assert cluster.log == tmp_path / "my pg" / "postgres.log"


def test_the_server_programs_are_looked_up(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for program in ("initdb", "pg_ctl", "postgres"):
        (tmp_path / program).touch()
    monkeypatch.setenv("ITSM_POSTGRES_BIN", str(tmp_path))
    with pytest.raises(localstack.LocalstackError, match=r"not found in .*ITSM_POSTGRES_BIN"):
        localstack.postgres_bin_dir()
    (tmp_path / "psql").touch()
    assert localstack.postgres_bin_dir() == tmp_path
    monkeypatch.delenv("ITSM_POSTGRES_BIN")
    assert (localstack.postgres_bin_dir() / "pg_ctl").is_file()  # this machine's: required


def test_as_root_the_server_programs_run_as_the_postgres_account(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    accounts = {"postgres": SimpleNamespace(pw_uid=4242, pw_gid=4242)}

    def getpwnam(name: str) -> SimpleNamespace:
        return accounts[name]

    monkeypatch.setattr("pwd.getpwnam", getpwnam)
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert _server_user() is None
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert _server_user() == "postgres"
    (tmp_path / "closed" / "pg").mkdir(parents=True)
    (tmp_path / "closed").chmod(0o700)
    with pytest.raises(localstack.LocalstackError, match=r"'postgres', which cannot enter .*closed \(mode drwx------\)"):  # fmt: skip
        _check_reachable(tmp_path / "closed" / "pg" / "data", "postgres")
    del accounts["postgres"]
    with pytest.raises(localstack.LocalstackError, match="refuses to run as root"):
        _server_user()


def test_a_busy_port_is_refused_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cluster = PostgresCluster(tmp_path / "pg", busy.getsockname()[1])
        with pytest.raises(localstack.LocalstackError, match=r"already in use .* ITSM_POSTGRES_PORT"):  # fmt: skip
            cluster.check_startable()
    assert not (tmp_path / "pg").exists()


def test_stopping_ferretdb_on_sqlite_touches_no_postgresql(private_state: Path) -> None:
    assert PostgresCluster(private_state / "postgres").stop() is False
    assert localstack.stop("ferretdb") is False
    assert not (private_state / "postgres").exists()


@pytest.mark.timeout(60)
def test_up_and_down_run_ferretdb_on_a_private_postgresql(
    monkeypatch: pytest.MonkeyPatch, reachable_dir: Path
) -> None:
    state = reachable_dir / "state"
    monkeypatch.setenv("ITSM_STATE_DIR", str(state))
    monkeypatch.setenv("ITSM_FERRETDB_BACKEND", "postgresql")
    monkeypatch.setenv("ITSM_POSTGRES_PORT", str(localstack.free_port()))
    monkeypatch.setenv("MONGO_PORT", str(localstack.free_port()))
    cluster = PostgresCluster.default()
    localstack.up(["ferretdb"], timeout=30)
    try:
        pid = cluster.running_pid()
        assert pid is not None
        client: MongoClient[dict[str, object]] = MongoClient(localstack.mongo_url(), directConnection=True, serverSelectionTimeoutMS=5000)  # fmt: skip
        try:
            things = client["localstack_pg"]["things"]
            things.insert_one({"_id": "a", "v": 1, "tags": ["x"]})
            assert things.find_one({"_id": "a"}) == {"_id": "a", "v": 1, "tags": ["x"]}
            assert things.update_one({"_id": "a"}, {"$set": {"v": 2}}).modified_count == 1
            assert things.find_one({"_id": "a"}) == {"_id": "a", "v": 2, "tags": ["x"]}
            explained = client["localstack_pg"].command("explain", {"find": "things", "filter": {"_id": "a"}})  # fmt: skip
            assert explained["filterPushdown"] is True
        finally:
            client.close()
        tables = subprocess.run(
            [str(localstack.postgres_bin_dir() / "psql"), "-X", "-A", "-t", "-h", "127.0.0.1",
             "-p", str(cluster.port), "-U", "postgres", "-d", "ferretdb", "-c",
             "SELECT count(*) FROM pg_tables WHERE schemaname = 'localstack_pg'"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert int(tables.stdout) >= 2  # the collection's table and FerretDB's metadata table
        assert cluster.start() == pid  # already running: left alone
        localstack.down(["ferretdb"], purge=True)
        assert cluster.running_pid() is None
        assert not localstack.port_in_use(cluster.port)
        assert not (state / "postgres").exists()
    finally:
        localstack.down(["ferretdb"])
        cluster.stop()


@pytest.mark.timeout(60)
def test_a_private_ferretdb_on_its_own_postgresql(reachable_dir: Path) -> None:
    cluster = PostgresCluster(reachable_dir / "pg", localstack.free_port())
    cluster.start(timeout=30)
    try:
        assert (reachable_dir / "pg" / "postgres.log").is_file()
        port = localstack.free_port()
        proc = localstack.start_ferretdb(port, reachable_dir / "data", reachable_dir / "ferretdb.log", postgresql_url=cluster.url)  # fmt: skip
        try:
            client: MongoClient[dict[str, object]] = MongoClient("127.0.0.1", port, directConnection=True, serverSelectionTimeoutMS=5000)  # fmt: skip
            try:
                client["db"]["c"].insert_many([{"_id": i} for i in range(3)])
                assert client["db"]["c"].count_documents({}) == 3
            finally:
                client.close()
        finally:
            localstack.stop_process(proc)
        assert not (reachable_dir / "data").exists()  # SQLite's dir: not made on PostgreSQL
    finally:
        assert cluster.stop() is True
    assert cluster.running_pid() is None
