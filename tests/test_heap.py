"""agent.heap.release_free_heap gives freed heap back to the system (glibc's malloc_trim)."""

from __future__ import annotations

import sys

import pytest

from agent.heap import release_free_heap

CHUNKS = 40_000
"""Small blocks (glibc serves them from the heap, not from mmap) worth about 40 MB."""


def resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 1e6


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_heap_below_a_live_block_goes_back() -> None:
    blocks = [bytearray(1000) for _ in range(CHUNKS)]
    pin = bytearray(1000)  # allocated last, above the rest: freeing them leaves the heap's top in use
    del blocks
    kept = resident_mb()
    assert release_free_heap() is True
    returned = kept - resident_mb()
    assert returned > 0.5 * CHUNKS * 1000 / 1e6, f"{returned:.1f} MB of about {CHUNKS * 1000 / 1e6:.0f} MB freed went back"
    assert len(pin) == 1000
