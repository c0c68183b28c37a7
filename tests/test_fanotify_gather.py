"""When the fanotify reader gathers other programs' events: not while they are rare, longer as they grow, never past ``BATCH_S``."""

from __future__ import annotations

import pytest

from agent.sources.fanotify_hub import BATCH_S, BUSY_RATE, QUIET_RATE, ForeignRate


def test_rare_events_elsewhere_are_read_at_once() -> None:
    rate = ForeignRate()
    for tenth in range(10):  # a few events a second, well below the quiet rate
        rate.note(100.0 + tenth / 10, 1)
    assert rate.rate(100.95) == 10
    assert rate.gather_s(100.95) == 0.0


def test_frequent_events_elsewhere_are_gathered_longer_as_they_grow_up_to_the_batch() -> None:
    rate = ForeignRate()
    step = int(BUSY_RATE - QUIET_RATE) // 4
    rate.note(200.1, int(QUIET_RATE) + step)
    some = rate.gather_s(200.2)
    rate.note(200.3, step)
    more = rate.gather_s(200.4)
    rate.note(200.5, int(BUSY_RATE) * 10)
    most = rate.gather_s(200.6)
    assert 0 < some < more < most == BATCH_S


def test_the_reader_goes_back_to_reading_at_once_when_the_writes_elsewhere_stop() -> None:
    rate = ForeignRate()
    rate.note(300.5, int(BUSY_RATE) * 2)
    assert rate.gather_s(300.9) == BATCH_S
    # The next second still counts the busy one for the part of it the last second covers...
    assert rate.gather_s(301.1) > 0
    # ... and two seconds on, nothing of it is left.
    assert rate.gather_s(302.2) == 0.0
    rate.note(310.0, 1)  # a gap of seconds: the old second is no "previous" one
    assert rate.rate(310.0) == 1


def test_the_thresholds_are_the_callers() -> None:
    """The hub's tests gather from the first event (quiet 0) to see a batch made."""
    rate = ForeignRate(quiet=0.0, busy=10.0, longest_s=0.2)
    rate.note(5.0, 1)
    assert rate.gather_s(5.0) == pytest.approx(0.2 / 10)
    rate.note(5.1, 50)
    assert rate.gather_s(5.1) == 0.2
