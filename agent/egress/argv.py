"""Reading a started program's argv: bounds, paths, and options the way the programs read them.

Shared by agent/egress/commands.py (git) and agent/egress/uploads.py (upload tools). Every
argument is hostile: argv beyond MAX_ARGS or MAX_ARGV_BYTES is not read at all.
"""

from __future__ import annotations

import os
import posixpath
import shlex
from collections.abc import Collection, Sequence

MAX_ARGS = 4096
MAX_ARGV_BYTES = 256 << 10
MAX_COMMAND = 64 << 10
"""Longest shell command string (``sh -c``, ssh's remote command) split with shlex."""


def usable(argv: Sequence[str]) -> bool:
    if not argv or len(argv) > MAX_ARGS:
        return False
    total = 0
    for arg in argv:
        if not isinstance(arg, str):
            return False
        total += len(arg)
        if total > MAX_ARGV_BYTES:
            return False
    return True


def base(arg0: str) -> str:
    return arg0.rpartition("/")[2]


def join(cwd: str | None, path: str) -> str | None:
    """``path`` made absolute against ``cwd`` (None when that is impossible or the path is unusable)."""
    if not path or "\x00" in path:
        return None
    if not path.startswith("/"):
        if cwd is None or not cwd.startswith("/"):
            return None
        path = os.path.join(cwd, path)
    return posixpath.normpath(path)


class Options:
    """A command's options: which take a value (short letters, long names); the rest are flags.

    Long options may be abbreviated to a unique prefix (git's parse-options allows it)."""

    def __init__(self, short_values: str, long_values: Collection[str], long_flags: Collection[str] = (), *, prefixes: bool = False) -> None:
        self.short_values = frozenset(short_values)
        self.long_values = frozenset(long_values)
        self.long_names = tuple(sorted(self.long_values | frozenset(long_flags)))
        self.prefixes = prefixes

    def long_takes_value(self, name: str) -> bool:
        if name in self.long_values:
            return True
        if not self.prefixes or name in self.long_names:
            return False
        matches = [known for known in self.long_names if known.startswith(name)]
        return len(matches) == 1 and matches[0] in self.long_values

    def scan(self, args: Sequence[str]) -> tuple[list[tuple[str, str | None]], list[str]]:
        """(options as (name, value), positionals); ``--`` ends options. Short bundles are split:
        ``-fu`` is ``-f -u``, ``-ovalue`` and ``-o value`` both give ``-o`` its value."""
        options: list[tuple[str, str | None]] = []
        positionals: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            i += 1
            if arg == "--":
                positionals.extend(args[i:])
                break
            if arg.startswith("--"):
                name, eq, value = arg.partition("=")
                if eq:
                    options.append((name, value))
                elif self.long_takes_value(name[2:]) and i < len(args):
                    options.append((name, args[i]))
                    i += 1
                else:
                    options.append((name, None))
            elif arg.startswith("-") and len(arg) > 1:
                for at in range(1, len(arg)):
                    letter = arg[at]
                    if letter in self.short_values:
                        rest = arg[at + 1 :]
                        if rest:
                            options.append(("-" + letter, rest))
                        elif i < len(args):
                            options.append(("-" + letter, args[i]))
                            i += 1
                        else:
                            options.append(("-" + letter, None))
                        break
                    options.append(("-" + letter, None))
            else:
                positionals.append(arg)
        return options, positionals


def split_command(command: str) -> list[str]:
    """A shell command string's words, or none when it is too long or not valid shell quoting."""
    if len(command) > MAX_COMMAND:
        return []
    try:
        return shlex.split(command)
    except ValueError:
        return []
