"""Who this agent is at its collector, re-read when ``dlp-agent enroll`` rewrites the file.

Shipper and heartbeat ask for the current credentials before each call, so re-enrolling
a running agent (after a revocation, say) takes effect without a restart.
"""

from __future__ import annotations

import os
import threading

from agent.credentials import Credentials, CredentialsError, load


class Identity:
    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._cached: Credentials | None = None
        self._stamp: tuple[int, int] | None = None

    def current(self) -> Credentials:
        """The credentials on disk; raises CredentialsError when the agent is not enrolled."""
        try:
            stat = os.stat(self.path)
        except OSError:
            raise CredentialsError(f"{self.path}: not enrolled; run dlp-agent enroll --server URL --token TOKEN") from None
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if self._cached is None or stamp != self._stamp:
                self._cached = load(self.path)
                self._stamp = stamp
            return self._cached

    def stamp(self) -> tuple[int, int] | None:
        """Changes whenever the file is rewritten (None while there is none)."""
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def forget_cached(self) -> None:
        with self._lock:
            self._cached = None
