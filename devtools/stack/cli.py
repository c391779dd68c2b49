"""Command line: ``python -m devtools.stack up|down|status|logs [NAME ...]``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from devtools.localstack.cli import EXIT_ERROR, EXIT_NOT_RUNNING
from devtools.localstack.config import (
    COMPONENT_NAMES,
    DEFAULT_TIMEOUT,
    STOP_TIMEOUT,
    LocalstackError,
    component,
)
from devtools.localstack.logs import _print_log_files
from devtools.localstack.stack import Status
from devtools.stack.config import (
    ALL_NAMES,
    MAIL,
    SERVICE_NAMES,
    mail_dir,
    mail_sink_enabled,
    service,
)
from devtools.stack.processes import down, listed, say, status, up


def _add_names(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"{', '.join(ALL_NAMES)} (default: all)"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.stack",
        description="Run the platform locally: Kafka, FerretDB and every service as its own "
        "process, without Docker.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start what is not running, wait until everything answers")
    _add_names(p_up)
    p_up.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help=f"seconds ({DEFAULT_TIMEOUT:.0f})"
    )
    p_down = sub.add_parser("down", help="stop the services, then Kafka and FerretDB")
    _add_names(p_down)
    p_down.add_argument(
        "--timeout",
        type=float,
        default=STOP_TIMEOUT,
        help=f"seconds from SIGTERM to SIGKILL ({STOP_TIMEOUT:.0f})",
    )
    p_down.add_argument(
        "--purge", action="store_true", help="also delete Kafka's and FerretDB's data"
    )
    p_status = sub.add_parser("status", help="one line per process; exit 0 if all run, else 3")
    _add_names(p_status)
    p_logs = sub.add_parser("logs", help="show the tail of the logs")
    _add_names(p_logs)
    p_logs.add_argument("-n", "--lines", type=int, default=50)
    p_logs.add_argument("-f", "--follow", action="store_true")
    return parser


def _line(st: Status) -> str:
    pid = str(st.pid) if st.pid is not None else "-"
    return f"{st.name:<10} {st.state:<13} pid {pid:<8} {st.address:<26} {st.log_path}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit status."""
    args = _parser().parse_args(argv)
    names: list[str] = list(args.names or ALL_NAMES)
    try:
        if args.command == "up":
            up(names, timeout=args.timeout)
            for name in listed(names):
                print(_line(status(name)))
            if MAIL in listed(names) and mail_sink_enabled():
                print(f"mail: what notify sends lands in {mail_dir()}/")
            if any(name in SERVICE_NAMES for name in names):
                print("tokens: make token SUB=alice ROLE=agent  (signed with the stack's dev key)")
        elif args.command == "down":
            down(names, timeout=args.timeout, purge=args.purge)
        elif args.command == "status":
            results = [status(name) for name in listed(names)]
            for st in results:
                print(_line(st))
            if any(st.port_busy for st in results):
                print("* port in use by a process not managed from this state dir")
            return 0 if all(st.running for st in results) else EXIT_NOT_RUNNING
        elif args.command == "logs":
            paths: list[Path] = []
            for name in listed(names):
                if name in COMPONENT_NAMES:
                    comp = component(name)
                    paths.extend((comp.log_path, *comp.extra_logs))
                else:
                    paths.append(service(name).log_path)
            _print_log_files(paths, args.lines, args.follow)
    except LocalstackError as exc:
        say(f"error: {exc}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    return 0
