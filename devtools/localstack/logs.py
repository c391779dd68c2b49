"""Console output and log files: status messages, log tails, following logs."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from devtools.localstack.config import POLL_INTERVAL, component


def _say(message: str) -> None:
    print(f"localstack: {message}", file=sys.stderr, flush=True)


def tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a text file ('' if it does not exist)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 256 * 1024))
            data = handle.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def _print_log_tails(paths: Sequence[Path], lines: int = 40) -> None:
    for path in paths:
        text = tail(path, lines)
        if text:
            print(f"----- tail of {path} -----\n{text}\n-----", file=sys.stderr, flush=True)


def _print_logs(names: Sequence[str], lines: int, follow: bool) -> None:
    """The `logs` command: tail the components' logs, then keep printing new output if `follow`."""
    paths: list[Path] = []
    for name in names:
        comp = component(name)
        paths.extend((comp.log_path, *comp.extra_logs))
    _print_log_files(paths, lines, follow)


def _print_log_files(paths: Sequence[Path], lines: int, follow: bool) -> None:
    """Tail each log file, then keep printing new output if `follow` (until Ctrl-C)."""
    paths = [p for p in paths if p.exists() or not follow]
    for path in paths:
        print(f"==> {path} <==")
        print(tail(path, lines) if path.exists() else "(no log yet)")
    if not follow:
        return
    handles: list[tuple[Path, IO[bytes]]] = []
    try:
        for path in paths:
            reader: IO[bytes] = path.open("rb")
            reader.seek(0, os.SEEK_END)
            handles.append((path, reader))
        current: Path | None = None
        while True:
            for path, handle in handles:
                data = handle.read()
                if data:
                    if current != path and len(handles) > 1:
                        print(f"\n==> {path} <==")
                    current = path
                    sys.stdout.write(data.decode("utf-8", errors="replace"))
                    sys.stdout.flush()
            time.sleep(POLL_INTERVAL)
    except KeyboardInterrupt:
        pass
    finally:
        for _, opened in handles:
            opened.close()
