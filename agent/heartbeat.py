"""Heartbeats: the agent's health at the collector, on their own interval beside shipping.

A heartbeat that stops arriving is itself the signal (the collector marks the agent offline
and raises ``agent.offline``), so this thread keeps beating while shipping is backed off.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from agent.credentials import Credentials, CredentialsError
from agent.identity import Identity
from agent.threads import StoppableThread
from agent.transport import CollectorClient

log = logging.getLogger(__name__)

RETRY_S = 15.0


class Heartbeat(StoppableThread):
    def __init__(
        self,
        identity: Identity,
        client_factory: Callable[[Credentials], CollectorClient],
        report: Callable[[], dict[str, Any]],
        *,
        interval_s: float | None = None,
    ) -> None:
        super().__init__(name="heartbeat")
        self._identity = identity
        self._client_factory = client_factory
        self._report = report
        self._interval_override = interval_s
        self.last_error = ""

    def run_loop(self) -> None:
        client: CollectorClient | None = None
        client_for: Credentials | None = None
        while not self.stopping:
            delay = RETRY_S
            try:
                credentials = self._identity.current()
                if client is None or client_for != credentials:
                    if client is not None:
                        client.close()
                    client, client_for = self._client_factory(credentials), credentials
                reply = client.heartbeat(self._report())
                if reply.kind == "ok":
                    self._note("")
                    interval = (reply.body or {}).get("heartbeat_interval_s") or credentials.heartbeat_interval_s
                    delay = float(self._interval_override or interval)
                else:
                    self._note(reply.detail)
            except CredentialsError as exc:
                self._note(str(exc))
            if self.wait(delay):
                break
        if client is not None:
            client.close()

    def _note(self, error: str) -> None:
        if error and error != self.last_error:
            log.warning("heartbeat not delivered: %s", error)
        self.last_error = error
