"""Being told when a process ends: one thread polling a pidfd per watched process (Linux 5.3+).

A git push is worth a look once it has finished (its refs are then known, the remote has them).
A pidfd becomes readable when its process exits, whoever its parent is, and unlike a pid it
cannot come to name another process, so no polling of /proc and no race with pid reuse.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import select
import threading
from collections.abc import Callable

from agent.threads import StoppableThread

log = logging.getLogger(__name__)

MAX_WATCHED = 4096
"""Processes watched at once, each holding a descriptor; past it the oldest is called back early."""

_pidfd_open: Callable[[int], int] | None = getattr(os, "pidfd_open", None)


class ExitWatcher(StoppableThread):
    """Calls ``callback(pid)`` once ``pid`` has exited, on the watcher's thread.

    A process already gone is called back at once, on the caller's thread. Where pidfds are not
    available (not Linux, a kernel older than 5.3) every watch is called back at once, so a
    caller waiting on it never waits forever. ``stop`` drops the watches left, uncalled.

    Args:
        max_watched: how many processes may be watched at once.
    """

    def __init__(self, *, max_watched: int = MAX_WATCHED):
        super().__init__(name="proc-exits")
        self.max_watched = max_watched
        self._lock = threading.Lock()
        self._pending: collections.deque[tuple[int, int, Callable[[int], None]]] = collections.deque()
        self._watched: collections.OrderedDict[int, tuple[int, list[Callable[[int], None]]]] = collections.OrderedDict()  # fd -> (pid, callbacks)
        self._by_pid: dict[int, int] = {}  # pid -> fd, of the watched
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._closed = False
        self.exited = 0  # callbacks made on an exit the kernel reported
        self.early = 0  # callbacks made before the exit, to stay within ``max_watched``
        self.callback_errors = 0

    @property
    def watching(self) -> int:
        with self._lock:
            return len(self._watched) + len(self._pending)

    def watch(self, pid: int, callback: Callable[[int], None]) -> None:
        """Call ``callback(pid)`` once ``pid`` has exited (at once when it is already gone)."""
        with self._lock:
            closed = self._closed
        fd = -1
        if not closed and _pidfd_open is not None:
            try:
                fd = _pidfd_open(pid)
            except OSError as exc:
                if exc.errno != errno.ESRCH:
                    log.warning("cannot watch pid %d: %s", pid, exc)
        if fd < 0:
            self._call(callback, pid)
            return
        dropped = None
        with self._lock:
            if not self._closed:
                self._pending.append((fd, pid, callback))
                fd = -1
                if len(self._pending) > self.max_watched:  # the thread is behind (a slow callback): stay bounded
                    dropped = self._pending.popleft()
                    self.early += 1
        if fd >= 0:  # stopped meanwhile
            os.close(fd)
            self._call(callback, pid)
            return
        if dropped is not None:
            os.close(dropped[0])
            self._call(dropped[2], dropped[1])
        self._wake()

    def on_stop(self) -> None:
        self._wake()

    def stop(self, timeout: float | None = 5.0) -> None:
        super().stop(timeout)
        with self._lock:
            if self._closed:
                return
            self._closed = True
            fds = [fd for fd, _, _ in self._pending] + list(self._watched)
            self._pending.clear()
            self._watched.clear()
            self._by_pid.clear()
        for fd in [*fds, self._wake_r, self._wake_w]:
            os.close(fd)

    def run_loop(self) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        with self._lock:
            for fd in self._watched:
                poller.register(fd, select.POLLIN)
        while not self.stopping:
            events = poller.poll()
            if self.stopping:
                return
            ended: list[tuple[int, list[Callable[[int], None]]]] = []
            with self._lock:
                for fd, _ in events:
                    if fd == self._wake_r:
                        self._drain()
                    elif fd in self._watched:
                        poller.unregister(fd)
                        ended.append(self._watched.pop(fd))
                        del self._by_pid[ended[-1][0]]
                        os.close(fd)
                        self.exited += 1
                early = self._admit(poller)
            for pid, callbacks in ended + early:
                for callback in callbacks:
                    self._call(callback, pid)

    def _admit(self, poller: select.poll) -> list[tuple[int, list[Callable[[int], None]]]]:
        """With the lock held: watch the pending processes; return those let go early to make room."""
        early = []
        while self._pending:
            fd, pid, callback = self._pending.popleft()
            known = self._by_pid.get(pid)
            if known is not None:  # one descriptor per process; a second watch adds a callback
                os.close(fd)
                self._watched[known][1].append(callback)
                continue
            if len(self._watched) >= self.max_watched:
                oldest, (old_pid, callbacks) = self._watched.popitem(last=False)
                poller.unregister(oldest)
                os.close(oldest)
                del self._by_pid[old_pid]
                early.append((old_pid, callbacks))
                self.early += 1
            self._watched[fd] = (pid, [callback])
            self._by_pid[pid] = fd
            poller.register(fd, select.POLLIN)
        return early

    def _drain(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _wake(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                os.write(self._wake_w, b"x")
            except BlockingIOError:  # the pipe is full: the thread has wakes enough to read
                pass

    def _call(self, callback: Callable[[int], None], pid: int) -> None:
        try:
            callback(pid)
        except Exception:  # one bad callback must not end the watcher
            self.callback_errors += 1
            log.exception("exit callback failed for pid %d", pid)
