"""`shared.heap.release_free_heap` on this machine's glibc: pages freed in the middle of the C
heap stay resident until it runs, and it gives them back. The SLA worker's timer setting."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from services.sla.processor.settings import SlaSettings
from shared.heap import can_release_free_heap, release_free_heap

MIB = 2**20


def resident() -> int:
    pages = int(open("/proc/self/statm").read().split()[1])  # noqa: SIM115 -- one read
    return pages * os.sysconf("SC_PAGE_SIZE")


def test_free_pages_inside_the_heap_go_back_to_the_system() -> None:
    assert can_release_free_heap()  # Linux with glibc, as in the images and CI
    freed: list[bytes] = []
    kept: list[bytes] = []  # between the freed blocks, so glibc cannot trim them off the top
    for i in range(40_000):  # 4,000-byte objects: the C allocator's heap, not Python's arenas
        freed.append(bytes(bytearray(4000)))
        if i % 16 == 0:
            kept.append(bytes(bytearray(4000)))
    del freed
    before = resident()

    assert release_free_heap()

    after = resident()
    assert before - after > 100 * MIB, (before / MIB, after / MIB)
    assert len(kept) == 2500


def test_the_worker_trims_every_ten_seconds_unless_told_not_to() -> None:
    assert SlaSettings().heap_trim_interval == 10.0
    assert SlaSettings(heap_trim_interval=0).heap_trim_interval == 0
    with pytest.raises(ValidationError, match="heap_trim_interval"):
        SlaSettings(heap_trim_interval=-1)
