"""Shipping after an outage: new events do not hammer a collector that is down, and shipping resumes soon after it is back."""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.heartbeat import Heartbeat
from agent.shipper import BACKOFF_MAX_S, Backoff, Shipper
from agent.spool import Spool
from agent.transport import CollectorClient, Reply
from tests.collector_env import free_port
from tests.conftest import SECRET_WORD
from tests.stack import FixedLink, Stack, delivery_faults, produce, spool_depth
from tests.waiting import wait_for


class _CountingClient(CollectorClient):
    """The real HTTP client, counting the batches it tries to post."""

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url, timeout_s=2)
        self.posts = 0

    def post_events(self, events: list[dict[str, Any]]) -> Reply:
        self.posts += 1
        return super().post_events(events)


def test_a_wake_during_backoff_does_not_bring_the_retry_forward(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "spool.db"), max_bytes=1 << 30)
    spool.put({"id": "e1", "type": "file.write"}, matched=True)
    client = _CountingClient(f"http://127.0.0.1:{free_port()}")  # nothing listens: refused at once
    shipper = Shipper(spool, FixedLink(client), backoff=Backoff(start=3.0, rand=lambda: 1.0))  # type: ignore[arg-type]
    shipper.start()
    try:
        wait_for(lambda: client.posts == 1, timeout=5, message="the first attempt")
        for _ in range(20):  # twenty events spooled during the 3 s backoff
            shipper.wake()
            time.sleep(0.05)
        assert client.posts == 1
        wait_for(lambda: client.posts == 2, timeout=5, message="the retry after the backoff")
    finally:
        shipper.stop()
        spool.close()


def test_backoff_is_capped_so_a_returning_collector_is_tried_within_a_minute() -> None:
    backoff = Backoff(rand=lambda: 1.0)
    delays = [backoff.next() for _ in range(40)]
    assert max(delays) == BACKOFF_MAX_S <= 45
    low = Backoff(rand=lambda: 0.0)
    assert [low.next() for _ in range(40)][-1] == BACKOFF_MAX_S / 2  # jitter still spreads a fleet at the cap


def _file_rows(stack: Stack) -> list[str]:
    with sqlite3.connect(stack.data_dir / "collector.db") as db:
        return [path for (path,) in db.execute("SELECT path FROM events WHERE type = 'file.write' AND path LIKE ?", (str(stack.root) + "%",))]


def test_after_a_25s_outage_with_kills_everything_ships_within_60s(stack: Stack) -> None:
    port = free_port()
    config = stack.agent_config()
    serve = stack.collector(port)
    stack.enroll(config, serve.url)
    agent = stack.agent(config)
    desktop = config.parent / "Desktop"
    serve.stop()
    produced: list[str] = []
    written = 0
    outage_started = time.monotonic()
    for phase in range(3):  # two SIGKILLs and restarts inside the outage
        phase_end = outage_started + 8 * (phase + 1)
        while time.monotonic() < phase_end:
            # each written file is one more spooled event waking the shipper of a collector that is down
            (desktop / f"leak-{written}.txt").write_text(f"{SECRET_WORD} {written}\n")
            written += 1
            if written % 10 == 0:
                produced += produce(agent.spool, 5)
            time.sleep(0.1)
        if phase < 2:
            time.sleep(1)  # let the files written last reach the spool: a SIGKILL loses queued work by design
            agent.stop(signal.SIGKILL)
            agent = stack.agent(config)
    assert "cannot reach" in agent.read_log()
    # The files of the last phase are in the spool before the collector returns.
    spooled = _settled_depth(agent.spool)
    files_spooled = spooled - len(produced)
    assert files_spooled > 50
    time.sleep(max(0.0, outage_started + 25 - time.monotonic()))
    stack.collector(port)
    back = time.monotonic()
    wait_for(lambda: spool_depth(agent.spool) == 0, timeout=60, interval=0.2, message="the spool shipped within 60 s of the collector's return")
    assert time.monotonic() - back <= 60
    rows = [row for row in stack.stored_rows() if row[1] is not None and row[1].startswith("/home/jdoe/Desktop/")]
    faults = delivery_faults(produced, rows)
    assert not faults, "; ".join(faults)
    paths = _file_rows(stack)
    assert len(paths) == len(set(paths)) == files_spooled


def _settled_depth(spool_path: Path, timeout: float = 20) -> int:
    """The spool's depth once it held still for a second."""
    deadline = time.monotonic() + timeout
    depth = spool_depth(spool_path)
    while time.monotonic() < deadline:
        time.sleep(1)
        previous, depth = depth, spool_depth(spool_path)
        if depth == previous:
            return depth
    raise AssertionError("the agent's pipeline did not go quiet")


def test_a_heartbeat_getting_through_again_ends_the_shippers_backoff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agent.heartbeat.RETRY_S", 0.1)
    spool = Spool(str(tmp_path / "spool.db"), max_bytes=1 << 30)
    spool.put({"id": "e1", "type": "file.write"}, matched=True)
    client = _CountingClient(f"http://127.0.0.1:{free_port()}")
    shipper = Shipper(spool, FixedLink(client), backoff=Backoff(start=30.0, rand=lambda: 1.0), return_delay=lambda: 0.0)  # type: ignore[arg-type]
    replies = iter([Reply("retry", "down"), Reply("ok", body={"heartbeat_interval_s": 60})])
    beats = _ScriptedHeartbeats(replies)
    heartbeat = Heartbeat(FixedLink(beats), dict, on_back=shipper.collector_back)  # type: ignore[arg-type]
    shipper.start()
    try:
        wait_for(lambda: client.posts == 1, timeout=5, message="the first attempt, then a 30 s backoff")
        heartbeat.start()
        wait_for(lambda: client.posts == 2, timeout=5, message="a retry as soon as a heartbeat got through")
    finally:
        heartbeat.stop()
        shipper.stop()
        spool.close()


class _ScriptedHeartbeats(CollectorClient):
    def __init__(self, replies: Iterator[Reply]) -> None:
        super().__init__("http://127.0.0.1:9")
        self._replies = replies

    def heartbeat(self, report: dict[str, Any]) -> Reply:
        return next(self._replies, Reply("ok", body={"heartbeat_interval_s": 60}))


class _CountingIdentity:
    """Credentials that never change, counting how often the shipper looks."""

    def __init__(self) -> None:
        self.looks = 0

    def stamp(self) -> tuple[int, int] | None:
        self.looks += 1
        return None


def test_events_spooled_while_refused_do_not_spin_the_shipper(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "spool.db"), max_bytes=1 << 30)
    link = FixedLink(CollectorClient(f"http://127.0.0.1:{free_port()}", timeout_s=2))
    shipper = Shipper(spool, link)  # type: ignore[arg-type]
    identity = _CountingIdentity()
    shipper._identity = identity  # type: ignore[assignment]
    shipper.wake()  # an event spooled while the collector refuses this agent's credentials
    try:
        shipper._wait_for_new_credentials(1.5)
    finally:
        link.close()
        spool.close()
    assert identity.looks <= 4, f"looked {identity.looks} times in 1.5 s: the wake turned the wait into a busy loop"
