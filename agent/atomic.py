"""Replacing a file all at once: a crash mid-write leaves the old file, never half of a new one."""

from __future__ import annotations

import os
import tempfile

from agent.private import FILE_MODE, make_private_dir


def write_atomically(path: str, data: bytes, *, mode: int = FILE_MODE) -> None:
    """Write ``data`` to a temporary file beside ``path`` (created with ``mode``), sync, rename.

    A missing directory is created 0700 (the agent's files are its own; see agent/private.py).
    """
    directory = os.path.dirname(os.path.abspath(path))
    make_private_dir(directory)
    fd, temporary = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        if hasattr(os, "fchmod"):  # Windows: mkstemp's file is the user's alone already
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
