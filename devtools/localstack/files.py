"""Filesystem primitives: advisory locks, forced deletion, atomically built cache dirs."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from devtools.localstack.logs import _say

COMPLETE_MARKER = ".complete"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock (serialises concurrent `up`/provisioning across processes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(f"waiting for lock {path} (another localstack run is busy)")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _make_writable(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for entry in (dirpath, *(os.path.join(dirpath, n) for n in (*dirnames, *filenames))):
            with contextlib.suppress(OSError):
                if not os.path.islink(entry):
                    os.chmod(entry, os.stat(entry).st_mode | 0o200)


def _rmtree(path: Path) -> None:
    if path.exists() or path.is_symlink():
        _make_writable(path)
        shutil.rmtree(path)


def _is_complete(path: Path) -> bool:
    """True if `path` was fully built by _atomic_build()."""
    return (path / COMPLETE_MARKER).is_file()


def _atomic_build(final: Path, build: Callable[[Path], None]) -> Path:
    """Build into a temporary sibling of `final`, mark it complete, then rename it into place."""
    if _is_complete(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(final.parent / f".{final.name}.lock"):
        if _is_complete(final):  # somebody else finished it while we waited for the lock
            return final
        if final.exists():
            _say(f"removing incomplete {final}")
            _rmtree(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
        tmp.chmod(0o755)
        try:
            build(tmp)
            (tmp / COMPLETE_MARKER).write_text(time.strftime("%Y-%m-%dT%H:%M:%S%z\n"))
            os.rename(tmp, final)
        except BaseException:
            _rmtree(tmp)
            raise
    return final
