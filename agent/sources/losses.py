"""Events the kernel dropped (inotify queue overflow): since when files need a second look, and the bounded walk that gives it."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterator

from agent.scanning.walk import iter_targets

CALM_GAP_S = 1.0  # no event for this long: the kernel's queue was empty, nothing lost before
STAMP_SLACK_S = 2.0  # file times lag the clock (coarse ticks; FAT keeps 2 s steps)
SETTLE_S = 1.0  # rescan once overflows stop for this long...
LONGEST_WAIT_S = 10.0  # ...or this long after the first, whichever is sooner
MAX_FILES = 200_000
MAX_WALK_S = 60.0
DEGRADED_S = 300.0  # a source reads degraded this long after events were lost


@dataclasses.dataclass(frozen=True)
class Rescan:
    """What to walk: files under ``roots`` changed at or after ``since`` (wall time)."""

    since: float
    roots: list[str]


class LossTracker:
    """Follows a source's events to know the last calm moment, and the overflows since; thread-safe.

    ``event_started``/``event_finished`` bracket each event (watchdog threads); ``lost`` records an
    overflow; the source's timer asks ``due`` and then ``take`` the rescan to run.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calm_at = self._last_event_end = time.time()
        self.in_event = False
        self._since: float | None = None
        self._roots: set[str] = set()
        self._first = self._last = 0.0  # monotonic times of the overflows awaiting a rescan
        self._last_walk = 0.0
        self.message: str | None = None  # what the last overflow cost

    @property
    def pending(self) -> bool:
        return self._since is not None

    def event_started(self) -> None:
        """A gap long enough since the last event means the kernel's queue was empty then,
        so a later overflow lost nothing older than that."""
        self.in_event = True
        if time.time() - self._last_event_end >= CALM_GAP_S:
            self._calm_at = self._last_event_end

    def event_finished(self) -> None:
        self._last_event_end = time.time()
        self.in_event = False

    def quiet_for(self) -> float:
        """Seconds since the last event was handled."""
        return time.time() - self._last_event_end

    def lost(self, root: str, now: float) -> None:
        with self._lock:
            self._roots.add(root)
            if self._since is None:
                self._since = max(self._calm_at, self._last_walk) - STAMP_SLACK_S
                self._first = now
            self._last = now
            self.message = f"inotify queue overflowed at {time.strftime('%H:%M:%S')}: events were lost; rescan pending"

    def due(self, now: float) -> bool:
        with self._lock:
            return self._since is not None and (now - self._last >= SETTLE_S or now - self._first >= LONGEST_WAIT_S)

    def take(self) -> Rescan | None:
        with self._lock:
            if self._since is None:
                return None
            rescan = Rescan(self._since, sorted(self._roots))
            self._since = None
            self._roots.clear()
        self._last_walk = time.time()
        return rescan

    def degraded(self, now: float) -> str | None:
        """The message while it should degrade the source's health, else None."""
        if self.message and (self._since is not None or now - self._last < DEGRADED_S):
            return self.message
        return None


def changed_files(rescan: Rescan, *, exclude: tuple[str, ...], stopping: Callable[[], bool]) -> Iterator[str]:
    """Files under the rescan's roots whose mtime or ctime is at or after ``since``; stops (raising
    ``WalkCut`` at the end of the iteration) past MAX_FILES files looked at or MAX_WALK_S seconds."""
    deadline = time.monotonic() + MAX_WALK_S
    for seen, target in enumerate(iter_targets(rescan.roots, exclude=exclude)):
        if seen >= MAX_FILES or time.monotonic() > deadline or stopping():
            raise WalkCut(seen)
        if target.error is not None:
            continue
        try:
            info = os.stat(target.path, follow_symlinks=False)
        except OSError:
            continue
        if max(info.st_mtime, info.st_ctime) >= rescan.since:
            yield target.path


class WalkCut(Exception):
    """The rescan stopped at its bounds after looking at ``seen`` files."""

    def __init__(self, seen: int):
        super().__init__(f"stopped after {seen} file(s)")
        self.seen = seen
