"""The C heap tuned for many YARA calls in a row (glibc's ``mallopt``; elsewhere nothing changes).

Every ``rules.match`` builds a libyara scanner whose tables grow with the rules' string count
(480 KB for 10,000 strings) and frees it on return. With glibc's defaults those tables are
mapped fresh, or the heap's top is given back and grown again, on every call: the kernel zeroes
new pages each time. With 500 rules of 20 strings an empty match cost 252 us, 32 us once freed
memory stays in the heap: 4-5 % of a scan of source files, which ``yara -p N`` does not pay (it
keeps one scanner per thread).
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 << 20
"""Larger blocks (the 16 MiB read buffers) are still mapped, and unmapped when freed."""
TRIM_THRESHOLD = 16 << 20
"""Free memory at the heap's top kept for the next call, up to this much."""


def keep_freed_memory() -> bool:
    """Make this process (and the workers it forks) reuse freed heap memory; False where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        log.debug("no mallopt: each YARA call maps its scanner's tables afresh")
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
