"""File source: watchdog over the watched folders, emitting files worth scanning.

A file is emitted when it is closed after writing, when it was created and then
stayed quiet (files created in a fresh folder often come with no close event,
since the folder's watch is added after they were written), and when it arrives
by move. A folder that appears is walked, as its files may predate its watch.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import cast

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from agent.scanning.walk import iter_targets, matches_any
from agent.sources.work import Device, Emit, FileWork
from agent.threads import StoppableThread

log = logging.getLogger(__name__)

# Only what we act on: without this filter, busy trees flood the queue with modify/open events.
EVENT_FILTER = [FileClosedEvent, FileCreatedEvent, FileMovedEvent, DirCreatedEvent, DirMovedEvent]
_WATCH_LIMIT_ERRORS = (errno.ENOSPC, errno.EMFILE)
_RECENT_LIMIT = 20_000
_ROOT_CHECK_S = 2.0


class FileSource(StoppableThread):
    """Watches ``roots`` recursively; its thread runs quiet timers and re-watches roots.

    Args:
        emit: where work goes (the pipeline's queue).
        roots: folders to watch; missing ones are watched once they appear.
        exclude: globs of paths never emitted (caches, build output).
        quiet_s: how long a created file must stay unchanged before it is emitted without a close.
        channel: ``file``, or ``usb`` for a removable volume (with ``device``).
        observer_factory: the watchdog observer class (polling in tests of the fallback).
    """

    def __init__(
        self,
        emit: Emit,
        roots: list[str],
        *,
        exclude: list[str] = (),  # type: ignore[assignment]
        quiet_s: float = 1.0,
        channel: str = "file",
        device: Device | None = None,
        observer_factory: Callable[[], BaseObserver] = Observer,
        poll_interval_s: float = 2.0,
    ):
        super().__init__(name=f"source-{channel}")
        self._emit = emit
        self.roots = [os.path.abspath(r) for r in roots]
        self._exclude = tuple(exclude)
        self._quiet_s = quiet_s
        self._channel = channel
        self._device = device
        self._observer_factory = observer_factory
        self._poll_interval_s = poll_interval_s
        self._same_window = max(1.0, 2 * quiet_s)
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[float, str]] = {}  # created, not yet closed: path -> (last seen, reason)
        self._recent: dict[str, tuple[int, int, float]] = {}  # emitted: path -> (size, mtime_ns, when)
        self._watched: dict[str, tuple[BaseObserver, int]] = {}  # root -> (observer, inode)
        self._problems: dict[str, str] = {}
        self._not_taken = 0  # files emitted while the work queue stayed full
        self._wake = threading.Event()

    # Thread ---------------------------------------------------------------

    def run_loop(self) -> None:
        next_root_check = 0.0
        while not self.stopping:
            now = time.monotonic()
            if now >= next_root_check:
                self._check_roots()
                next_root_check = now + _ROOT_CHECK_S
            self._flush_quiet(now)
            with self._lock:
                busy = bool(self._pending)
            # Idle, sleep until the next root check (a creation wakes us early); busy, tick.
            self._wake.wait(min(0.1, self._quiet_s / 4) if busy else max(0.0, next_root_check - now))
            self._wake.clear()
        for observer, _ in self._watched.values():
            observer.stop()
        for observer, _ in self._watched.values():
            observer.join(timeout=5)
        self._watched.clear()

    def on_stop(self) -> None:
        self._wake.set()

    def health(self) -> dict[str, str]:
        problems = [f"{k}: {v}" for k, v in sorted(self._problems.items())]
        if self._not_taken:
            problems.append(f"{self._not_taken} file(s) not scanned: the work queue was full")
        if problems:
            return {"state": "degraded", "message": "; ".join(problems)}
        return {"state": "ok", "message": f"watching {len(self._watched)} folder(s)"}

    # Roots ----------------------------------------------------------------

    def _check_roots(self) -> None:
        """Watch roots that exist and are not watched; re-watch ones deleted and recreated."""
        for root in self.roots:
            try:
                inode = os.stat(root).st_ino if os.path.isdir(root) else None
            except OSError:
                inode = None
            current = self._watched.get(root)
            if current is not None and current[1] == inode and current[0].is_alive():
                continue
            if current is not None:
                current[0].stop()
                del self._watched[root]
                log.info("%s went away; watching it again when it comes back", root)
            if inode is None:
                self._problems[root] = "does not exist (watched once it appears)"
                continue
            self._watch(root, inode, first=current is None)

    def _watch(self, root: str, inode: int, *, first: bool) -> None:
        handler = _Handler(self)
        observer = self._observer_factory()
        try:
            observer.schedule(handler, root, recursive=True, event_filter=EVENT_FILTER)
            observer.start()
            if isinstance(observer, cast(type, Observer)) and watches_exhausted(root):
                # watchdog skips sub-folders it cannot watch without a word: ask the kernel.
                observer.stop()
                raise OSError(errno.ENOSPC, "inotify watch limit reached")
        except OSError as exc:
            if exc.errno not in _WATCH_LIMIT_ERRORS:
                self._problems[root] = f"cannot watch: {exc.strerror or exc}"
                return
            # Out of inotify watches: polling costs CPU but misses nothing; say so once.
            log.warning("inotify watch limit reached under %s; polling it every %gs instead", root, self._poll_interval_s)
            observer = PollingObserver(timeout=self._poll_interval_s)
            observer.schedule(handler, root, recursive=True, event_filter=EVENT_FILTER)
            observer.start()
            self._problems[root] = "inotify watch limit reached: polling"
        else:
            self._problems.pop(root, None)
        self._watched[root] = (observer, inode)
        if not first:
            # Files may have landed in the recreated folder before the new watch was up.
            self.folder_appeared(root)

    # Called from watchdog threads ---------------------------------------------

    def file_closed(self, path: str) -> None:
        with self._lock:
            self._pending.pop(path, None)
        self._offer(path, "closed")

    def file_created(self, path: str, reason: str = "moved") -> None:
        if self._is_excluded(path):
            return
        age = self._age(path)
        if age is None:
            return
        size, idle = age
        if size and idle >= self._quiet_s:
            # Old content appearing at once: a move from outside the watched tree (inotify
            # reports those as creations). Nothing more will be written: no need to wait.
            self._offer(path, reason)
            return
        with self._lock:
            self._pending[path] = (time.monotonic(), "created" if reason == "moved" else reason)
        self._wake.set()

    def file_moved_in(self, path: str) -> None:
        self._offer(path, "moved")

    def folder_appeared(self, path: str) -> None:
        """Files in a new folder: old ones (moved or copied with their times) go now,
        ones still being written wait for their close or for quiet."""
        for target in iter_targets([path], exclude=self._exclude):
            if target.error is None:
                self.file_created(target.path, reason="folder")

    # Emission -------------------------------------------------------------

    def _flush_quiet(self, now: float) -> None:
        with self._lock:
            due = [(p, why) for p, (seen, why) in self._pending.items() if now - seen >= self._quiet_s]
        for path, reason in due:
            age = self._age(path)
            with self._lock:
                if age is not None and age[1] < self._quiet_s:  # still being written: wait again
                    self._pending[path] = (now, reason)
                    continue
                self._pending.pop(path, None)
            if age is not None:
                self._offer(path, reason)

    @staticmethod
    def _age(path: str) -> tuple[int, float] | None:
        """(size, seconds since last modified), or None when the file is gone."""
        try:
            info = os.stat(path)
        except OSError:
            return None
        return info.st_size, time.time() - info.st_mtime

    def _offer(self, path: str, reason: str) -> None:
        """Emit ``path`` unless excluded, gone, not a file, or already emitted as it is now."""
        if self._is_excluded(path):
            return
        try:
            info = os.stat(path)
        except OSError:
            return
        if not os.path.isfile(path):
            return
        now = time.monotonic()
        with self._lock:
            seen = self._recent.get(path)
            if seen is not None and seen[0] == info.st_size and (seen[1] == info.st_mtime_ns or now - seen[2] < self._same_window):
                # Already emitted as it is now. A copy that sets the source's mtime after closing
                # (cp -p, copytree) looks changed by mtime alone: the time window absorbs it.
                return
            self._recent[path] = (info.st_size, info.st_mtime_ns, now)
            if len(self._recent) > _RECENT_LIMIT:
                del self._recent[next(iter(self._recent))]
        if not self._emit(FileWork(path=path, channel=self._channel, reason=reason, device=self._device)):
            with self._lock:
                self._not_taken += 1
                self._recent.pop(path, None)  # not seen as emitted: its next close offers it again

    def _is_excluded(self, path: str) -> bool:
        return matches_any(path, self._exclude)


def watches_exhausted(path: str) -> bool:
    """Whether this user has no inotify watch left (Linux; False elsewhere).

    Probed by adding one watch on a fresh inotify instance and removing it again.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_CLOEXEC)
    if fd < 0:
        return ctypes.get_errno() == errno.EMFILE
    try:
        # IN_ATTRIB: any mask will do; the watch is removed with the instance.
        wd = libc.inotify_add_watch(fd, os.fsencode(path), 0x00000004)
        return wd < 0 and ctypes.get_errno() == errno.ENOSPC
    finally:
        os.close(fd)


class _Handler(FileSystemEventHandler):
    """Routes watchdog's events to the source; runs on watchdog's threads."""

    def __init__(self, source: FileSource):
        self._source = source

    def on_closed(self, event: FileSystemEvent) -> None:
        self._source.file_closed(os.fsdecode(event.src_path))

    def on_created(self, event: FileSystemEvent) -> None:
        path = os.fsdecode(event.src_path)
        if event.is_directory:
            self._source.folder_appeared(path)
        else:
            self._source.file_created(path)

    def on_moved(self, event: FileSystemEvent) -> None:
        dest = os.fsdecode(event.dest_path)
        if event.is_directory:
            self._source.folder_appeared(dest)
        else:
            self._source.file_moved_in(dest)
