"""The Retry-After of a refused batch grows with the backlog (server/api/admission.py), and the
agent's shipper waits a long one out whole (agent/shipper.py)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from agent.shipper import BACKOFF_MAX_S, RETURN_JITTER_S, Backoff, Shipper
from agent.spool import Spool
from agent.transport import CollectorClient, Reply
from server import credentials
from server.api.admission import MAX_RETRY_AFTER_S, OVERDUE_S, RETRY_AFTER_S, Admission
from tests.stack import FixedLink
from tests.waiting import wait_for

ROUTE = ("POST", "/api/v1/events")


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _highest(low: int, high: int) -> int:
    return high


def _admission(clock: _Clock, app: Any = None, rand: Any = _highest) -> Admission:
    async def nothing(scope: dict[str, Any], receive: Any, send: Any) -> None:
        return None

    return Admission(app or nothing, routes={ROUTE}, limit=2, rand=rand, monotonic=clock, vouch=_vouch)


def _vouch(token: str) -> str | None:
    """Known agents here: any id with the secret ``secret`` (the collector's is server/liveness.py ``Liveness.vouch``)."""
    parsed = credentials.parse_token(token, credentials.AGENT_KIND)
    return parsed.id if parsed is not None and parsed.secret == "secret" else None


def _agent(n: int) -> str:
    return f"{n:032x}"


def _header(agent_id: str, secret: str = "secret") -> bytes:
    return f"Bearer {credentials.AGENT_KIND}_{agent_id}_{secret}".encode()


def test_a_short_backlog_keeps_the_short_retry_after():
    admission = _admission(_Clock())
    assert [admission.retry_after(_agent(n)) for n in range(3)] == [RETRY_AFTER_S[1]] * 3
    low = _admission(_Clock(), rand=lambda low, high: low)
    assert low.retry_after(_agent(0)) == RETRY_AFTER_S[0]


def test_the_retry_after_spreads_refused_agents_over_the_expected_drain():
    clock = _Clock()
    admission = _admission(clock)
    for n in range(1000):
        admission.retry_after(_agent(n))
    assert admission.retry_after(_agent(1000)) == 500, "1,000 agents waiting, two batches a second a slot assumed until measured: 500 s"
    assert admission.retry_after(_agent(0)) == 501, "an agent refused again counts once"
    for _ in range(300):  # 10 batches a second finished over the last 30 s
        clock.now += 0.1
        admission._finish()
    assert admission.retry_after(_agent(0)) == 101, "1,001 agents waiting at 10 a second"
    for n in range(1001, 20_000):
        admission.retry_after(_agent(n))
    assert admission.retry_after(_agent(0)) == MAX_RETRY_AFTER_S, "bounded"


def test_refused_agents_stop_counting_when_admitted_or_long_overdue():
    clock = _Clock()
    admitted: list[bytes] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        admitted.append(dict(scope["headers"])[b"authorization"].decode())

    admission = _admission(clock, app)
    for n in range(100):
        admission.retry_after(_agent(n))
    assert admission.retry_after(_agent(100)) == 50

    async def post(agent: str) -> None:
        await admission({"type": "http", "method": "POST", "path": "/api/v1/events", "headers": [(b"authorization", _header(agent))]}, _no_body, _discard)

    for n in range(60):
        clock.now += 0.5
        asyncio.run(post(_agent(n)))
    assert len(admitted) == 60
    assert admission.retry_after(_agent(100)) == 21, "41 left waiting (the 60 admitted are no longer counted), 60 batches finished in 30 s"
    clock.now += 50 + OVERDUE_S + 1
    assert admission.retry_after(_agent(200)) == RETRY_AFTER_S[1], "the others were due long ago and are forgotten"


async def _no_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _discard(message: dict[str, Any]) -> None:
    return None


class _PacedClient(CollectorClient):
    """Refuses the first batch with a Retry-After of 30 s, takes the next."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:9")
        self.posts = 0
        self.posted = threading.Event()

    def post_events(self, events: list[dict[str, Any]]) -> Reply:
        self.posts += 1
        self.posted.set()
        if self.posts == 1:
            return Reply("retry", "HTTP 429: busy", retry_after=30.0, status=429)
        return Reply("ok", body={"accepted": len(events), "duplicates": []})


def test_the_shipper_waits_out_a_long_retry_after_even_when_a_heartbeat_gets_through(tmp_path: Path):
    spool = Spool(str(tmp_path / "spool.db"), max_bytes=1 << 30)
    spool.put({"id": "e1", "type": "file.write"}, matched=True)
    client = _PacedClient()
    shipper = Shipper(spool, FixedLink(client), backoff=Backoff(start=1.0, rand=lambda: 0.0))  # type: ignore[arg-type]
    shipper.start()
    try:
        wait_for(lambda: client.posts == 1, timeout=5, message="the first attempt, refused with Retry-After: 30")
        client.posted.clear()
        shipper.collector_back()  # a heartbeat got through after failing
        assert not client.posted.wait(1.0), "the collector's Retry-After is not cut short"
        assert client.posts == 1 and spool.depth() == 1, "the refused batch is kept"
    finally:
        shipper.stop()  # with its one flush attempt at stop
        spool.close()


class _DownClient(CollectorClient):
    """A collector that does not answer, then takes the batch."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:9")
        self.posts = 0

    def post_events(self, events: list[dict[str, Any]]) -> Reply:
        self.posts += 1
        if self.posts == 1:
            return Reply("retry", "HTTP 429: busy", retry_after=2.0)
        return Reply("ok", body={"accepted": len(events), "duplicates": []})


