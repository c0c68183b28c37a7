"""The fanotify hub at idle: asleep until an event, other programs' writes read in batches and dropped cheaply, none under a root lost."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from agent.sources.fanotify_hub import BATCH_S, FanotifyHub, ForeignRate
from agent.sources.losses import LossTracker
from tests.waiting import wait_for

pytestmark = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="fanotify needs CAP_SYS_ADMIN")


class Gate:
    """The hub's ``settle``: held until the test opens it, so events pile up in the kernel meanwhile."""

    def __init__(self) -> None:
        self.held = threading.Event()
        self.opened = threading.Event()
        self.calls = 0
        self.waits: list[float] = []

    def settle(self, seconds: float) -> bool:
        # Runs on the hub's thread, where a failed assert would only kill the reader: kept for
        # the test's thread to check (see check_waits).
        self.waits.append(seconds)
        self.calls += 1
        self.held.set()
        self.opened.wait(30)
        return False

    def check_waits(self) -> None:
        assert all(0 < seconds <= BATCH_S for seconds in self.waits), self.waits


class Sink:
    """Takes the hub's events in place of a file source, noting which read each close came in."""

    def __init__(self, hub: FanotifyHub) -> None:
        self.losses = LossTracker()
        self.hub = hub
        self.closed: dict[str, tuple[int, int]] = {}  # path -> (the hub's reads, its events) when handed on

    def file_closed(self, path: str, process: dict[str, Any] | None = None) -> None:
        self.closed[path] = (self.hub.reads, self.hub.events)

    def file_created(self, path: str, reason: str = "moved", process: dict[str, Any] | None = None) -> None:
        pass

    def file_modified(self, path: str, process: dict[str, Any] | None = None) -> None:
        pass

    def file_moved_in(self, path: str, process: dict[str, Any] | None = None) -> None:
        pass

    def folder_moved_in(self, path: str, process: dict[str, Any] | None = None) -> None:
        pass

    def events_lost(self, root: str) -> None:
        pass


def test_writes_outside_the_roots_are_read_in_one_batch_with_the_write_under_a_root(tmp_path: Path) -> None:
    gate = Gate()
    # own_pid 0: this test's own writes count as another program's; quiet 0: gathering from the first.
    hub = FanotifyHub(own_pid=0, settle=gate.settle, foreign=ForeignRate(quiet=0.0))
    root, outside = tmp_path / "Documents", tmp_path / "builds"
    root.mkdir()
    outside.mkdir()
    sink = Sink(hub)
    hub.watch(str(root), sink)
    hub.start()
    try:
        # A read with nothing under the root (this write, or any other program's) makes the hub settle.
        (outside / "first.o").write_text("first")
        wait_for(gate.held.is_set, message="the hub settling after a read of writes outside the roots")
        reads, events = hub.reads, hub.events
        for folder in range(5):  # fresh folders, as a test suite makes: no ignore mark would cover them
            made = outside / f"tmp{folder}"
            made.mkdir()
            for i in range(4):
                (made / f"f{i}.o").write_text(str(i))
        (root / "report.txt").write_text("written while the hub settled")
        gate.opened.set()
        at_read, at_events = wait_for(lambda: sink.closed.get(str(root / "report.txt")), message="the write under the root")
        assert at_read == reads + 1, "the events that gathered while the hub settled took more than one read"
        assert at_events - events >= 20 + 1, "the writes outside were not in the read with the one under the root"
        assert list(sink.closed) == [str(root / "report.txt")]
    finally:
        gate.opened.set()
        hub.stop()
        hub.close()
    assert not hub.is_alive()
    gate.check_waits()


def test_an_idle_hub_sleeps_until_stopped_and_stops_at_once(tmp_path: Path) -> None:
    """No timeout on the reader's wait: ``stop`` wakes it through its pipe, well before any poll interval."""
    hub = FanotifyHub()
    sink = Sink(hub)
    hub.watch(str(tmp_path), sink)
    hub.start()
    try:
        wait_for(lambda: hub.is_alive(), message="the reader running")
    finally:
        hub.stop(timeout=5)
        hub.close()
        hub.close()  # harmless twice
    assert not hub.is_alive(), "the hub's reader did not end on stop()"


def test_a_folder_known_to_be_outside_every_root_is_reported_once_it_becomes_one(tmp_path: Path) -> None:
    """Files of a folder under no root are dropped before a path is made; a root added there (or a
    folder moved) ends that at once. Three writes: far fewer than an ignore mark in the kernel takes."""
    hub = FanotifyHub(own_pid=0)
    root, outside = tmp_path / "Documents", tmp_path / "scratch"
    root.mkdir()
    outside.mkdir()
    first, later = Sink(hub), Sink(hub)
    hub.watch(str(root), first)
    hub.start()
    try:
        for i in range(3):
            (outside / f"draft{i}.txt").write_text("under no root yet")
        (root / "marker.txt").write_text("read after the drafts")
        wait_for(lambda: str(root / "marker.txt") in first.closed, message="the write under the root")
        hub.watch(str(outside), later)
        (outside / "kept.txt").write_text("under a root now")
        wait_for(lambda: str(outside / "kept.txt") in later.closed, message="the write in the folder that became a root")
        assert not hub.ignoring(str(outside))
        assert list(first.closed) == [str(root / "marker.txt")]
    finally:
        hub.stop()
        hub.close()
