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

The bound is per process (each ``--workers`` process holds its own) and counts a request from
admission until its answer is sent. Everything runs on the process's event loop, so the counts
need no lock.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

RETRY_AFTER_S = (2, 10)
"""Whole seconds (HTTP's delay-seconds), drawn uniformly in this range so refused agents spread out."""
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
        rand: Callable[[int, int], int] = random.randint,
    ) -> None:
        self.app = app
        self.routes = frozenset(routes)
        self.limit = limit
        self.queue = QUEUE_PER_SLOT * limit
        self.in_flight = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._on_refusal = on_refusal
        self._rand = rand

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) not in self.routes:
            await self.app(scope, receive, send)
            return
        if not await self._admit():
            if self._on_refusal is not None:
                self._on_refusal()
            await self._refuse(send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
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

    async def _refuse(self, send: Send) -> None:
        retry_after = self._rand(*RETRY_AFTER_S)
        body = json.dumps({"detail": f"the collector is busy with other agents' batches; retry in {retry_after} s"}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(retry_after).encode()),
        ]
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})
