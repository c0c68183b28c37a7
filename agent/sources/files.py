"""File source: the watched folders, through fanotify (agent/sources/fanotify_hub.py) or watchdog, emitting files worth scanning.

Where the daemon's fanotify hub is permitted, a root costs a mark on its filesystem and every
event names its writer (``FileWork.process``); elsewhere, or for a root whose filesystem refuses
every kind of mark, watchdog's inotify watches each folder and writers are unknown. The rest is
the same either way. A file is emitted when it is closed after writing, when it was created and then
stayed quiet (files created in a fresh folder often come with no close event,
since the folder's watch is added after they were written), and when it arrives
by move. A folder that appears is walked, as its files may predate its watch.
On removable volumes a file is also emitted while it is being written (``writing``),
and one the volume took away before its last write was scanned is emitted as
``removed``. When the kernel drops events, what changed since is walked again
(``rescan``) and the loss is reported.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections import deque
from typing import Any

from watchdog.observers.api import BaseObserver

from agent import events as contract
from agent.scanning.walk import iter_targets, matches_any
from agent.sources.fanotify import FanotifyUnavailable
from agent.sources.fanotify_hub import FanotifyHub
from agent.sources.inotify import ObserverFactory, default_observer, observe
from agent.sources.losses import LossTracker, WalkCut, changed_files
from agent.sources.work import Device, Emit, FileWork, SourceProblem
from agent.sources.writes import WriteTracker, WriteWatch
from agent.threads import StoppableThread

log = logging.getLogger(__name__)

_RECENT_LIMIT = 20_000
_ROOT_CHECK_S = 2.0
_REMOVAL_SETTLE_S = 0.2  # a removed volume's last events: handled once none came for this long...
_REMOVAL_SETTLE_MAX_S = 2.0  # ...or after this long

_Identity = tuple[int, int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns
_Process = dict[str, Any]  # agent/procinfo.py ``writer``


@dataclasses.dataclass
class _Root:
    """How a root is watched: by the fanotify hub (``observer`` None) or a watchdog observer."""

    inode: int
    how: str
    observer: BaseObserver | None = None

    def alive(self) -> bool:
        return self.observer is None or self.observer.is_alive()


class FileSource(StoppableThread):
    """Watches ``roots`` recursively; its thread runs quiet timers, retries and rescans, and re-watches roots.

    Args:
        emit: where work goes (the pipeline's queue).
        roots: folders to watch; missing ones are watched once they appear.
        exclude: globs of paths never emitted (caches, build output).
        quiet_s: how long a created file must stay unchanged before it is emitted without a close.
        channel: ``file``, or ``usb`` for a removable volume (with ``device``).
        observer_factory: the watchdog observer class (polling in tests of the fallback).
        writes: scan files while they are written (removable volumes); None to wait for their close.
        retry_s: how often files the full work queue refused are offered again.
        hub: the daemon's fanotify reader; None for watchdog (inotify).
        backend: why watchdog is used when there is no hub (status shows it).
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
        observer_factory: ObserverFactory = default_observer,
        poll_interval_s: float = 2.0,
        writes: WriteWatch | None = None,
        retry_s: float = 1.0,
        hub: FanotifyHub | None = None,
        backend: str = "inotify",
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
        self._writing = WriteTracker(writes) if writes is not None else None  # removable volumes: open files
        self._retry_s = retry_s
        self._hub = hub
        self._backend = backend
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[float, str]] = {}  # created, not yet closed: path -> (last seen, reason)
        self._recent: dict[str, _Identity] = {}  # emitted, as it was then
        self._refused: dict[str, str] = {}  # refused by the full work queue: path -> reason, offered again
        self._removed: set[str] = set()  # reported as taken away with their volume
        self._watched: dict[str, _Root] = {}
        self._writers: dict[str, _Process] = {}  # the last writer of each path not emitted since (fanotify)
        self._walks: deque[tuple[str, _Process | None]] = deque()  # folders moved in, walked on this thread
        self._volume_dev: int | None = None
        self._problems: dict[str, str] = {}
        self._not_taken = 0  # times the work queue stayed full
        self._refused_at = 0.0
        self.losses = LossTracker()
        self._wake = threading.Event()
        self._first_check = threading.Event()  # the roots present at start are watched (or found missing)

    # Thread ---------------------------------------------------------------

    def run_loop(self) -> None:
        next_root_check = 0.0
        next_retry = 0.0
        while not self.stopping:
            now = time.monotonic()
            if now >= next_root_check:
                self._check_roots()
                self._first_check.set()
                next_root_check = now + _ROOT_CHECK_S
            self._flush_quiet(now)
            for path in self._writing.due(now) if self._writing is not None else ():
                self._offer(path, "writing")
            if self._refused and now >= max(next_retry, self._refused_at + self._retry_s):
                self._retry_refused()
                next_retry = time.monotonic() + self._retry_s
            if self.losses.due(now):
                self._rescan()
            while self._walks and not self.stopping:
                self.folder_appeared(*self._walks.popleft())
            with self._lock:
                busy = bool(self._pending or self._writing or self._refused or self.losses.pending)
            # Idle, sleep until the next root check (a creation wakes us early); busy, tick.
            tick = min(0.1, self._quiet_s / 4, self._writing.watch.quiet_s / 4 if self._writing is not None else 1.0)
            self._wake.wait(tick if busy else max(0.0, next_root_check - now))
            self._wake.clear()
        for root in list(self._watched):
            self._unwatch(root)
        self._watched.clear()

    def wait_watching(self, timeout: float) -> bool:
        """Wait until the roots present at start are watched; False on timeout."""
        return self._first_check.wait(timeout)

    def on_stop(self) -> None:
        self._wake.set()

    def health(self) -> dict[str, str]:
        problems = [f"{k}: {v}" for k, v in sorted(self._problems.items())]
        if self._refused:
            problems.append(f"{len(self._refused)} file(s) not scanned: the work queue was full (offered again every {self._retry_s:g}s)")
        lost = self.losses.degraded(time.monotonic())
        if lost:
            problems.append(lost)
        if problems:
            return {"state": "degraded", "message": "; ".join(problems)}
        held = f"; {self._not_taken} offer(s) refused by a full work queue, all taken since" if self._not_taken else ""
        return {"state": "ok", "message": f"watching {len(self._watched)} folder(s) with {self.backend()}{held}", "backend": self.backend()}

    def backend(self) -> str:
        """Which backend watches the roots and why: ``fanotify: filesystem marks on 1 filesystem(s)``,
        ``inotify (fanotify not permitted: EPERM)``; roots that fell back are named."""
        hubbed = [r for r in self._watched.values() if r.observer is None]
        own = sorted({r.how for r in self._watched.values() if r.observer is not None})
        parts = [f"fanotify: {self._hub.describe()}"] if self._hub is not None and (hubbed or not own) else []
        if self._hub is None:
            parts.append(self._backend)
        else:
            parts += own
        return "; ".join(parts)

    # Roots ----------------------------------------------------------------

    def _check_roots(self) -> None:
        """Watch roots that exist and are not watched; re-watch ones deleted and recreated."""
        for root in self.roots:
            try:
                inode = os.stat(root).st_ino if os.path.isdir(root) else None
            except OSError:
                inode = None
            current = self._watched.get(root)
            if current is not None and current.inode == inode and current.alive():
                continue
            if current is not None:
                self._unwatch(root)
                log.info("%s went away; watching it again when it comes back", root)
            if inode is None:
                self._problems[root] = "does not exist (watched once it appears)"
                continue
            if self._volume_gone():
                self._problems[root] = "the volume went away"
                continue
            self._watch(root, inode, first=current is None)

    def _watch(self, root: str, inode: int, *, first: bool) -> None:
        refused = None
        if self._hub is not None:
            try:
                how = self._hub.watch(root, self, writes=self._writing is not None)
            except FanotifyUnavailable as exc:
                refused = f"inotify for {root} ({exc.strerror or exc})"
            else:
                self._problems.pop(root, None)
                self._watched[root] = _Root(inode, how)
                self._watched_now(root, first=first)
                return
        try:
            observer, problem = observe(
                self, root, writes=self._writing is not None, factory=self._observer_factory, poll_interval_s=self._poll_interval_s
            )
        except OSError as exc:
            self._problems[root] = f"cannot watch: {exc.strerror or exc}"
            return
        if problem is None:
            self._problems.pop(root, None)
        else:
            self._problems[root] = problem
        self._watched[root] = _Root(inode, refused or "inotify", observer)
        self._watched_now(root, first=first)

    def _watched_now(self, root: str, *, first: bool) -> None:
        if first and self._device is not None:
            self._volume_dev = os.stat(root).st_dev
        if not first:
            # Files may have landed in the recreated folder before the new watch was up.
            self.folder_appeared(root)

    def _unwatch(self, root: str) -> None:
        watched = self._watched.pop(root, None)
        if watched is None:
            return
        if watched.observer is None:
            assert self._hub is not None
            self._hub.unwatch(root, self)
        else:
            watched.observer.stop()
            if watched.observer.is_alive():
                watched.observer.join(timeout=5)

    # Called from watchdog threads or the fanotify hub's ---------------------------

    def file_closed(self, path: str, process: _Process | None = None) -> None:
        self._wrote(path, process)
        with self._lock:
            self._pending.pop(path, None)
        if self._writing is not None:
            self._writing.forget(path)
        self._offer(path, "closed")

    def file_created(self, path: str, reason: str = "moved", process: _Process | None = None) -> None:
        if self._is_excluded(path):
            return
        self._wrote(path, process)
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

    def file_modified(self, path: str, process: _Process | None = None) -> None:
        """A write (removable volumes only): scan it soon, even if the file stays open."""
        if self._writing is None or self._is_excluded(path):
            return
        self._wrote(path, process)
        if self._writing.wrote(path, time.monotonic()):
            self._wake.set()

    def file_moved_in(self, path: str, process: _Process | None = None) -> None:
        self._wrote(path, process)
        self._offer(path, "moved")

    def folder_appeared(self, path: str, process: _Process | None = None) -> None:
        """Files in a new folder: old ones (moved or copied with their times) go now,
        ones still being written wait for their close or for quiet."""
        for target in iter_targets([path], exclude=self._exclude):
            if target.error is None:
                self.file_created(target.path, reason="folder", process=process)

    def folder_moved_in(self, path: str, process: _Process | None = None) -> None:
        """A folder moved in (fanotify): walked on this source's thread, not the hub's, which
        every other source waits on."""
        self._walks.append((path, process))
        self._wake.set()

    def _wrote(self, path: str, process: _Process | None) -> None:
        """Remember who last wrote ``path``, for whichever emission comes of it (quiet, writing, removed)."""
        if process is None:
            return
        with self._lock:
            self._writers.pop(path, None)
            self._writers[path] = process
            if len(self._writers) > _RECENT_LIMIT:
                del self._writers[next(iter(self._writers))]

    def events_lost(self, root: str) -> None:
        """The kernel's queue overflowed (each root has its own): files changed under ``root``
        since the last calm moment get a rescan."""
        log.warning("%s queue overflowed under %s: events were lost; rescanning what changed", self._kernel_queue(root), root)
        self.losses.lost(root, time.monotonic())
        self._wake.set()

    # Timers ---------------------------------------------------------------

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
            elif self._volume_gone():
                self._report_removed([path])

    def _retry_refused(self) -> None:
        """Offer refused files again, oldest first, until the queue refuses one more."""
        while not self.stopping:
            with self._lock:
                if not self._refused:
                    return
                path = next(iter(self._refused))
                reason = self._refused.pop(path)
            if not self._offer(path, reason, retry=True):
                return

    def _rescan(self) -> None:
        """Walk the roots that lost events for files changed since (bounded), and report the loss."""
        rescan = self.losses.take()
        if rescan is None:
            return
        changed = 0
        extent = ""
        try:
            for path in changed_files(rescan, exclude=self._exclude, stopping=lambda: self.stopping):
                changed += 1
                self._offer(path, "rescan")
        except WalkCut as cut:
            extent = f" ({cut}: the rest was not looked at)"
        when = time.strftime("%H:%M:%S", time.localtime(rescan.since))
        queues = " and ".join(sorted({self._kernel_queue(root) for root in rescan.roots}))
        message = f"{queues} queue overflowed: events were lost; {changed} file(s) changed since {when} rescanned{extent}"
        self.losses.message = message
        for root in rescan.roots:
            self._hand_over(SourceProblem(type=contract.SOURCE_EVENTS_LOST, path=root, message=message, device=self._device), None)

    def _kernel_queue(self, root: str) -> str:
        watched = self._watched.get(root)
        return "inotify" if watched is None or watched.observer is not None else "fanotify"

    # Emission -------------------------------------------------------------

    @staticmethod
    def _age(path: str) -> tuple[int, float] | None:
        """(size, seconds since last modified), or None when the file is gone."""
        try:
            info = os.stat(path)
        except OSError:
            return None
        return info.st_size, time.time() - info.st_mtime

    def _offer(self, path: str, reason: str, *, retry: bool = False) -> bool:
        """Emit ``path`` unless excluded, gone, not a file, or already emitted as it is now.

        "As it is now" is the file's identity and content stamps (device, inode, size, mtime
        and ctime): a rewrite to the same size within a second is a new file to scan.
        Returns False when the work queue refused it (it is kept and offered again).
        """
        if self._is_excluded(path):
            return True
        try:
            info = os.stat(path)
        except OSError:
            if self._volume_gone():
                self._report_removed([path])
            return True
        if not os.path.isfile(path):
            return True
        identity = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        with self._lock:
            if self._recent.get(path) == identity:
                return True
            self._recent[path] = identity
            if len(self._recent) > _RECENT_LIMIT:
                del self._recent[next(iter(self._recent))]
            if self._refused and not retry:
                # Older files wait for the queue: queue behind them rather than block a watchdog thread.
                self._recent.pop(path, None)
                self._refused[path] = reason
                return False
            process = self._writers.get(path) if reason != "rescan" else None
        return self._hand_over(FileWork(path=path, channel=self._channel, reason=reason, device=self._device, process=process), path)

    def _hand_over(self, work: FileWork | SourceProblem, path: str | None) -> bool:
        if self._emit(work):
            if path is not None:
                with self._lock:
                    self._writers.pop(path, None)
            return True
        with self._lock:
            self._not_taken += 1
            self._refused_at = time.monotonic()
            if path is not None and isinstance(work, FileWork):
                self._recent.pop(path, None)
                self._removed.discard(path)
                self._refused[path] = work.reason
        self._wake.set()
        return False

    # Removable volumes ----------------------------------------------------

    def volume_removed(self) -> None:
        """The volume went away: files written since their last scan are reported as ``removed``.

        Waits (a little) for watchdog to hand over the events it still holds, as the mount table
        can tell of the removal before the last writes' events reach the source.
        """
        deadline = time.monotonic() + _REMOVAL_SETTLE_MAX_S
        time.sleep(_REMOVAL_SETTLE_S)
        while time.monotonic() < deadline and not self._settled():
            time.sleep(_REMOVAL_SETTLE_S / 5)
        with self._lock:
            paths = [*self._pending, *(p for p, why in self._refused.items() if why != "removed")]
            self._pending.clear()
        if self._writing is not None:
            paths += self._writing.take_all()
        self._report_removed(paths)

    def _settled(self) -> bool:
        """No event being handled or waiting in an observer's queue, and none for a moment."""
        observers = [r.observer for r in list(self._watched.values()) if r.observer is not None]
        if self.losses.in_event or self._walks or any(not observer.event_queue.empty() for observer in observers):
            return False
        return self.losses.quiet_for() >= _REMOVAL_SETTLE_S

    def _volume_gone(self) -> bool:
        if self._volume_dev is None:
            return False
        try:
            return os.stat(self.roots[0]).st_dev != self._volume_dev
        except OSError:
            return True

    def _report_removed(self, paths: list[str]) -> None:
        """Writes the agent could not scan before their volume went: each is an event (status unreadable)."""
        for path in paths:
            with self._lock:
                if path in self._removed or self._is_excluded(path):
                    continue
                self._removed.add(path)
                self._refused.pop(path, None)
            if self._writing is not None:
                self._writing.forget(path)
            log.warning("%s: the volume went away before its last write was scanned", path)
            with self._lock:
                process = self._writers.get(path)
            self._hand_over(FileWork(path=path, channel=self._channel, reason="removed", device=self._device, process=process), path)

    def _is_excluded(self, path: str) -> bool:
        return matches_any(path, self._exclude)
