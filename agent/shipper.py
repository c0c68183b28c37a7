"""The shipper: moves events from the spool to the collector, losing and doubling nothing.

An event leaves the spool only after the collector answered 2xx for the batch holding it;
a crash between the collector's commit and our ack resends the batch, and the collector's
idempotent ingest reports those events as duplicates. Failures back off exponentially
with jitter (so a fleet does not return in lockstep after an outage) and honour the
collector's Retry-After. While backing off, new events do not bring the retry forward (each
would be one more failed attempt at a collector that is down, and one more doubling of the
delay); the delay is capped low enough that every agent is back within a minute of the
collector's return, still spread by the jitter. A 429's Retry-After longer than the back-off and
at most ``PACED_RETRY_AFTER_S`` is the collector's own pacing of a backlog (server/api/admission.py:
up to 15 minutes while it drains a fleet's spools), so it is waited out whole: a heartbeat getting
through again does not end it, since the collector that asked for it is the one answering; only a
heartbeat reply naming this agent's turn (below) replaces it, as the collector's later word. A 503's
Retry-After, or a longer one, may come from a proxy or load balancer in front of a collector that
is down (a 503 with Retry-After: 3600 would stall shipping for an hour), so it is waited like a
back-off: a heartbeat getting through ends it. When a heartbeat ends a back-off, the first post
still waits a random ``RETURN_JITTER_S`` at most: after an outage the whole fleet's heartbeats are
answered within seconds of each other, and every shipper posting at once made some 1,600 requests
a second at 20,000 agents, the collector's event loop saturated for the first 40 s
(docs/performance.md, "Draining a backlog after an outage").

The collector also says when to post. While it drains backlogs it queues the agents that report
one and names each one's turn in the heartbeat reply (``ship_after_s``, server/pacing.py); the
shipper waits for it (``heard``), the latest word winning, so a fleet back from an outage posts
over the drain at the pace the collector can store rather than all in its first minute, refused
one connection at a time. And while heartbeats fail too (``collector_lost``), the collector is
down, not just busy: a back-off then lasts ``LOST_WAIT_S`` at least, so that after an outage it
is the heartbeat getting through, and the turn it brings, that starts shipping again, not 20,000
timers running out in the same 45 s.

A batch the collector finds too large or invalid is split until the offending event is alone;
that one event is set aside (logged and counted) so one bad record never blocks the events behind it.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from agent.credentials import CredentialsError
from agent.identity import Link
from agent.spool import Spool, SpoolError
from agent.threads import StoppableThread
from agent.transport import Reply

log = logging.getLogger(__name__)

LEASE_SECONDS = 300.0
IDLE_POLL_S = 1.0
BACKOFF_START_S = 1.0
# Delays at the cap fall between 22.5 and 45 s: after an outage of any length every agent tries
# again within 45 s of the collector's return, and a fleet's retries stay spread over that window.
BACKOFF_MAX_S = 45.0
AUTH_BACKOFF_S = 60.0
PACED_RETRY_AFTER_S = 900.0
"""The longest 429 Retry-After waited out whole (the collector's own longest, server/api/admission.py);
longer ones, which no collector sends, end when a heartbeat gets through."""
RETURN_JITTER_S = 30.0
"""After a heartbeat ends a back-off, the first post waits uniformly up to this long, so a fleet back
from an outage spreads its backlogs' first batches over half a minute rather than one second; well
under the back-off's cap (45 s) that the same agents would otherwise wait."""
LOST_WAIT_S = 300.0
"""While heartbeats fail too, a back-off lasts at least half to all of this (``lost_wait``), ended
early by a heartbeat getting through: the shipper's own probes of a collector that is down add
nothing the heartbeat's do not, and after an outage they would all land in the same minute."""
CREDENTIALS_CHECK_S = 1.0


def lost_wait(delay: float, rand: Callable[[], float] = random.random) -> float:
    """A back-off's wait while heartbeats fail too: ``delay``, or half to all of ``LOST_WAIT_S`` when longer."""
    return max(delay, LOST_WAIT_S * (0.5 + rand() / 2))


class Backoff:
    """Exponential delays with full jitter over the upper half: 1, 2, 4 ... capped."""

    def __init__(self, start: float = BACKOFF_START_S, cap: float = BACKOFF_MAX_S, rand: Callable[[], float] = random.random) -> None:
        self._start, self._cap, self._rand = start, cap, rand
        self._failures = 0

    def reset(self) -> None:
        self._failures = 0

    def next(self) -> float:
        ceiling = min(self._cap, self._start * 2**self._failures)
        self._failures = min(self._failures + 1, 30)
        return ceiling * (0.5 + self._rand() / 2)


class Shipper(StoppableThread):
    """Leases batches from the spool and posts them until stopped."""

    def __init__(
        self,
        spool: Spool,
        link: Link,
        *,
        batch_events: int = 500,
        clock: Callable[[], float] = time.time,
        backoff: Backoff | None = None,
        return_delay: Callable[[], float] = lambda: random.uniform(0.0, RETURN_JITTER_S),
    ) -> None:
        super().__init__(name="shipper")
        self._spool = spool
        self._link = link
        self._identity = link.identity
        self._batch_events = batch_events
        self._limit = batch_events
        self._clock = clock
        self._wake = threading.Event()
        self._back = threading.Event()
        self._backoff = backoff or Backoff()
        self._return_delay = return_delay
        self._backing_off = False
        self._told_to_wait = False
        self._lost = False
        self._not_before = 0.0
        """Monotonic time before which the collector asked for no post (its turn for us, or a 429)."""
        self._turn_told = False
        """The last heartbeat reply named our turn, which then replaces the return jitter."""
        self._repaced = threading.Event()
        self._last_problem = ""
        self._auth_blocked = False
        self.health_state = {"state": "ok", "message": "starting"}

    def wake(self) -> None:
        """New events are in the spool: ship now rather than at the next poll, unless backing off."""
        self._wake.set()

    def collector_back(self) -> None:
        """The collector answers again (a heartbeat got through after failing): end a backoff now."""
        self._lost = False
        self._back.set()

    def collector_lost(self) -> None:
        """A heartbeat failed: back-offs wait for its return (``LOST_WAIT_S`` at most) rather than probe."""
        self._lost = True

    def heard(self, body: dict[str, Any]) -> None:
        """A heartbeat reply (on the heartbeat's thread): the turn it names replaces any wait the
        collector asked for before, sooner or later (0: post now)."""
        turn = body.get("ship_after_s")
        self._turn_told = isinstance(turn, int | float) and not isinstance(turn, bool) and 0 <= turn < math.inf
        if isinstance(turn, int | float) and self._turn_told:
            self._not_before = time.monotonic() + min(float(turn), PACED_RETRY_AFTER_S)
            self._repaced.set()

    def on_stop(self) -> None:
        self._wake.set()
        self._back.set()
        self._repaced.set()

    def health(self) -> dict[str, str]:
        return self.health_state

    def run_loop(self) -> None:
        while not self.stopping:
            delay = self.ship_once()
            if delay is None:
                continue
            if self._auth_blocked:
                self._wait_for_new_credentials(delay)
            elif self._told_to_wait:
                # The collector's word: a heartbeat naming another turn ends the wait, to wait anew for it.
                self._repaced.wait(delay)
            elif self._backing_off:
                # Only a stop or the collector's return ends a backoff early: wake() is for an idle shipper.
                if self._back.wait(lost_wait(delay) if self._lost else delay) and not self.stopping and not self._turn_told:
                    self.wait(self._return_delay())
            else:
                self._wake.wait(delay)
            self._wake.clear()
            self._back.clear()
            self._repaced.clear()
        self.ship_once()  # one flush attempt at shutdown
        self._link.close()

    def _wait_for_new_credentials(self, delay: float) -> None:
        """While refused, retry early when ``dlp-agent enroll`` rewrites the credentials."""
        stamp = self._identity.stamp()
        deadline = time.monotonic() + delay
        while not self.stopping and time.monotonic() < deadline:
            if self._identity.stamp() != stamp:
                return
            self._wake.wait(CREDENTIALS_CHECK_S)
            # Events spooled meanwhile wake the shipper, but cannot be sent until the credentials
            # change: left set, the wake would turn this wait into a loop spinning a core.
            self._wake.clear()

    def ship_once(self) -> float | None:
        """Send one batch. Returns None to go on at once, else seconds to wait first."""
        self._auth_blocked = False
        self._backing_off = False
        self._told_to_wait = False
        try:
            client, _ = self._link.current()
        except CredentialsError as exc:
            self._problem(str(exc))
            self._auth_blocked = True
            return AUTH_BACKOFF_S
        if (turn := self._not_before - time.monotonic()) > 0:
            self._told_to_wait = True
            return turn
        try:
            lease = self._spool.lease(self._limit, lease_seconds=LEASE_SECONDS)
        except SpoolError as exc:
            self._problem(f"cannot read the spool: {exc}")
            self._backing_off = True
            return self._backoff.next()
        if not lease.events:
            return IDLE_POLL_S  # an empty lease holds nothing: no release to write
        reply = client.post_events(lease.events)
        return self._settle(lease.id, len(lease.events), reply)

    def _settle(self, lease_id: str, count: int, reply: Reply) -> float | None:
        if reply.kind == "ok":
            self._spool.ack(lease_id)
            body = reply.body or {}
            if body.get("conflicts"):
                log.warning("collector refused %d event id(s) already used by another agent: %s", len(body["conflicts"]), body["conflicts"][:5])
            self._spool.set_state("last_shipped_at", datetime.fromtimestamp(self._clock(), UTC).isoformat(timespec="milliseconds"))
            self._backoff.reset()
            self._limit = min(self._batch_events, self._limit * 2)
            self._ok("delivering")
            return None
        self._spool.release(lease_id)
        if reply.kind in ("too_large", "rejected"):
            if count > 1:
                self._limit = max(1, count // 2)
                return None
            self._set_aside(reply)
            return None
        if reply.kind == "auth":
            self._problem(f"collector refused this agent ({reply.detail}); events are kept until it is enrolled again")
            self._identity.forget_cached()
            self._auth_blocked = True
            return AUTH_BACKOFF_S
        self._problem(reply.detail)
        self._backing_off = True
        delay = self._backoff.next()
        if reply.retry_after is not None and reply.retry_after > delay:
            paced = reply.status == 429 and reply.retry_after <= PACED_RETRY_AFTER_S
            self._told_to_wait = paced
            if paced:
                self._not_before = time.monotonic() + reply.retry_after
                return reply.retry_after
            # Anything else (a proxy's 503, an overlong value) is honoured up to the back-off's own
            # cap: only a heartbeat that failed first ends a back-off early, and a proxy that refuses
            # just the events route lets every heartbeat through.
            return max(delay, min(reply.retry_after, BACKOFF_MAX_S))
        return delay

    def _set_aside(self, reply: Reply) -> None:
        """Delete the one event the collector will never take, and count it."""
        lease = self._spool.lease(1, lease_seconds=LEASE_SECONDS)
        if not lease.events:
            return
        event = lease.events[0]
        self._spool.ack(lease.id)
        rejected = (self._spool.get_state("rejected_total", 0) or 0) + 1
        self._spool.set_state("rejected_total", rejected)
        log.error("collector rejected event %s (%s) for good (%s); %d rejected so far", event.get("id"), event.get("type"), reply.detail, rejected)

    def _problem(self, message: str) -> None:
        if message != self._last_problem:
            log.error("shipping paused: %s", message)
            self._last_problem = message
        self.health_state = {"state": "degraded", "message": message[:300]}

    def _ok(self, message: str) -> None:
        if self._last_problem:
            log.warning("shipping resumed")
            self._last_problem = ""
        self._auth_blocked = False
        self.health_state = {"state": "ok", "message": message}
