"""Replacing a file all at once: a crash mid-write leaves the old file, never half of a new one."""

from __future__ import annotations

import os
import tempfile


def write_atomically(path: str, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to a temporary file beside ``path`` (created with ``mode``), sync, rename."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
