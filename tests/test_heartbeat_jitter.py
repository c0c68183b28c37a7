"""The agent's heartbeat spreads a fleet out again after a collector outage.

With a fixed retry, every agent that lost the collector kept beating in the same few seconds of
each interval once it came back (bench/drain.py). The waits are read off the thread's ``wait``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from agent import heartbeat
from agent.heartbeat import RETRY_S, STEADY_RETRIES, Heartbeat


@dataclass
class _Client:
    answers: list[str]
    sent: list[dict[str, Any]] = field(default_factory=list)

    def heartbeat(self, report: dict[str, Any]) -> Any:
        self.sent.append(report)
        kind = self.answers.pop(0) if self.answers else "ok"
        return SimpleNamespace(kind=kind, detail="" if kind == "ok" else "connection refused", body={"heartbeat_interval_s": 60} if kind == "ok" else None)


class _Link:
    def __init__(self, client: _Client) -> None:
        self.client = client

    def current(self) -> tuple[_Client, Any]:
        return self.client, SimpleNamespace(heartbeat_interval_s=60)

    def close(self) -> None:
        pass


def _waits(answers: list[str], count: int) -> tuple[list[float], int]:
    """The delays the thread waits for, run in this thread until ``count`` of them; and how often it said it was back."""
    backs: list[int] = []
    beat = Heartbeat(_Link(_Client(list(answers))), lambda: {"spool_depth": 0}, on_back=lambda: backs.append(1))
    waits: list[float] = []

    def wait(delay: float) -> bool:
        waits.append(delay)
        return len(waits) >= count

    beat.wait = wait  # type: ignore[method-assign]
    beat.run_loop()
    return waits, len(backs)


def test_failed_heartbeats_retry_at_spread_times_slowing_to_the_interval():
    waits, backs = _waits(["retry"] * 40, 40)
    assert all(0.5 * RETRY_S <= w <= 1.5 * RETRY_S for w in waits[:STEADY_RETRIES])
    steady = waits[STEADY_RETRIES + 1 :]  # an outage past a minute or so: about one retry an interval, as when the collector answers
    assert all(30.0 <= w <= 90.0 for w in steady)
    assert len({round(w, 3) for w in steady}) > 30  # not one fixed retry
    assert min(steady) < 45.0 and max(steady) > 75.0
    assert backs == 0


def test_the_first_heartbeat_back_takes_a_new_phase_then_the_interval_holds():
    phases = []
    for _ in range(30):
        waits, backs = _waits(["retry", "retry"], 5)
        assert backs == 1
        assert waits[3:] == [60.0, 60.0]  # then every interval after each answer
        phases.append(waits[2])
    assert all(0 < p <= 60 for p in phases)
    assert len({round(p, 3) for p in phases}) > 25 and min(phases) < 30 < max(phases)


def test_an_agent_that_never_lost_the_collector_keeps_its_interval(monkeypatch):
    monkeypatch.setattr(heartbeat, "first_delay_back", lambda *a, **k: (_ for _ in ()).throw(AssertionError("no outage")))
    waits, backs = _waits([], 4)
    assert waits == [60.0] * 4 and backs == 0
