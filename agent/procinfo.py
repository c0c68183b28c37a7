"""Who a process is: executable, command line, user and parents, read from ``/proc`` (Linux).

A file event that names the writing process (fanotify gives its pid) is worth little
without what a reviewer recognises: ``/usr/bin/cp`` run by ``jdoe`` from ``bash``. The
facts are read when the event arrives; a process that has already exited (a short ``cp``)
leaves only its pid, and the fields it could not give are ``None``. Everything read is
bounded: command lines are capped, the parent chain is a few levels.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from agent.sources.proc_reader import read_status_file as _status  # one parser for both (the reader imports nothing of the agent)

try:
    import pwd
except ImportError:  # Windows: /proc is not there either, every fact stays None
    pwd = None  # type: ignore[assignment]

MAX_CMDLINE_CHARS = 1024
PARENT_LEVELS = 4


@dataclasses.dataclass(frozen=True)
class Process:
    """What is known of one process; ``None`` where ``/proc`` could not say."""

    pid: int
    exe: str | None = None
    cmdline: str | None = None
    uid: int | None = None
    user: str | None = None
    ppid: int | None = None

    def to_dict(self) -> dict[str, Any]:
        # Spelled out: dataclasses.asdict deep-copies field by field, ten times slower on every file event.
        return {"pid": self.pid, "exe": self.exe, "cmdline": self.cmdline, "uid": self.uid, "user": self.user, "ppid": self.ppid}


def describe(pid: int, *, proc: str = "/proc", user: Callable[[int | None], str | None] | None = None) -> Process:
    """The facts of ``pid`` that can still be read (the executable first: it goes first when a process exits)."""
    base = os.path.join(proc, str(pid))
    exe = _read_link(os.path.join(base, "exe"))
    cmdline = _cmdline(os.path.join(base, "cmdline"))
    uid, ppid = _status(os.path.join(base, "status"))
    return Process(pid=pid, exe=exe, cmdline=cmdline, uid=uid, user=(user or _user)(uid), ppid=ppid)


def lineage(pid: int, *, levels: int = PARENT_LEVELS, proc: str = "/proc") -> list[Process]:
    """``pid`` and up to ``levels`` of its parents, nearest first (stops at init or an exited parent)."""
    return _chain(pid, levels, lambda p: describe(p, proc=proc))


def writer(pid: int, *, levels: int = PARENT_LEVELS, proc: str = "/proc") -> dict[str, Any]:
    """An event's ``process``: ``pid``'s facts plus ``parents`` (nearest first), as plain data."""
    return _as_process(lineage(pid, levels=levels, proc=proc))


def _chain(pid: int, levels: int, look: Callable[[int], Process]) -> list[Process]:
    chain = [look(pid)]
    seen = {pid}
    while len(chain) <= levels:
        parent = chain[-1].ppid
        if not parent or parent in seen:
            break
        seen.add(parent)
        chain.append(look(parent))
    return chain


def _as_process(chain: list[Process]) -> dict[str, Any]:
    return {**chain[0].to_dict(), "parents": [p.to_dict() for p in chain[1:]]}


class WriterCache:
    """``writer(pid)`` for a stream of file events, cheap enough to call on each one.

    A process writing many files costs one ``/proc`` read per ``ttl_s``; parents (a shell, a file
    manager) are shared by many writers and cached the same way; user names are looked up once.
    A process seen alive and gone by the next look (a ``cp`` that exited right after its close:
    the folder-entry event came first) keeps what was read while it ran. Bounded to
    ``max_entries`` processes; thread-safe.
    """

    def __init__(self, *, ttl_s: float = 2.0, keep_s: float = 30.0, max_entries: int = 4096, proc: str = "/proc"):
        self._ttl_s = ttl_s
        self._keep_s = keep_s
        self._max = max_entries
        self._proc = proc
        self._lock = threading.Lock()
        self._seen: dict[int, tuple[float, Process]] = {}
        self._built: dict[int, tuple[float, dict[str, Any]]] = {}
        self._users: dict[int, str | None] = {}

    def writer(self, pid: int, *, levels: int = PARENT_LEVELS) -> dict[str, Any]:
        """The event's ``process`` for ``pid`` (as ``writer``), from the cache where fresh.

        Many events of one writer within ``ttl_s`` share one dict: callers must not change it.
        """
        now = time.monotonic()
        with self._lock:
            built = self._built.get(pid)
        if built is not None and now - built[0] < self._ttl_s:
            return built[1]
        process = _as_process(_chain(pid, levels, self.describe))
        with self._lock:
            if len(self._built) >= self._max:
                self._built.clear()
            self._built[pid] = (now, process)
        return process

    def describe(self, pid: int) -> Process:
        now = time.monotonic()
        with self._lock:
            cached = self._seen.get(pid)
        if cached is not None and now - cached[0] < self._ttl_s:
            return cached[1]
        fresh = describe(pid, proc=self._proc, user=self._user)
        if fresh.exe is None and fresh.cmdline is None and cached is not None and now - cached[0] < self._keep_s:
            # Exited (or a zombie): what it was a moment ago is still who wrote (a pid is not reused that fast).
            return cached[1]
        with self._lock:
            if len(self._seen) >= self._max:
                self._evict(now)
            self._seen[pid] = (now, fresh)
        return fresh

    def _evict(self, now: float) -> None:
        """Drop entries too old to be used; all of them when every one is recent (a fork storm)."""
        for pid in [pid for pid, (at, _) in self._seen.items() if now - at >= self._keep_s]:
            del self._seen[pid]
        if len(self._seen) >= self._max:
            self._seen.clear()

    def user(self, uid: int | None) -> str | None:
        """The name of ``uid``, looked up once."""
        return self._user(uid)

    def _user(self, uid: int | None) -> str | None:
        if uid is None:
            return None
        if uid not in self._users:
            if len(self._users) >= self._max:
                self._users.clear()
            self._users[uid] = _user(uid)
        return self._users[uid]


def _read_link(path: str) -> str | None:
    try:
        target = os.readlink(path)
    except OSError:
        return None
    return target


def _cmdline(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CMDLINE_CHARS * 4 + 1)
    except OSError:
        return None
    if not raw:
        return None  # a kernel thread, or a process already reaped
    text = " ".join(part.decode("utf-8", "replace") for part in raw.rstrip(b"\0").split(b"\0"))
    return text if len(text) <= MAX_CMDLINE_CHARS else text[: MAX_CMDLINE_CHARS - 1] + "\u2026"


def status(pid: int, *, proc: str = "/proc") -> tuple[int | None, int | None]:
    """Real uid and parent pid of ``pid`` (None, None when it is gone): two facts that are right even
    in the middle of an ``execve``, unlike the command line and the executable."""
    return _status(os.path.join(proc, str(pid), "status"))


def _user(uid: int | None) -> str | None:
    if uid is None or pwd is None:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None
