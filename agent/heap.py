"""Freed heap handed back to the system after a one-off burst of allocations (a bundle compiled and swapped in).

glibc keeps memory freed inside its heap for the process's next allocations, and gives back
only what lies above the last block still in use. An enrolled agent's first bundle (downloaded,
unpacked and compiled, the ruleset it replaces dropped) left 6.8 MB so held by an idle agent
that would not allocate that much again until the next bundle, a seventh of its RSS (issue 22);
``malloc_trim(0)`` returns such free pages wherever they lie. Where the C library has no
``malloc_trim`` (musl, macOS, Windows) nothing is done.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Callable

_lock = threading.Lock()
_trim: Callable[[int], int] | None = None
_looked = False


def _find_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the symbols the process already has: glibc's
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_heap() -> bool:
    """Give the C heap's free pages back to the system; False where the C library cannot."""
    global _trim, _looked
    with _lock:
        if not _looked:
            _trim, _looked = _find_trim(), True
        trim = _trim
    if trim is None:
        return False
    trim(0)
    return True