def test_a_retry_after_shorter_than_the_backoff_still_ends_with_the_collectors_return(tmp_path: Path):
    spool = Spool(str(tmp_path / "spool.db"), max_bytes=1 << 30)
    spool.put({"id": "e1", "type": "file.write"}, matched=True)
    client = _DownClient()
    shipper = Shipper(spool, FixedLink(client), backoff=Backoff(start=30.0, rand=lambda: 1.0), return_delay=lambda: 0.0)  # type: ignore[arg-type]
    shipper.start()
    try:
        wait_for(lambda: client.posts == 1, timeout=5, message="the first attempt, then a 30 s back-off")
        shipper.collector_back()
        wait_for(lambda: spool.depth() == 0, timeout=5, message="delivered once a heartbeat got through")
    finally:
        shipper.stop()
        spool.close()


def test_callers_not_known_get_the_plain_retry_after_and_do_not_lengthen_the_agents():
    """Refusal comes before authentication: strangers' headers, however many, must not push known agents' Retry-After up."""
    admission = _admission(_Clock())
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def refuse(header: bytes | None) -> int:
        headers = [(b"authorization", header)] if header is not None else []
        await admission._refuse(send, admission._agent({"headers": headers}))
        return int(dict(sent[-2]["headers"])[b"retry-after"])

    strangers = [_header(_agent(n), secret="guessed") for n in range(2000)]  # real-looking ids, wrong secret
    strangers += [b"Bearer " + b"x" * n for n in range(0, 2000, 10)] + [b"Basic dXNlcjpwYXNz", f"Token {credentials.AGENT_KIND}_{_agent(1)}_secret".encode(), None]
    assert {asyncio.run(refuse(header)) for header in strangers} == {RETRY_AFTER_S[1]}, "the plain Retry-After"
    assert admission._refused == {}, "no stranger counted"
    assert asyncio.run(refuse(_header(_agent(0)))) == RETRY_AFTER_S[1], "a known agent's Retry-After is as short as with nobody waiting"
    for n in range(1, 1000):
        asyncio.run(refuse(_header(_agent(n))))
    assert asyncio.run(refuse(_header(_agent(1000)))) == 500, "known agents are counted, by id"
    assert set(admission._refused) == {_agent(n) for n in range(1001)}



