"""Admission control for event ingest: a bound on the batches one collector process works on at once.

After an outage the whole fleet comes back within a minute, each agent with a spooled backlog.
Taken in all at once, those batches queue for the thread pool and the database's writer,
heartbeats queue behind them, agents time out (30 s) and resend batches the collector then
stores anyway: duplicates, so the work grows as throughput falls (docs/performance.md, issue 20).

So at most ``ingest.max_in_flight`` batches are worked on at once in one process. A few more
(``QUEUE_PER_SLOT`` per slot) wait their turn, in order and for ``MAX_WAIT_S`` at most, with their
bodies unread: they cost an open connection, and they keep the collector busy between the
retries of refused agents. Beyond that, ``POST /api/v1/events`` is answered 429 with a jittered
``Retry-After`` before its body is read, decompressed or its credential checked. The agent's
shipper keeps the batch and tries again after the longer of its own back-off and the Retry-After
(agent/shipper.py), so a backlog drains at the pace the collector sets and heartbeats, which are
never held or refused here, keep theirs.

The Retry-After grows with the backlog. A fixed one (2-10 s) is shorter than the agent's own
back-off after an outage (22.5-45 s), so every refused agent came back every half minute: at
20,000 agents some 600 attempts a second against 50 batches a second stored, each costing this
process's event loop (the one that answers heartbeats) a connection and an HTTP parse. So the
refused agents are counted, and the expected drain time is that count over the batches finished a
second lately: a refused agent is told to retry at a uniformly drawn moment within it (at least
``RETRY_AFTER_S``, at most ``MAX_RETRY_AFTER_S``). The retries then arrive about twice as fast as
batches are finished: enough to keep the line fed, not the whole fleet every half minute.

Only agents this process knows are counted, by agent id: the request's credential must be one
this collector's memory of agents holds (server/liveness.py ``Liveness.vouch``: a dictionary
lookup and one SHA-256, no database). Refusal happens before authentication, so counting any
caller (as the raw Authorization header once was) let anyone without a credential grow the count
and push every agent's Retry-After to its 15-minute maximum. A caller memory does not vouch for
(a stranger, or an agent this process has not heard from since it started) is told the plain
``RETRY_AFTER_S`` and changes nothing here. An agent is forgotten when admitted or once its
retry is long overdue, so the count is at most the fleet this process serves.

The bound is per process (each ``--workers`` process holds its own) and counts a request from
admission until its answer is sent. Everything runs on the process's event loop, so the counts
need no lock.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from server.pacing import Pacer

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

RETRY_AFTER_S = (2, 10)
"""Whole seconds (HTTP's delay-seconds), drawn uniformly in this range so refused agents spread out,
when the backlog is short; longer backlogs widen the upper end to the expected drain time."""
MAX_RETRY_AFTER_S = 900
"""The longest Retry-After: an agent refused at the start of the longest backlog still tries again within 15 minutes."""
RATE_WINDOW_S = 30.0
"""Batches finished within this long make the drain rate."""
OVERDUE_S = 60.0
"""A refused agent not back this long after its Retry-After (and the agent's back-off, at most 45 s) no longer counts."""
MAX_COUNTED = 100_000
"""Refused agents counted at most (about 200 bytes each): a backstop, since only known agents count."""
_PRUNE_EVERY_S = 5.0
QUEUE_PER_SLOT = 16
MAX_WAIT_S = 5.0
"""Well under the agent's request timeout (30 s): a batch waits this long for a slot, then gets 429."""


class Admission:
    """ASGI middleware: at most ``limit`` requests to ``routes`` in flight, ``QUEUE_PER_SLOT * limit``
    more waiting for a slot; the rest get 429 at once."""

    def __init__(
        self,
        app: App,
        *,
        routes: Collection[tuple[str, str]],
        limit: int,
        on_refusal: Callable[[], object] | None = None,
        vouch: Callable[[str], str | None] = lambda _token: None,
        pacer: Pacer | None = None,
        rand: Callable[[int, int], int] = random.randint,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.routes = frozenset(routes)
        self.limit = limit
        self.queue = QUEUE_PER_SLOT * limit
        self.in_flight = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._on_refusal = on_refusal
        self._rand = rand
        self._vouch = vouch
        self._pacer = pacer
        """Told when a batch starts and ends: the busy time its rate is measured over (server/pacing.py)."""
        """A bearer token -> its agent's id when this process knows the agent and the secret matches, else None."""
        self._monotonic = monotonic
        self._refused: dict[str, float] = {}
        """Refused known agents (their id) -> when they stop counting."""
        self._finished: deque[float] = deque()
        """When each batch of the last ``RATE_WINDOW_S`` was answered."""
        self._busy_since: float | None = None
        self._pruned = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) not in self.routes:
            await self.app(scope, receive, send)
            return
        if not await self._admit():
            if self._on_refusal is not None:
                self._on_refusal()
            await self._refuse(send, self._agent(scope))
            return
        if self._refused:
            agent_id = self._agent(scope)
            if agent_id is not None:
                self._refused.pop(agent_id, None)
        if self._pacer is not None:
            self._pacer.started()
        try:
            await self.app(scope, receive, send)
        finally:
            if self._pacer is not None:
                self._pacer.finished()
            self._finish()
            self._release()

    async def _admit(self) -> bool:
        """Take a slot, waiting in line for one if the line has room; False when refused."""
        if self.in_flight < self.limit and not self._waiting:
            self.in_flight += 1
            return True
        if len(self._waiting) >= self.queue:
            return False
        turn = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        try:
            await asyncio.wait([turn], timeout=MAX_WAIT_S)
        except BaseException:
            self._leave_line(turn)
            raise
        if turn.done():
            return True
        self._leave_line(turn)
        return False

    def _leave_line(self, turn: asyncio.Future[None]) -> None:
        """A waiter gives up: out of the line, or, when _release had already handed it the slot, the slot passes on."""
        if turn.done():
            self._release()
        else:
            self._waiting.remove(turn)
            turn.cancel()

    def _release(self) -> None:
        """A slot is free: handed to the first in line (``in_flight`` unchanged), else counted back."""
        if self._waiting:
            self._waiting.popleft().set_result(None)
        else:
            self.in_flight -= 1

    def _agent(self, scope: Scope) -> str | None:
        """The id of the known agent whose credential the request bears, else None."""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                return self._vouch(token.strip()) if scheme.lower() == "bearer" else None
        return None

    def retry_after(self, agent_id: str | None) -> int:
        """Seconds this refused agent is told to wait: drawn within the expected drain time of the
        agents refused lately (``RETRY_AFTER_S`` when that is short), and it counts among them.
        A caller not known (None) gets ``RETRY_AFTER_S`` and counts nowhere."""
        if agent_id is None:
            return self._rand(*RETRY_AFTER_S)
        now = self._monotonic()
        if now >= self._pruned + _PRUNE_EVERY_S:
            self._refused = {key: until for key, until in self._refused.items() if until > now}
            self._pruned = now
        if self._busy_since is None:
            self._busy_since = now
        self._trim(now)
        # Over the window, or since the collector got busy when that is shorter; at least one batch a second a slot until measured.
        rate = max(len(self._finished) / max(1.0, min(RATE_WINDOW_S, now - self._busy_since)), float(self.limit) if not self._finished else 0.1)
        drain_s = len(self._refused) / rate
        upper = max(RETRY_AFTER_S[1], min(MAX_RETRY_AFTER_S, math.ceil(drain_s)))
        delay = self._rand(RETRY_AFTER_S[0], upper)
        if agent_id in self._refused or len(self._refused) < MAX_COUNTED:
            self._refused[agent_id] = now + delay + OVERDUE_S
        return delay

    def _finish(self) -> None:
        now = self._monotonic()
        self._finished.append(now)
        self._trim(now)
        if not self._refused and not self._waiting:
            self._busy_since = None

    def _trim(self, now: float) -> None:
        while self._finished and self._finished[0] < now - RATE_WINDOW_S:
            self._finished.popleft()

    async def _refuse(self, send: Send, agent_id: str | None) -> None:
        retry_after = self.retry_after(agent_id)
        body = json.dumps({"detail": f"the collector is busy with other agents' batches; retry in {retry_after} s"}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(retry_after).encode()),
        ]
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})

