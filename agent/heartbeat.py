"""Heartbeats: the agent's health at the collector, on their own interval beside shipping.

A heartbeat that stops arriving is itself the signal (the collector marks the agent offline
and raises ``agent.offline``), so this thread keeps beating while shipping is backed off.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

from agent.credentials import CredentialsError
from agent.identity import Link
from agent.threads import StoppableThread

log = logging.getLogger(__name__)

RETRY_S = 15.0


def retry_delay(rand: Callable[[], float] = random.random) -> float:
    """The wait after a heartbeat that did not get through: ``RETRY_S`` on average, spread over half
    to one and a half of it. A fixed retry kept a whole fleet that lost its collector beating in the
    same few seconds of every interval for good once it came back (bench/drain.py: 20,000 agents
    sent their heartbeats within 15 s of each minute, 1,333 a second instead of 333)."""
    return RETRY_S * (0.5 + rand())


def first_delay_back(interval_s: float, rand: Callable[[], float] = random.random) -> float:
    """The wait after the first heartbeat that got through after failed ones: a new random phase
    within the interval, so agents that came back together spread out again over one interval."""
    return interval_s * (0.05 + 0.95 * rand())


class Heartbeat(StoppableThread):
    def __init__(
        self,
        link: Link,
        report: Callable[[], dict[str, Any]],
        *,
        interval_s: float | None = None,
        on_back: Callable[[], None] | None = None,
        on_reply: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """``on_back`` is called when a heartbeat gets through after one that did not (the shipper's cue);
        ``on_reply`` with each answer's body (the device policy version, quarantine commands), and must be quick."""
        super().__init__(name="heartbeat")
        self._on_back = on_back
        self._on_reply = on_reply
        self._link = link
        self._report = report
        self._interval_override = interval_s
        self.last_error = ""

    def run_loop(self) -> None:
        while not self.stopping:
            delay = retry_delay()
            try:
                client, credentials = self._link.current()
                reply = client.heartbeat(self._report())
                if reply.kind == "ok":
                    came_back = bool(self.last_error)
                    if came_back and self._on_back is not None:
                        self._on_back()
                    self._note("")
                    self._hand_on(reply.body or {})
                    interval = float(self._interval_override or (reply.body or {}).get("heartbeat_interval_s") or credentials.heartbeat_interval_s)
                    delay = first_delay_back(interval) if came_back else interval
                else:
                    self._note(reply.detail)
            except CredentialsError as exc:
                self._note(str(exc))
            if self.wait(delay):
                break
        self._link.close()

    def _hand_on(self, body: dict[str, Any]) -> None:
        if self._on_reply is None:
            return
        try:
            self._on_reply(body)
        except Exception:  # what the answer asks for is secondary to beating
            log.exception("heartbeat answer not handled")

    def _note(self, error: str) -> None:
        if error and error != self.last_error:
            log.warning("heartbeat not delivered: %s", error)
        self.last_error = error