class _ProxyClient(CollectorClient):
    """Refuses the first batch with ``status`` and a long Retry-After, takes the next."""

    def __init__(self, status: int, retry_after: float) -> None:
        super().__init__("http://127.0.0.1:9")
        self.status, self.retry_after = status, retry_after
        self.posts = 0

    def post_events(self, events: list[dict[str, Any]]) -> Reply:
        self.posts += 1
        if self.posts == 1:
            return Reply("retry", f"HTTP {self.status}: unavailable", retry_after=self.retry_after, status=self.status)
        return Reply("ok", body={"accepted": len(events), "duplicates": []})


@pytest.mark.parametrize(("status", "retry_after"), [(503, 3600.0), (503, 30.0), (429, 3600.0)])
def test_a_503_or_an_overlong_retry_after_ends_when_a_heartbeat_gets_through(tmp_path: Path, status: int, retry_after: float):
    """Only a 429 of at most PACED_RETRY_AFTER_S is the collector's pacing: a proxy's 503 Retry-After: 3600 must not stall shipping."""
    spool = Spool(str(tmp_path / "spool.db"), max_bytes=1 << 30)
    spool.put({"id": "e1", "type": "file.write"}, matched=True)
    client = _ProxyClient(status, retry_after)
    shipper = Shipper(spool, FixedLink(client), backoff=Backoff(start=1.0, rand=lambda: 0.0), return_delay=lambda: 0.0)  # type: ignore[arg-type]
    shipper.start()
    try:
        wait_for(lambda: client.posts == 1, timeout=5, message="the first attempt, refused")
        shipper.collector_back()
        wait_for(lambda: spool.depth() == 0, timeout=5, message="delivered once a heartbeat got through")
    finally:
        shipper.stop()
        spool.close()


@pytest.mark.parametrize(
    ("status", "retry_after", "expected", "whole"),
    [(503, 3600.0, BACKOFF_MAX_S, False), (429, 3600.0, BACKOFF_MAX_S, False), (503, 30.0, 30.0, False), (429, 600.0, 600.0, True)],
)
def test_only_the_collectors_pacing_is_waited_beyond_the_back_off_cap(
    tmp_path: Path, status: int, retry_after: float, expected: float, whole: bool
) -> None:
    """With no heartbeat failing (a proxy refusing only the events route), nothing would end a long wait early."""
    spool = Spool(str(tmp_path / "spool.db"), max_bytes=1 << 30)
    spool.put({"id": "e1", "type": "file.write"}, matched=True)
    shipper = Shipper(spool, FixedLink(_ProxyClient(status, retry_after)), backoff=Backoff(start=1.0, rand=lambda: 0.0))  # type: ignore[arg-type]
    try:
        assert shipper.ship_once() == expected
        assert shipper._told_to_wait is whole
        assert spool.depth() == 1, "the batch stays in the spool"
    finally:
        spool.close()


def test_the_first_post_after_the_collectors_return_waits_a_random_delay(tmp_path: Path):
    """A fleet back from an outage does not post all at once: the shipper draws a delay (RETURN_JITTER_S at most) first."""
    spool = Spool(str(tmp_path / "spool.db"), max_bytes=1 << 30)
    spool.put({"id": "e1", "type": "file.write"}, matched=True)
    client = _DownClient()
    drawn: list[float] = []

    def delay() -> float:
        drawn.append(3600.0)
        return drawn[-1]

    shipper = Shipper(spool, FixedLink(client), backoff=Backoff(start=30.0, rand=lambda: 1.0), return_delay=delay)  # type: ignore[arg-type]
    shipper.start()
    try:
        wait_for(lambda: client.posts == 1, timeout=5, message="the first attempt, then a 30 s back-off")
        shipper.collector_back()
        wait_for(lambda: drawn == [3600.0], timeout=5, message="the return's delay drawn")
        assert client.posts == 1 and spool.depth() == 1, "no post before the drawn delay ran out"
    finally:
        shipper.stop()  # ends the delay; one flush attempt at stop
        spool.close()
    assert 0.0 <= min(random_delays := [_default_return_delay() for _ in range(200)]) and max(random_delays) <= RETURN_JITTER_S


def _default_return_delay() -> float:
    import inspect

    default = inspect.signature(Shipper).parameters["return_delay"].default
    return float(default())
