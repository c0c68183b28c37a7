"""The egress tracker at idle: asleep until an exec, an exit or stop, which wakes it."""

from __future__ import annotations

from pathlib import Path

from agent.config import EgressSection
from agent.egress.tracker import EgressTracker
from tests.waiting import wait_for


def test_an_idle_tracker_sleeps_until_stop_wakes_it(tmp_path: Path) -> None:
    """No timeout on its queue: ``stop`` must wake it (the join would otherwise give up with it alive)."""
    tracker = EgressTracker(EgressSection(), [str(tmp_path)], lambda work: True)
    tracker.start()
    try:
        assert tracker.wait_ready(30), "the tracker did not learn the protected folders"
        wait_for(lambda: tracker.is_alive(), message="the tracker running")
    finally:
        tracker.stop(timeout=10)
    assert not tracker.is_alive(), "the tracker was left asleep by stop()"
