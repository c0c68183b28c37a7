"""What the agent writes is its own: files 0600 in directories 0700, whatever the umask.

The spool holds file paths and matches, the credentials a secret, the bundle the rules the
agent enforces; a manual ``dlp-agent run`` under umask 022 must not leave them readable by
every local user. Directories the agent creates are 0700; a directory that already exists
keeps its mode (it may be the folder of the configuration) unless the agent owns it outright.
On Windows, modes are the read-only flag only: the data folder's ACL (set by the installer) protects it.
"""

from __future__ import annotations

import os

FILE_MODE = 0o600
DIR_MODE = 0o700


def make_private_dir(path: str, *, tighten: bool = False) -> None:
    """Create ``path`` and any missing parents with mode 0700.

    Args:
        tighten: also set an existing ``path`` to 0700 (a directory only the agent uses).
    """
    path = os.path.abspath(path)
    missing: list[str] = []
    current = path
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            pass  # made meanwhile by another thread; the chmod below still applies
        os.chmod(directory, DIR_MODE)  # mkdir's mode goes through the umask
    if tighten and not missing:
        os.chmod(path, DIR_MODE)


def create_private_file(path: str) -> None:
    """Make sure ``path`` exists with mode 0600: created empty when missing, tightened when looser."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), FILE_MODE))
    os.chmod(path, FILE_MODE)  # os.open's mode goes through the umask, and an older file may be looser


def tighten_file(path: str) -> None:
    """Set an existing file to 0600; a missing one is no error."""
    try:
        os.chmod(path, FILE_MODE)
    except FileNotFoundError:
        pass
