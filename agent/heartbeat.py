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
STEADY_RETRIES = 3
"""Failures in a row retried at ``RETRY_S`` (about 45 s) before the retries slow down."""
LOST_AFTER = 2
"""Failures in a row after which the shipper is told the collector is lost (one may be a blip)."""
DEFAULT_INTERVAL_S = 60.0
"""The interval until the collector has named one (the enrollment's or a reply's)."""


def retry_delay(failures: int = 1, interval_s: float = DEFAULT_INTERVAL_S, rand: Callable[[], float] = random.random) -> float:
    """The wait after the ``failures``-th heartbeat in a row that did not get through: ``RETRY_S`` on
    average after each of the first ``STEADY_RETRIES``, then doubling with each further failure up
    to the heartbeat interval, each spread over half to one and a half of it.

    A fixed retry kept a whole fleet that lost its collector beating in the same few seconds of
    every interval for good once it came back (bench/drain.py: 20,000 agents sent their heartbeats
    within 15 s of each minute, 1,333 a second instead of 333); and a retry shorter than the
    interval, however spread, still brought the fleet back faster than it normally beats: every
    agent within 22.5 s of the collector's return, four times the collector's usual rate of
    heartbeats, all of them returns. Retrying about once an interval once the outage has lasted a
    minute brings the fleet back at its usual rate, spread over one and a half intervals; a blip
    (up to three failures, about 45 s) is still retried every 7.5 to 22.5 s."""
    ceiling = max(RETRY_S, interval_s)
    return min(ceiling, RETRY_S * 2 ** (min(max(failures - STEADY_RETRIES, 0), 16))) * (0.5 + rand())


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
        on_lost: Callable[[], None] | None = None,
        on_reply: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """``on_back`` is called when a heartbeat gets through after one that did not, ``on_lost`` when
        ``LOST_AFTER`` have failed in a row: the shipper's cues. ``on_reply``
        with each answer's body (the device policy version, quarantine commands, the shipper's turn),
        before ``on_back``, and must be quick."""
        super().__init__(name="heartbeat")
        self._on_back = on_back
        self._on_lost = on_lost
        self._on_reply = on_reply
        self._failures = 0
        self._interval_s = DEFAULT_INTERVAL_S
        self._link = link
        self._report = report
        self._interval_override = interval_s
        self.last_error = ""

    def run_loop(self) -> None:
        while not self.stopping:
            delay = None
            try:
                client, credentials = self._link.current()
                reply = client.heartbeat(self._report())
                if reply.kind == "ok":
                    came_back = self._failures > 0
                    self._failures = 0
                    self._hand_on(reply.body or {})
                    if came_back and self._on_back is not None:
                        self._on_back()
                    self._note("")
                    interval = float(self._interval_override or (reply.body or {}).get("heartbeat_interval_s") or credentials.heartbeat_interval_s)
                    self._interval_s = interval
                    delay = first_delay_back(interval) if came_back else interval
                else:
                    self._note(reply.detail)
            except CredentialsError as exc:
                # Not enrolled (yet), or refused: nothing to say about the collector, so no lost
                # signal and no slowing down; the retry picks up new credentials within RETRY_S.
                self._note(str(exc))
                self._failures = max(self._failures, 1)
                delay = retry_delay(1, float(self._interval_override or self._interval_s))
            if delay is None:
                self._failed()
                delay = retry_delay(self._failures, float(self._interval_override or self._interval_s))
            if self.wait(delay):
                break
        self._link.close()

    def _failed(self) -> None:
        self._failures += 1
        if self._failures == LOST_AFTER and self._on_lost is not None:
            try:
                self._on_lost()
            except Exception:
                log.exception("heartbeat failure not handled")

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
