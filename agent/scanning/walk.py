"""Which paths a scan of some roots visits, like ``grep -r``.

Directories given on the command line are followed even when they are symbolic
links; inside a tree, links to directories are not (no loops), while links to
files, fifos and devices are yielded so the scanner can give them a status.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
from collections.abc import Iterable, Iterator


@dataclasses.dataclass(frozen=True)
class Target:
    """A path to scan, or one that could not be listed (``error`` set)."""

    path: str
    error: str | None = None


def iter_targets(roots: Iterable[str], *, exclude: Iterable[str] = ()) -> Iterator[Target]:
    """Every file under ``roots`` in a stable order, minus ``exclude`` globs.

    A glob matches the full path (``**/.git/**``) or a single name (``*.o``).
    """
    patterns = tuple(exclude)
    for root in roots:
        if os.path.isdir(root):
            yield from _walk(root, patterns)
        elif not matches_any(root, patterns):
            yield Target(root)


def _walk(root: str, patterns: tuple[str, ...]) -> Iterator[Target]:
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            yield Target(directory, error=f"cannot list directory: {exc.strerror or exc}")
            continue
        subdirs = []
        for entry in entries:
            if matches_any(entry.path, patterns):
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir:
                subdirs.append(entry.path)
            else:
                yield Target(entry.path)
        stack.extend(reversed(subdirs))


def matches_any(path: str, patterns: tuple[str, ...]) -> bool:
    """Whether ``path`` (or its name) matches one of the exclude globs."""
    if not patterns:
        return False
    name = os.path.basename(path)
    for pattern in patterns:
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(name, pattern):
            return True
        # "**/x/**" should also exclude the directory x itself.
        if pattern.endswith("/**") and fnmatch.fnmatch(path, pattern[:-3]):
            return True
    return False
