"""The protected-file index: hashes of the customer's own files on this machine.

A byte-identical copy of a protected file is reported even when no rule fires,
which catches binaries, images and anything else signatures cannot describe.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Iterable

from agent.scanning.walk import iter_targets

log = logging.getLogger(__name__)

DEFAULT_MIN_BYTES = 128
"""Smaller files (empty ``__init__.py``, one-line configs) are too common to mean a copy."""


class ProtectedIndex:
    """Maps sha256 -> the protected paths holding those bytes."""

    def __init__(self, entries: dict[str, list[str]] | None = None, stamps: dict[str, tuple[int, int, str]] | None = None):
        self._by_hash: dict[str, list[str]] = entries or {}
        self._stamps = stamps or {}  # path -> (size, mtime_ns, sha256), to skip rehashing unchanged files
        self.version = _version(self._by_hash)

    @classmethod
    def build(
        cls,
        roots: Iterable[str],
        *,
        exclude: Iterable[str] = (),
        min_bytes: int = DEFAULT_MIN_BYTES,
        max_bytes: int = 1 << 31,
        previous: ProtectedIndex | None = None,
    ) -> ProtectedIndex:
        """Hash every regular file under ``roots`` between the size bounds.

        With ``previous``, files whose size and mtime did not change keep their hash,
        so refreshing the index of a large repository costs a walk, not a re-read.
        """
        entries: dict[str, list[str]] = {}
        stamps: dict[str, tuple[int, int, str]] = {}
        known = previous._stamps if previous is not None else {}
        for target in iter_targets(roots, exclude=exclude):
            if target.error:
                log.warning("protected index: %s: %s", target.path, target.error)
                continue
            real = os.path.realpath(target.path)
            try:
                info = os.stat(real)
                if not stat.S_ISREG(info.st_mode) or not min_bytes <= info.st_size <= max_bytes:
                    continue
                stamp = known.get(real)
                if stamp is not None and stamp[:2] == (info.st_size, info.st_mtime_ns):
                    digest = stamp[2]
                else:
                    digest = _hash_file(real)
            except OSError as exc:
                log.warning("protected index: cannot read %s: %s", target.path, exc.strerror or exc)
                continue
            stamps[real] = (info.st_size, info.st_mtime_ns, digest)
            paths = entries.setdefault(digest, [])
            if real not in paths:
                paths.append(real)
        return cls(entries, stamps)

    def __len__(self) -> int:
        return len(self._by_hash)

    def lookup(self, sha256: str, *, exclude: str | None = None) -> str | None:
        """The protected file with these bytes, unless it is ``exclude`` itself."""
        paths = self._by_hash.get(sha256)
        if not paths:
            return None
        if exclude is None:
            return paths[0]
        own = os.path.realpath(exclude)
        for path in paths:
            if path != own:
                return path
        return None


def _hash_file(path: str) -> str:
    digest = hashlib.sha256()
    # O_NONBLOCK: a file swapped for a fifo since the stat must not hang the index.
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _version(entries: dict[str, list[str]]) -> str:
    digest = hashlib.sha256()
    for sha in sorted(entries):
        digest.update(bytes.fromhex(sha))
    return digest.hexdigest()[:16]
