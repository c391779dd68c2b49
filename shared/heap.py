"""Giving the C heap's free pages back to the operating system.

CPython allocates objects over 512 bytes (Kafka fetch buffers, JSON documents, dict tables) with
the C allocator. glibc returns freed memory to the system only from the top of its heap, so after
a load (a recovery, a burst of events) a process keeps its peak resident set although most of it
is free. `malloc_trim(0)` releases those pages: 12.6 MiB of the SLA worker's 103 MiB of growth
after loading 50,000 tickets (docs/benchmarks.md). Elsewhere (musl, macOS) it is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from functools import cache


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)  # glibc only
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


def can_release_free_heap() -> bool:
    return _malloc_trim() is not None


def release_free_heap() -> bool:
    """Release the C heap's free pages; True if any were. Takes tens of milliseconds on a heap of
    a few hundred MiB: call it in a thread (ctypes lets go of the GIL during the call)."""
    trim = _malloc_trim()
    return trim is not None and bool(trim(0))
