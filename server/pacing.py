"""When each agent with a backlog should post it: the turn a heartbeat reply hands out (``ship_after_s``).

After an outage the whole fleet comes back with spooled events. Left to their own timers, the
agents' shippers all posted within the same minute (20,000 batch connections on top of 20,000
heartbeats at 20,000 agents), and admission control (server/api/admission.py) could only refuse
them one connection at a time: the refusals alone saturated the event loop that answers
heartbeats, and connections were reset in the listen queue (docs/performance.md, issue 20). The
heartbeat already reports the agent's spool depth, so the collector can tell each agent when its
turn comes instead, and the agent's shipper waits for it (agent/shipper.py ``heard``).

The turns form one queue per collector process, in the order agents first reported a backlog:
an agent gets a *ticket* holding the events queued before it (``offset``) and its own backlog.
Its wait is the events still ahead of it over the rate this process stores events at, as measured
while it was busy (events per second with at least one batch in flight, so a collector told to
wait idles no lower: the rate it measures is what it can do, not what it was sent), times
``PACE_SHARE``, which leaves part of each second to heartbeats. The wait is computed anew on each
heartbeat, so an early estimate (``INITIAL_RATE`` before anything is measured) is corrected within
one interval, and an agent is told both later and sooner turns (0: post now).

The queue's accounting cannot drift: a ticket adds its backlog to ``registered`` when made and the
same amount to ``served`` when it ends (delivered, reported empty, silent for ``FORGET_S``, or its
turn come ``GRACE_S`` ago without a delivery), so the two are equal whenever the queue is empty,
and then both restart at zero. In steady state the queue holds the few agents with a small
backlog between a heartbeat and their next post, the events ahead are a fraction of a second's
work, and the answer is 0.

Per process: with ``--workers`` each process paces the agents whose heartbeats it answers at its
own rate. Heartbeats run on the event loop, ingest in the thread pool, so a lock guards the state.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

INITIAL_RATE = 5000.0
"""Events a second assumed before anything is measured: optimistic, since an agent told too soon
waits in admission's line or gets a Retry-After, while one told too late stays idle for nothing."""
PACE_SHARE = 0.8
"""Turns are handed out at this share of the measured rate, so a draining collector keeps a fifth of
each second for heartbeats and the agents without a backlog."""
MIN_WAIT_S = 2
"""Waits shorter than this are told as 0: not worth a pause."""
MAX_WAIT_S = 900
"""The longest wait told (the agent waits at most as long for a 429's Retry-After, agent/shipper.py);
an agent further back is told again on its next heartbeat."""
WINDOW_S = 30.0
"""The rate is measured over this much of the recent past."""
MIN_BUSY_S = 2.0
"""Busy time a measurement needs before it replaces the previous estimate."""
GRACE_S = 300.0
"""An agent whose turn came this long ago without posting gives it up: its backlog stops counting ahead of others."""
FORGET_S = 180.0
"""A ticket whose agent has not reported for this long (three default heartbeat intervals) ends."""


@dataclass
class _Ticket:
    offset: int
    """Events registered before this agent's."""
    backlog: int
    delivered: int = 0
    seen: float = 0.0
    turn_at: float | None = None
    """When the events ahead of it were first all served."""


class Pacer:
    """One process's queue of agents with a backlog, and the rate it stores events at."""

    def __init__(self, *, monotonic: Callable[[], float] = time.monotonic, initial_rate: float = INITIAL_RATE) -> None:
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._tickets: dict[str, _Ticket] = {}
        self._registered = 0
        self._served = 0
        self._rate = initial_rate
        self._stored = 0
        """Events stored by this process, ever (the rate's numerator)."""
        self._active = 0
        self._busy = 0.0
        self._busy_since: float | None = None
        self._samples: deque[tuple[float, int, float]] = deque()
        """(when, events stored, busy seconds) about once a second over ``WINDOW_S``."""
        self._swept = -math.inf

    # --- what admission and ingest report -----------------------------------------------------

    def started(self) -> None:
        """A batch was admitted (server/api/admission.py)."""
        with self._lock:
            if self._active == 0:
                self._busy_since = self._monotonic()
            self._active += 1

    def finished(self) -> None:
        """An admitted batch was answered."""
        with self._lock:
            self._active = max(0, self._active - 1)
            if self._active == 0 and self._busy_since is not None:
                self._busy += self._monotonic() - self._busy_since
                self._busy_since = None

    def stored(self, agent_id: str, events: int) -> None:
        """A batch of ``events`` from this agent was stored (its duplicates included: they took the work too)."""
        with self._lock:
            self._stored += events
            ticket = self._tickets.get(agent_id)
            if ticket is None:
                return
            taken = min(events, ticket.backlog - ticket.delivered)
            ticket.delivered += taken
            self._served += taken
            if ticket.delivered >= ticket.backlog:
                self._end(agent_id, ticket)

    # --- what a heartbeat is told ---------------------------------------------------------------

    def ship_after(self, agent_id: str, backlog: int) -> int | None:
        """Seconds this agent should wait before posting its backlog (0: now); None when it reports none."""
        now = self._monotonic()
        with self._lock:
            self._measure(now)
            ticket = self._tickets.get(agent_id)
            if backlog <= 0:
                if ticket is not None:
                    self._end(agent_id, ticket)
                return None
            if ticket is not None and ticket.turn_at is not None and now - ticket.turn_at >= GRACE_S:
                self._end(agent_id, ticket)  # its turn lapsed: to the back of the queue
                ticket = None
            if ticket is None:
                self._forget_silent(now)
                if not self._tickets:
                    self._registered = self._served = 0
                ticket = self._tickets[agent_id] = _Ticket(offset=self._registered, backlog=backlog)
                self._registered += backlog
            ticket.seen = now
            ahead = ticket.offset - self._served
            if ahead <= 0:
                if ticket.turn_at is None:
                    ticket.turn_at = now
                return 0
            wait = ahead / (self._rate * PACE_SHARE)
            return 0 if wait < MIN_WAIT_S else min(MAX_WAIT_S, math.ceil(wait))

    @property
    def rate(self) -> float:
        """Events a second this process stores while busy (measured, or the initial estimate)."""
        return self._rate

    @property
    def queued(self) -> int:
        """Agents holding a ticket."""
        return len(self._tickets)

    # --- bookkeeping (under the lock) -----------------------------------------------------------

    def _end(self, agent_id: str, ticket: _Ticket) -> None:
        del self._tickets[agent_id]
        self._served += ticket.backlog - ticket.delivered
        if not self._tickets:
            self._registered = self._served = 0

    def _forget_silent(self, now: float) -> None:
        """End the tickets of agents not heard from for ``FORGET_S`` (at most once a ``FORGET_S``/10)."""
        if not self._tickets or now - self._swept < FORGET_S / 10:
            return
        self._swept = now
        for agent_id, ticket in [(a, t) for a, t in self._tickets.items() if now - t.seen >= FORGET_S]:
            self._end(agent_id, ticket)

    def _measure(self, now: float) -> None:
        """Take a sample at most once a second, and the rate over the window when it saw enough busy time."""
        if self._samples and now - self._samples[-1][0] < 1.0:
            return
        busy = self._busy + (now - self._busy_since if self._busy_since is not None else 0.0)
        self._samples.append((now, self._stored, busy))
        while len(self._samples) > 2 and now - self._samples[1][0] >= WINDOW_S:
            self._samples.popleft()
        first = self._samples[0]
        busy_s = busy - first[2]
        if busy_s >= MIN_BUSY_S and self._stored > first[1]:
            self._rate = (self._stored - first[1]) / busy_s
