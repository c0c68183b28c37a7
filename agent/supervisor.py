"""Background threads that die are counted, reported and restarted: the one place for that policy.

A thread that raised (a MemoryError in a bundle check, a bug in a source) used to end for good
while heartbeats went on saying nothing was wrong. Every ``StoppableThread`` the daemon watches
asks the supervisor, when its loop ends unasked, whether and when to run it again; the answer
backs off (1 s doubling to 5 minutes) and is bounded (a thread that dies ``max_deaths`` times
without ever running ``stable_s`` in between is given up on). Each death shows in ``health()``,
which the daemon merges into ``dlp-agent status`` and the heartbeat.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.threads import StoppableThread

log = logging.getLogger(__name__)

BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 300.0
MAX_DEATHS = 10
STABLE_S = 600.0


@dataclass
class _Record:
    label: str
    deaths: int = 0
    in_a_row: int = 0
    last_error: str = ""
    last_died_at: float | None = None
    started_at: float = 0.0
    state: str = "running"  # running | restarting | failed


class Supervisor:
    """Restart policy and death records for the threads it watches.

    Args:
        backoff_start_s: the wait before the first restart; doubled for each death in a row.
        backoff_max_s: the longest wait between restarts.
        max_deaths: deaths in a row (no run of ``stable_s`` between them) after which a thread stays down.
        stable_s: a run at least this long resets the backoff and the count in a row.
        clock: monotonic seconds; ``wall_clock`` epoch seconds for the reported time of death.
    """

    def __init__(
        self,
        *,
        backoff_start_s: float = BACKOFF_START_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        max_deaths: int = MAX_DEATHS,
        stable_s: float = STABLE_S,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._backoff_start_s = backoff_start_s
        self._backoff_max_s = backoff_max_s
        self._max_deaths = max_deaths
        self._stable_s = stable_s
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._records: dict[StoppableThread, _Record] = {}

    def watch(self, thread: StoppableThread, label: str | None = None) -> None:
        """Supervise ``thread`` (before it starts); its deaths are reported under ``label`` (its name by default).

        Labels are the keys of the daemon's health report, so each watched thread needs its own.
        """
        with self._lock:
            self._records[thread] = _Record(label or thread.name, started_at=self._clock())
        thread.supervisor = self

    def forget(self, thread: StoppableThread) -> None:
        """Stop reporting ``thread`` (a USB volume's watcher once the volume is gone)."""
        with self._lock:
            self._records.pop(thread, None)
        thread.supervisor = None

    def died(self, thread: StoppableThread, error: str) -> float | None:
        """Record that ``thread``'s loop ended unasked; seconds to wait before running it again, None to give up."""
        now = self._clock()
        with self._lock:
            record = self._records.get(thread)
            if record is None:
                return None
            if now - record.started_at >= self._stable_s:
                record.in_a_row = 0
            record.deaths += 1
            record.in_a_row += 1
            record.last_error = error[:500]
            record.last_died_at = self._wall_clock()
            if record.in_a_row >= self._max_deaths:
                record.state = "failed"
                log.error("%s died %d times in a row (last: %s); not restarting it", record.label, record.in_a_row, error)
                return None
            record.state = "restarting"
            delay = min(self._backoff_max_s, self._backoff_start_s * 2.0 ** (record.in_a_row - 1))
        log.error("%s died (%s); restarting it in %gs", record.label, error, delay)
        return delay

    def restarted(self, thread: StoppableThread) -> None:
        """``thread`` runs its loop again."""
        with self._lock:
            record = self._records.get(thread)
            if record is not None:
                record.state = "running"
                record.started_at = self._clock()

    def health(self) -> dict[str, dict[str, Any]]:
        """Per label that has had a death: state (``ok`` running again, ``degraded`` restarting, ``failed``),
        ``deaths``, ``last_error`` and ``last_died_at`` (epoch seconds)."""
        states = {"running": "ok", "restarting": "degraded", "failed": "failed"}
        with self._lock:
            return {
                record.label: {
                    "state": states[record.state],
                    "deaths": record.deaths,
                    "last_error": record.last_error,
                    "last_died_at": record.last_died_at,
                }
                for record in self._records.values()
                if record.deaths
            }
