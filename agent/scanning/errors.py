"""Our own exception types, so no caller ever depends on yara-python's."""

from __future__ import annotations


class ScanError(Exception):
    """Base class for every error the detection engine raises."""


class RuleError(ScanError):
    """Rules could not be loaded or compiled.

    Attributes:
        path: the rule file at fault, when known.
        line: the line in that file, when known.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        self.path = path
        self.line = line
        where = path if path else ""
        if path and line:
            where = f"{path}:{line}"
        super().__init__(f"{where}: {message}" if where else message)


class LimitHit(ScanError):
    """Content hit one of the limits that protect against bombs and junk.

    Attributes:
        status: the named status the content gets (``too_large``, ``timeout``...).
        reason: a human-readable explanation.
        fatal: True when nothing more of the file may be scanned (time or total
            budget spent); False when only the current member is abandoned.
        uninspected: True when the content may hide what it holds on purpose (an
            encrypted or unsupported container, archives nested past the limit):
            the policy makes that an event on every channel.
    """

    def __init__(self, status: str, reason: str, *, fatal: bool, uninspected: bool = False):
        self.status = status
        self.reason = reason
        self.fatal = fatal
        self.uninspected = uninspected
        super().__init__(reason)


class ScanTimeout(LimitHit):
    """A scan ran past its per-file deadline: nothing more of the file is scanned."""

    def __init__(self, reason: str):
        super().__init__("timeout", reason, fatal=True)
