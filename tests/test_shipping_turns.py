"""The collector names each backlogged agent's turn in its heartbeat reply (server/pacing.py) and
the agent's shipper waits for it; while heartbeats fail, the shipper leaves probing the collector
to them (agent/shipper.py ``collector_lost``), and the heartbeat's retries slow to its interval
(agent/heartbeat.py ``retry_delay``), so a fleet back from an outage returns at its usual rate."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent.heartbeat import LOST_AFTER, RETRY_S, STEADY_RETRIES, Heartbeat, retry_delay
from agent.shipper import LOST_WAIT_S, PACED_RETRY_AFTER_S, Backoff, Shipper, lost_wait
from agent.spool import Spool
from agent.transport import CollectorClient, Reply
from server.pacing import FORGET_INTERVALS, GRACE_INTERVALS, MAX_TICKET_EVENTS, MAX_WAIT_S, MIN_WAIT_S, PACE_SHARE, Pacer
from tests.collector_env import event_record
from tests.stack import FixedLink
from tests.waiting import wait_for

INTERVAL_S = 60.0
GRACE_S = GRACE_INTERVALS * INTERVAL_S
FORGET_S = FORGET_INTERVALS * INTERVAL_S


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _pacer(rate: float = 100.0) -> tuple[Pacer, _Clock]:
    clock = _Clock()
    return Pacer(interval_s=INTERVAL_S, monotonic=clock, initial_rate=rate), clock


# --- the collector's queue ---------------------------------------------------------------------


def test_no_backlog_no_turn_and_an_empty_queue_says_now():
    pacer, _ = _pacer()
    assert pacer.ship_after("a", 0) is None
    assert pacer.ship_after("a", 500) == 0
    assert pacer.queued == 1


def test_turns_follow_the_events_queued_ahead_at_a_share_of_the_rate():
    pacer, _ = _pacer(rate=10.0)
    waits = [pacer.ship_after(f"agent-{n}", 100) for n in range(5)]
    assert PACE_SHARE == 0.8 and waits == [0, 13, 25, 38, 50], "12.5 s of work each backlog ahead, rounded up"
    assert pacer.ship_after("agent-3", 100) == waits[3], "asked again, the same place in the queue"
    pacer.stored("agent-0", 100)
    assert pacer.ship_after("agent-1", 100) == 0, "its turn once the agent ahead delivered"
    assert pacer.ship_after("agent-4", 100) == waits[3]


def test_processes_sharing_a_port_pace_at_their_combined_rate():
    pacer, _ = _pacer(rate=10.0)
    pacer.processes = 2  # dlp-server serve --workers 2: each process hears every agent, stores half the batches
    assert [pacer.ship_after(f"agent-{n}", 100) for n in range(5)] == [0, 0, 13, 19, 25], "16 events a second; under 15 s of work queued: now"


def test_short_waits_are_now_and_long_ones_bounded():
    pacer, _ = _pacer(rate=100.0)
    pacer.ship_after("first", int(100 * PACE_SHARE * (MIN_WAIT_S - 0.5)))
    assert pacer.ship_after("second", 1) == 0, "under MIN_WAIT_S of work ahead"
    pacer.ship_after("big", 10**9)
    assert pacer.ship_after("behind", 1) == math.ceil(MIN_WAIT_S - 0.5 + MAX_TICKET_EVENTS / (100.0 * PACE_SHARE)), "a backlog's place in the queue is bounded"
    slow, _ = _pacer(rate=1.0)
    slow.ship_after("first", 10**9)
    assert slow.ship_after("behind", 1) == MAX_WAIT_S


def test_the_rate_is_measured_over_busy_time_not_wall_time():
    pacer, clock = _pacer(rate=5000.0)
    pacer.ship_after("x", 1)  # the first sample
    for _ in range(10):  # busy half of each second, 1,000 events a second of busy time
        pacer.started()
        clock.now += 0.5
        pacer.stored("nobody", 500)
        pacer.finished()
        clock.now += 0.5
    pacer.ship_after("x", 1)
    assert pacer.rate == pytest.approx(1000.0)


def test_the_accounting_returns_to_zero_and_restarts():
    pacer, _ = _pacer(rate=1.0)
    for n in range(3):
        pacer.ship_after(f"a{n}", 100)
    pacer.stored("a0", 60)
    pacer.stored("a0", 60)  # more than its backlog: the rest counts nowhere
    pacer.stored("stranger", 10**6)  # no ticket: only the rate's count
    assert pacer.ship_after("a1", 0) is None, "reported empty: its ticket ends"
    assert pacer.ship_after("a2", 100) == 0, "a0 delivered, a1 left: nothing ahead"
    assert pacer.queued == 2, "a ticket stays until its agent reports no backlog"
    pacer.ship_after("a0", 0)
    pacer.ship_after("a2", 0)
    assert pacer.queued == 0 and (pacer._registered, pacer._served) == (0, 0)
    assert pacer.ship_after("late", 100) == 0, "a new queue, nothing ahead"


def test_one_large_backlog_does_not_hold_up_agents_in_steady_state():
    pacer, _ = _pacer(rate=5000.0)
    assert pacer.ship_after("laptop back from a trip", 50_000) == 0
    assert [pacer.ship_after(f"busy-{n}", 3) for n in range(100)] == [0] * 100, "12.5 s of work queued: under CONTENDED_S"


def test_what_a_heartbeat_no_longer_reports_was_delivered_elsewhere():
    pacer, _ = _pacer(rate=1.0)
    pacer.ship_after("a", 100)
    assert pacer.ship_after("b", 100) > 0
    pacer.ship_after("a", 40)  # 60 of its events went through another collector process
    assert pacer.ship_after("b", 100) == math.ceil(40 / PACE_SHARE)


def test_a_turn_lasts_while_the_agent_delivers():
    pacer, clock = _pacer(rate=1.0)
    assert pacer.ship_after("big", 1000) == 0
    pacer.ship_after("behind", 100)
    for _ in range(10):
        clock.now += GRACE_S / 4
        pacer.stored("big", 50)
        assert pacer.ship_after("big", 1000) == 0, "still its turn: it delivers"


def test_an_estimate_too_low_rises_while_agents_wait_on_an_idle_collector():
    pacer, clock = _pacer(rate=1.0)
    pacer.ship_after("a", 100)
    first = pacer.ship_after("b", 100)
    for _ in range(30):
        clock.now += 1.0
        pacer.ship_after("b", 100)
    assert pacer.rate > 100.0, "nothing stored, nothing busy: the estimate, not the collector, was wrong"
    assert first == 125 and pacer.ship_after("b", 100) == 0, "and the turn comes sooner"


def test_a_lapsed_turn_goes_to_the_back_and_silent_agents_are_forgotten():
    pacer, clock = _pacer(rate=10.0)
    assert pacer.ship_after("slow", 100) == 0
    assert pacer.ship_after("next", 100) > 0
    clock.now += GRACE_S
    assert pacer.ship_after("next", 100) > 0, "asked within FORGET_S: the agent ahead still counts"
    assert pacer.ship_after("slow", 100) > 0, "its turn came GRACE_S ago: behind 'next' now"
    assert pacer.ship_after("next", 100) == 0
    pacer.ship_after("third", 100)
    clock.now += FORGET_S
    pacer.ship_after("newcomer", 100)  # the sweep runs when a ticket is made
    assert pacer.queued == 1, "the three not heard from for FORGET_S are gone"


# --- the agent's shipper -------------------------------------------------------------------------


class _Collector(CollectorClient):
    """Counts posts; answers them ``answer``."""

    def __init__(self, answer: str = "ok") -> None:
        super().__init__("http://127.0.0.1:9")
        self.answer = answer
        self.posts = 0

    def post_events(self, events: list[dict[str, Any]]) -> Reply:
        self.posts += 1
        return Reply(self.answer, "down" if self.answer != "ok" else "", body={"accepted": len(events), "duplicates": [], "conflicts": []})


@pytest.fixture
def spool(tmp_path: Path):
    spool = Spool(str(tmp_path / "spool.db"), max_bytes=1 << 30)
    spool.put(event_record(), matched=True)
    yield spool
    spool.close()


def test_the_shipper_waits_for_its_turn_and_a_new_turn_retimes_the_wait(spool: Spool):
    collector = _Collector()
    shipper = Shipper(spool, FixedLink(collector), return_delay=lambda: 0.0)  # type: ignore[arg-type]
    shipper.heard({"ship_after_s": 600})
    shipper.start()
    try:
        wait_for(lambda: shipper._told_to_wait, timeout=5, message="waiting for its turn")
        assert collector.posts == 0, "told to wait 10 minutes"
        shipper.heard({"device_policy_version": 3})
        time.sleep(0.2)
        assert collector.posts == 0 and shipper._told_to_wait, "a reply without a turn leaves the wait as it was"
        shipper.heard({"ship_after_s": 0})
        wait_for(lambda: collector.posts == 1 and spool.depth() == 0, timeout=5, message="posted once its turn came")
    finally:
        shipper.stop()


def test_a_turn_is_bounded_and_bad_values_are_ignored(spool: Spool):
    shipper = Shipper(spool, FixedLink(_Collector()))  # type: ignore[arg-type]
    for bad in (-1, True, "10", None, float("nan"), float("inf")):
        shipper.heard({"ship_after_s": bad})
        assert shipper._not_before == 0.0, bad
    shipper.heard({"ship_after_s": 10**9})
    assert shipper._not_before - time.monotonic() <= PACED_RETRY_AFTER_S


def test_while_heartbeats_fail_the_shipper_waits_for_their_return(spool: Spool):
    collector = _Collector(answer="retry")
    shipper = Shipper(spool, FixedLink(collector), backoff=Backoff(start=0.05, cap=0.05), return_delay=lambda: 0.0)  # type: ignore[arg-type]
    shipper.collector_lost()
    shipper.start()
    try:
        wait_for(lambda: collector.posts == 1, timeout=5, message="the first attempt")
        time.sleep(0.5)
        assert collector.posts == 1, "no probe every 50 ms: heartbeats are failing, the wait is LOST_WAIT_S"
        collector.answer = "ok"
        shipper.heard({"ship_after_s": 0})
        shipper.collector_back()
        wait_for(lambda: collector.posts == 2 and spool.depth() == 0, timeout=5, message="shipped once a heartbeat got through")
    finally:
        shipper.stop()


def test_lost_wait_lengthens_short_delays_only():
    assert lost_wait(1.0, rand=lambda: 0.0) == LOST_WAIT_S / 2
    assert lost_wait(1.0, rand=lambda: 1.0) == LOST_WAIT_S
    assert lost_wait(2 * LOST_WAIT_S, rand=lambda: 0.5) == 2 * LOST_WAIT_S


# --- the agent's heartbeat -----------------------------------------------------------------------


def test_heartbeat_retries_slow_to_the_interval():
    low = [retry_delay(n, 60.0, rand=lambda: 0.0) for n in range(1, 7)]
    high = [retry_delay(n, 60.0, rand=lambda: 1.0) for n in range(1, 7)]
    assert low == [RETRY_S / 2] * STEADY_RETRIES + [RETRY_S, 30.0, 30.0]
    assert high == [RETRY_S * 1.5] * STEADY_RETRIES + [RETRY_S * 3, 90.0, 90.0]
    assert retry_delay(10**6, 600.0, rand=lambda: 0.5) == 600.0, "a long interval, reached in time"
    assert retry_delay(3, 5.0, rand=lambda: 0.5) == RETRY_S, "never faster than RETRY_S"


class _Beats:
    def __init__(self, kinds: list[str], body: dict[str, Any]) -> None:
        self.kinds, self.body = kinds, body

    def heartbeat(self, report: dict[str, Any]) -> Any:
        kind = self.kinds.pop(0) if self.kinds else "ok"
        return SimpleNamespace(kind=kind, detail="down", body=self.body if kind == "ok" else None)


class _Link:
    def __init__(self, beats: _Beats) -> None:
        self.beats = beats

    def current(self) -> tuple[_Beats, Any]:
        return self.beats, SimpleNamespace(heartbeat_interval_s=60)

    def close(self) -> None:
        pass


def test_heartbeat_tells_the_shipper_lost_once_a_second_fails_and_hands_on_the_turn_before_back():
    calls: list[str] = []
    beat = Heartbeat(
        _Link(_Beats(["retry", "retry", "retry", "ok", "retry"], {"ship_after_s": 42})),
        dict,
        on_back=lambda: calls.append("back"),
        on_lost=lambda: calls.append("lost"),
        on_reply=lambda body: calls.append(f"turn {body['ship_after_s']}"),
    )
    waits: list[float] = []
    done = threading.Event()

    def wait(delay: float) -> bool:
        waits.append(delay)
        if len(waits) >= 6:
            done.set()
        return done.is_set()

    beat.wait = wait  # type: ignore[method-assign]
    beat.run_loop()
    assert LOST_AFTER == 2 and calls == ["lost", "turn 42", "back", "turn 42", "back"], "one failure is not lost"


# --- the collector's replies ---------------------------------------------------------------------


@pytest.mark.one_collector  # each process queues the agents it hears (server/pacing.py)
def test_heartbeat_replies_name_the_turn_of_agents_with_a_backlog(client, collector, enroll):
    """Agents reporting a backlog are queued in the order they report it; an event batch stored
    moves the queue on; an agent reporting none is told nothing (``ship_after_s`` null)."""
    collector.pacer = Pacer(initial_rate=10.0)  # 100 events ahead = 12.5 s at PACE_SHARE (admission reports to the first pacer: no batch in flight here)
    first, second, idle = enroll(hostname="ws-1"), enroll(hostname="ws-2"), enroll(hostname="ws-3")

    def turn(agent: Any, depth: int) -> Any:
        answer = client.post("/api/v1/heartbeat", json={"agent_version": "0.1.0", "spool_depth": depth}, headers=agent.headers)
        assert answer.status_code == 200, answer.text
        return answer.json()["ship_after_s"]

    assert turn(idle, 0) is None
    assert turn(first, 100) == 0
    assert turn(second, 100) == 13
    assert turn(first, 100) == 0 and turn(second, 100) == 13, "asked again: the same turns"
    events = [event_record(host="ws-1") for _ in range(100)]
    assert client.post("/api/v1/events", json={"events": events}, headers=first.headers).status_code == 200
    assert turn(second, 100) == 0, "the agent ahead delivered its backlog"
    assert turn(first, 0) is None
