"""When each agent with a backlog should post it: the turn a heartbeat reply hands out (``ship_after_s``).

After an outage the whole fleet comes back with spooled events. Left to their own timers, the
agents' shippers all posted within the same minute (20,000 batch connections on top of 20,000
heartbeats at 20,000 agents), and admission control (server/api/admission.py) could only refuse
them one connection at a time: the refusals alone saturated the event loop that answers
heartbeats, and connections were reset in the listen queue (docs/performance.md, issue 20). The
heartbeat already reports the agent's spool depth, so the collector can tell each agent when its
turn comes instead, and the agent's shipper waits for it (agent/shipper.py ``heard``).

The turns form one queue per collector process, in the order agents first reported a backlog:
an agent gets a *ticket* holding the events queued before it (``offset``) and its own backlog
(at most ``MAX_TICKET_EVENTS`` of it: the depth is the agent's word). Its wait is the events still
ahead of it over the rate this process stores events at while busy (events per second with at
least one batch in flight), times ``PACE_SHARE``, which leaves part of each second to heartbeats.
The wait is computed anew on each heartbeat, so an agent is told both later and sooner turns (0:
post now). Turns are handed out only while the queue holds more than ``CONTENDED_S`` of work: a
single agent back with a large spool, or the agents with a few events between two posts in steady
state, are told 0, and admission's short line absorbs them.

The rate is measured over busy time, not wall time, so a collector that told agents to wait still
measures what it can do rather than what it was sent. A new queue starts from at least
``INITIAL_RATE`` (the steady state's small batches measure fewer events a second than a drain's
full ones), and while agents wait and the process is mostly idle with too little busy time to
measure, the estimate rises by ``RAISE`` a second: an estimate too low would otherwise hold the
collector idle for good, each turn as far off as the low rate says.

The queue's accounting cannot drift: a ticket adds its counted backlog to ``registered`` when made
and the same amount to ``served`` by the time it ends (events stored; what a later heartbeat no
longer reports, delivered through another process or collector; the rest when it ends), so the
two are equal whenever the queue is empty, and then both restart at zero. A ticket ends when its
agent reports no backlog, is silent for ``FORGET_INTERVALS`` heartbeat intervals, or had its turn
``GRACE_INTERVALS`` intervals ago and has delivered nothing since (it then queues again at the back).

Per process: each process queues the agents whose heartbeats it answers. Behind one port
(``--workers N``) the kernel hands each new connection to any of the N, so every process hears
every agent now and then, queues the whole fleet and sees a share of its batches: it paces at its
own rate times ``processes`` (set by server/serving.py), the rate of all N. Collectors on several
machines behind a balancer are paced at about one process's rate (docs/deployment.md). Heartbeats
run on the event loop, ingest in the thread pool, so a lock guards the state.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

INITIAL_RATE = 5000.0
"""Events a second assumed when a queue starts, unless more was measured: optimistic, since an
agent told too soon waits in admission's line or gets a Retry-After, while one told too late
leaves the collector idle."""
PACE_SHARE = 0.8
"""Turns are handed out at this share of the measured rate, so a draining collector keeps a fifth of
each second for heartbeats and the agents without a backlog."""
CONTENDED_S = 15.0
"""Turns other than 0 only while the queue holds more work than this (at the paced rate)."""
MIN_WAIT_S = 2
"""Waits shorter than this are told as 0: not worth a pause."""
MAX_WAIT_S = 900
"""The longest wait told (the agent waits at most as long for a 429's Retry-After, agent/shipper.py);
an agent further back is told again on its next heartbeat."""
MAX_TICKET_EVENTS = 50_000
"""The most of one agent's reported backlog that counts ahead of the agents behind it (about 10 s of
work at this machine's drain rate): an agent reporting a huge depth could otherwise push every
agent queued after it to ``MAX_WAIT_S``. Its whole backlog is still posted once its turn comes:
the ticket stays until the agent reports none."""
WINDOW_S = 30.0
"""The rate is measured over this much of the recent past."""
MIN_BUSY_S = 2.0
"""Busy time a measurement needs before it replaces the estimate."""
RAISE = 1.25
"""While agents wait and the process idles without a measurement, the estimate grows this much a second."""
MAX_RATE = 1_000_000.0
"""The estimate's bound (no process stores a million events a second)."""
GRACE_INTERVALS = 5
"""An agent whose turn came this many heartbeat intervals ago and has delivered nothing since gives it up."""
FORGET_INTERVALS = 3
"""A ticket whose agent has not reported for this many heartbeat intervals ends."""


@dataclass
class _Ticket:
    offset: int
    """Events registered before this agent's."""
    backlog: int
    """Its reported backlog, at most ``MAX_TICKET_EVENTS``."""
    delivered: int = 0
    seen: float = 0.0
    turn_at: float | None = None
    """When the events ahead of it were first all served, or it last delivered since."""


class Pacer:
    """One process's queue of agents with a backlog, and the rate it stores events at."""

    def __init__(self, *, interval_s: float = 60.0, monotonic: Callable[[], float] = time.monotonic, initial_rate: float = INITIAL_RATE) -> None:
        self._monotonic = monotonic
        self._grace_s = GRACE_INTERVALS * interval_s
        self._forget_s = FORGET_INTERVALS * interval_s
        self._initial_rate = initial_rate
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
        self.processes = 1
        """Processes sharing the fleet's heartbeats and batches on this port (``--workers``)."""

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
            if ticket is not None:
                self._deliver(ticket, events)
                if ticket.turn_at is not None:
                    ticket.turn_at = self._monotonic()  # delivering: its turn goes on

    # --- what a heartbeat is told ---------------------------------------------------------------

    def ship_after(self, agent_id: str, backlog: int) -> int | None:
        """Seconds this agent should wait before posting its backlog (0: now); None when it reports none."""
        now = self._monotonic()
        with self._lock:
            ticket = self._tickets.get(agent_id)
            if backlog <= 0:
                if ticket is not None:
                    self._end(agent_id, ticket)
                self._measure(now)
                return None
            if ticket is not None:
                self._deliver(ticket, ticket.backlog - ticket.delivered - backlog)  # no longer held: delivered, maybe elsewhere
                if ticket.turn_at is not None and now - ticket.turn_at >= self._grace_s:
                    self._end(agent_id, ticket)  # its turn lapsed: to the back of the queue
                    ticket = None
            if ticket is None:
                self._forget_silent(now)
                if not self._tickets:
                    self._registered = self._served = 0
                    self._rate = max(self._rate, self._initial_rate)
                counted = min(backlog, MAX_TICKET_EVENTS)
                ticket = self._tickets[agent_id] = _Ticket(offset=self._registered, backlog=counted)
                self._registered += counted
            ticket.seen = now
            self._measure(now)
            ahead = ticket.offset - self._served
            if ahead <= 0:
                if ticket.turn_at is None:
                    ticket.turn_at = now
                return 0
            pace = self._rate * PACE_SHARE * self.processes
            if (self._registered - self._served) / pace < CONTENDED_S:
                return 0
            wait = ahead / pace
            return 0 if wait < MIN_WAIT_S else min(MAX_WAIT_S, math.ceil(wait))

    @property
    def rate(self) -> float:
        """Events a second this process stores while busy (measured, or estimated)."""
        return self._rate

    @property
    def queued(self) -> int:
        """Agents holding a ticket."""
        return len(self._tickets)

    # --- bookkeeping (under the lock) -----------------------------------------------------------

    def _deliver(self, ticket: _Ticket, events: int) -> None:
        taken = max(0, min(events, ticket.backlog - ticket.delivered))
        ticket.delivered += taken
        self._served += taken

    def _end(self, agent_id: str, ticket: _Ticket) -> None:
        del self._tickets[agent_id]
        self._served += ticket.backlog - ticket.delivered
        if not self._tickets:
            self._registered = self._served = 0

    def _forget_silent(self, now: float) -> None:
        """End the tickets of agents not heard from for ``FORGET_INTERVALS`` intervals (a pass at most every tenth of that)."""
        if not self._tickets or now - self._swept < self._forget_s / 10:
            return
        self._swept = now
        for agent_id, ticket in [(a, t) for a, t in self._tickets.items() if now - t.seen >= self._forget_s]:
            self._end(agent_id, ticket)

    def _measure(self, now: float) -> None:
        """A sample at most once a second; the rate over the window when it saw enough busy time, else
        a higher estimate while agents wait on a process that is mostly idle."""
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
        elif self._registered > self._served and now - first[0] >= MIN_BUSY_S:
            self._rate = min(MAX_RATE, self._rate * RAISE)
