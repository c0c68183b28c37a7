"""Who wrote a file, as the fanotify hub tells it: /proc at the event, else what the writer's start showed.

A ``cp`` of a small file is gone within microseconds of its close, its /proc entry with it, often
before the hub reads the event. The hub also sees programs start (``FAN_OPEN_EXEC`` on the
filesystems it marks), and reads then, while the process surely runs, the two facts /proc gives
right in the middle of an ``execve``: its user and its parent. A writer found gone is named by
that record.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from agent import procinfo
from agent.procinfo import WriterCache

MAX_RECORDS = 8192
FIRST_S = 1.0  # the program's own open comes first; its ELF interpreter's, just after, is not the program
KEEP_S = 60.0  # long before a pid is reused (pid_max is 4 million on 64-bit Linux)


@dataclasses.dataclass(frozen=True)
class _Start:
    at: float
    program: str
    uid: int | None
    ppid: int | None


class Writers:
    """The event's ``process`` for a pid; used from the hub's thread only."""

    def __init__(self, cache: WriterCache | None = None):
        self._cache = cache or WriterCache()
        self._starts: dict[int, _Start] = {}

    def started(self, pid: int, program: str) -> None:
        """``pid`` opened ``program`` to run it."""
        now = time.monotonic()
        known = self._starts.get(pid)
        if known is not None and now - known.at < FIRST_S:
            return
        if len(self._starts) >= MAX_RECORDS:
            self._starts = {p: e for p, e in self._starts.items() if now - e.at < KEEP_S}
            if len(self._starts) >= MAX_RECORDS:
                self._starts.clear()
        self._starts[pid] = _Start(now, program, *procinfo.status(pid))

    def writer(self, pid: int) -> dict[str, Any]:
        """From /proc (through the cache); where it is gone, its program, user and parents as its start showed."""
        process = self._cache.writer(pid)
        known = self._starts.get(pid)
        if process["exe"] is not None or known is None or time.monotonic() - known.at >= KEEP_S:
            return process
        filled = {**process, "exe": known.program}
        if process["ppid"] is None and known.ppid:
            parent = self._cache.writer(known.ppid)
            chain = [{k: v for k, v in parent.items() if k != "parents"}, *parent["parents"]]
            filled.update(uid=known.uid, user=self._cache.user(known.uid), ppid=known.ppid, parents=chain[: procinfo.PARENT_LEVELS])
        return filled
