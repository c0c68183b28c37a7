"""Who this agent is at its collector, re-read when ``dlp-agent enroll`` rewrites the file.

Shipper and heartbeat ask for the current credentials before each call, so re-enrolling
a running agent (after a revocation, say) takes effect without a restart.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from agent.credentials import Credentials, CredentialsError, load
from agent.transport import CollectorClient


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


class Link:
    """One thread's client to the collector, rebuilt whenever the credentials on disk change.

    Each courier thread (shipper, heartbeat, rules updater) holds its own Link, because a
    requests session is not meant to be shared between threads.
    """

    def __init__(self, identity: Identity, factory: Callable[[Credentials], CollectorClient]) -> None:
        self.identity = identity
        self._factory = factory
        self._client: CollectorClient | None = None
        self._client_for: Credentials | None = None

    def current(self) -> tuple[CollectorClient, Credentials]:
        """The client for the current credentials; raises CredentialsError when not enrolled."""
        credentials = self.identity.current()
        if self._client is None or self._client_for != credentials:
            self.close()
            self._client, self._client_for = self._factory(credentials), credentials
        return self._client, credentials

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = self._client_for = None
