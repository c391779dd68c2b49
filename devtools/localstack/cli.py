"""Command line: ``python -m devtools.localstack up|down|status|logs|env|provision``."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence

from devtools.localstack.config import (
    COMPONENT_NAMES,
    DEFAULT_TIMEOUT,
    FERRETDB,
    SQLITE,
    STOP_TIMEOUT,
    LocalstackError,
    cache_dir,
    component,
    env_vars,
    ferretdb_backend,
    ferretdb_id_index,
)
from devtools.localstack.logs import _print_logs, _say
from devtools.localstack.sqlite_index import keeper_of
from devtools.localstack.stack import down, provision, status, up

EXIT_ERROR = 1
EXIT_NOT_RUNNING = 3


def _add_components(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "components",
        nargs="*",
        metavar="COMPONENT",
        help=f"{' or '.join(COMPONENT_NAMES)} (default: all)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.localstack",
        description="Run local Kafka + FerretDB without Docker.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="provision (if needed) and start, wait until ready")
    _add_components(p_up)
    p_up.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help=f"seconds ({DEFAULT_TIMEOUT:.0f})"
    )
    p_down = sub.add_parser("down", help=f"stop (SIGTERM, SIGKILL after {STOP_TIMEOUT:.0f} s)")
    _add_components(p_down)
    p_down.add_argument("--purge", action="store_true", help="also delete the data dirs")
    p_status = sub.add_parser("status", help="show state; exit 0 if all running, else 3")
    _add_components(p_status)
    p_logs = sub.add_parser("logs", help="show the tail of the logs")
    _add_components(p_logs)
    p_logs.add_argument("-n", "--lines", type=int, default=50)
    p_logs.add_argument("-f", "--follow", action="store_true")
    p_env = sub.add_parser("env", help="print shell-sourceable connection settings")
    p_env.add_argument("--export", action="store_true", help="prefix lines with `export`")
    p_prov = sub.add_parser("provision", help="only download/build into the cache dir")
    _add_components(p_prov)
    p_secure = sub.add_parser(
        "secure", help="a second broker with SASL/SCRAM over TLS, mTLS and ACLs (secure.py)"
    )
    p_secure.add_argument("action", choices=["up", "down", "status", "env"])
    p_secure.add_argument("principal", nargs="?", default="admin", help="for env (admin)")
    p_secure.add_argument("--mtls", action="store_true", help="env: the mTLS listener")
    p_secure.add_argument("--export", action="store_true", help="env: prefix with `export`")
    p_secure.add_argument("--purge", action="store_true", help="down: delete data, CA, users")
    p_secure.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help=f"seconds ({DEFAULT_TIMEOUT:.0f})"
    )
    return parser


def _secure(args: argparse.Namespace) -> int:
    from devtools.localstack.secure import SecureBroker, iter_env

    broker = SecureBroker.default()
    if args.action == "up":
        pid = broker.up(timeout=args.timeout)
        _say(f"secured kafka: pid {pid}, SASL_SSL {broker.sasl_bootstrap}, mTLS "
             f"{broker.mtls_bootstrap}, CA {broker.ca_file}, log {broker.log_path}")  # fmt: skip
    elif args.action == "down":
        broker.down(purge=args.purge)
    elif args.action == "status":
        running = broker.running_pid()
        state = "stopped" if running is None else ("running" if broker.ready() else "not-answering")
        print(f"kafka-secure {state:<13} pid {running or '-':<8} {broker.sasl_bootstrap} "
              f"{broker.mtls_bootstrap} {broker.log_path}")  # fmt: skip
        return 0 if state == "running" else EXIT_NOT_RUNNING
    else:
        for line in iter_env(broker.env(args.principal, mtls=args.mtls), args.export):
            print(line)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit status."""
    args = _parser().parse_args(argv)
    if args.command == "secure":
        try:
            return _secure(args)
        except LocalstackError as exc:
            _say(f"error: {exc}")
            return EXIT_ERROR
    names: list[str] = list(getattr(args, "components", None) or COMPONENT_NAMES)
    try:
        if args.command == "up":
            up(names, timeout=args.timeout)
            for name in names:
                comp = component(name)
                _say(f"{comp.name}: {comp.address}  log {comp.log_path}")
        elif args.command == "down":
            down(names, purge=args.purge)
        elif args.command == "status":
            results = [status(name) for name in names]
            for st in results:
                pid = str(st.pid) if st.pid is not None else "-"
                print(f"{st.name:<9} {st.state:<13} pid {pid:<8} {st.address:<16} {st.log_path}")
                if st.name == FERRETDB and st.pid is not None and ferretdb_backend() == SQLITE:
                    print(f"          {_keeper_state(st.pid)}")
            if any(st.port_busy for st in results):
                print("* port in use by a process not managed from this state dir")
            return 0 if all(st.running for st in results) else EXIT_NOT_RUNNING
        elif args.command == "logs":
            _print_logs(names, args.lines, args.follow)
        elif args.command == "env":
            prefix = "export " if args.export else ""
            for key, value in env_vars().items():
                print(f"{prefix}{key}={shlex.quote(value)}")
        elif args.command == "provision":
            provision(names)
            _say(f"cache: {cache_dir()}")
    except LocalstackError as exc:
        _say(f"error: {exc}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    return 0


def _keeper_state(ferretdb_pid: int) -> str:
    keeper = keeper_of(ferretdb_pid)
    if keeper is not None:
        return f"_id index keeper: running, pid {keeper}"
    why = "ITSM_FERRETDB_ID_INDEX=0" if not ferretdb_id_index() else "see its log"
    return f"_id index keeper: not running ({why}); lookups by _id scan their collection"
