"""Files being written on a removable volume: when each is due for a scan while still open."""

from __future__ import annotations

import dataclasses
import threading


@dataclasses.dataclass(frozen=True)
class WriteWatch:
    """Scan files while they are written: after ``quiet_s`` without a write, or ``interval_s``
    into an unbroken stream of writes (doubling per file up to ``max_interval_s``)."""

    quiet_s: float = 0.5
    interval_s: float = 5.0
    max_interval_s: float = 60.0


@dataclasses.dataclass
class _Writing:
    last: float  # monotonic time of the last write seen
    due: float  # scan by then even if writes go on
    interval: float


class WriteTracker:
    """Files written to and not scanned since, by path; thread-safe (watchdog threads write, the
    source's timer reads). Times are ``time.monotonic()`` values handed in by the caller."""

    def __init__(self, watch: WriteWatch):
        self.watch = watch
        self._lock = threading.Lock()
        self._writing: dict[str, _Writing] = {}

    def __bool__(self) -> bool:
        return bool(self._writing)

    def wrote(self, path: str, now: float) -> bool:
        """A write to ``path``; True when the file was not being tracked yet."""
        with self._lock:
            writing = self._writing.get(path)
            if writing is not None:
                writing.last = now
                return False
            self._writing[path] = _Writing(last=now, due=now + self.watch.interval_s, interval=self.watch.interval_s)
            return True

    def forget(self, path: str) -> None:
        """Scanned some other way (closed, or reported gone)."""
        with self._lock:
            self._writing.pop(path, None)

    def due(self, now: float) -> list[str]:
        """Files to scan now: quiet ones (no longer tracked) and ones written without pause for too long."""
        due = []
        with self._lock:
            for path, writing in list(self._writing.items()):
                if now - writing.last >= self.watch.quiet_s:
                    del self._writing[path]
                    due.append(path)
                elif now >= writing.due:
                    # Written without pause: scan what is there, then wait longer before the next look.
                    writing.interval = min(2 * writing.interval, self.watch.max_interval_s)
                    writing.due = now + writing.interval
                    due.append(path)
        return due

    def take_all(self) -> list[str]:
        """Every file still being written (its volume went away), no longer tracked."""
        with self._lock:
            paths = list(self._writing)
            self._writing.clear()
        return paths
