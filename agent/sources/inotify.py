"""watchdog for the file source (where fanotify is not used): observers started with their fallback, events routed to the source.

The inotify observer delivers the kernel's queue overflow as an event ("events were lost").

When the kernel's inotify queue fills (``/proc/sys/fs/inotify/max_queued_events``), it drops
events and queues one ``IN_Q_OVERFLOW``. watchdog rebuilds its watches then and logs a warning,
but tells no handler; here the emitter queues an ``EventsLostEvent`` so the file source can
rescan what changed and report the loss. Chosen once at import: a watchdog without the hook
(older than 7.1) or another platform gets its default observer, and a warning says what is lost.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, Protocol, cast

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from agent.sources.losses import LossTracker

log = logging.getLogger(__name__)


class EventsLostEvent(FileSystemEvent):
    """The kernel dropped events under ``src_path`` (the watched root)."""

    event_type = "events_lost"


def _plain_observer() -> BaseObserver:
    return Observer()


ObserverFactory = Callable[[], BaseObserver]
default_observer: ObserverFactory = _plain_observer
OVERFLOW_REPORTED = False
"""Whether ``default_observer`` reports queue overflows (else they go unnoticed but for watchdog's log)."""

if sys.platform.startswith("linux"):
    from watchdog.observers.inotify import InotifyEmitter, InotifyObserver, InotifyWatchGroup

    if hasattr(InotifyWatchGroup, "on_queue_overflow"):

        @dataclasses.dataclass
        class _WatchGroup(InotifyWatchGroup):
            lost: Callable[[], None] | None = None

            def on_queue_overflow(self) -> None:
                super().on_queue_overflow()
                if self.lost is not None:
                    self.lost()

        class _Emitter(InotifyEmitter):
            def on_thread_start(self) -> None:
                self._inotify = _WatchGroup(
                    self._inotify_fd,
                    os.fsencode(self.watch.path),
                    is_recursive=self.watch.is_recursive,
                    event_mask=self.get_event_mask_from_filter(),
                    follow_symlink=self.watch.follow_symlink,
                    lost=lambda: self.queue_event(EventsLostEvent(self.watch.path)),
                )

        class OverflowObserver(InotifyObserver):
            """An inotify observer whose watches report the kernel's queue overflow."""

            def __init__(self) -> None:
                super().__init__()
                self._emitter_class = _Emitter

        default_observer = OverflowObserver
        OVERFLOW_REPORTED = True
    else:
        log.warning("this watchdog cannot report inotify queue overflows: events lost under load go unnoticed")


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


# Only what we act on: without this filter, busy trees flood the queue with modify/open events.
EVENT_FILTER = [FileClosedEvent, FileCreatedEvent, FileMovedEvent, DirCreatedEvent, DirMovedEvent, EventsLostEvent]
# Removable volumes also pay for every write, so that a file still open is scanned before a pull.
WRITES_FILTER = [*EVENT_FILTER, FileModifiedEvent]
_WATCH_LIMIT_ERRORS = (errno.ENOSPC, errno.EMFILE)


class Watched(Protocol):
    """What the handler calls (agent/sources/files.py ``FileSource``), on watchdog's threads."""

    losses: LossTracker

    def file_closed(self, path: str, process: dict[str, Any] | None = None) -> None: ...

    def file_created(self, path: str, reason: str = "moved", process: dict[str, Any] | None = None) -> None: ...

    def file_modified(self, path: str, process: dict[str, Any] | None = None) -> None: ...

    def file_moved_in(self, path: str, process: dict[str, Any] | None = None) -> None: ...

    def folder_appeared(self, path: str, process: dict[str, Any] | None = None) -> None: ...

    def events_lost(self, root: str) -> None: ...


def observe(target: Watched, root: str, *, writes: bool, factory: ObserverFactory, poll_interval_s: float) -> tuple[BaseObserver, str | None]:
    """A started observer of ``root`` for ``target``, and the problem to report (None when all is well).

    Out of inotify watches, a polling observer instead (CPU, but nothing missed), said once.

    Raises:
        OSError: ``root`` cannot be watched at all.
    """
    handler = _Handler(target)
    event_filter = WRITES_FILTER if writes else EVENT_FILTER
    observer = factory()
    try:
        observer.schedule(handler, root, recursive=True, event_filter=event_filter)
        observer.start()
        if isinstance(observer, cast(type, Observer)) and watches_exhausted(root):
            # watchdog skips sub-folders it cannot watch without a word: ask the kernel.
            raise OSError(errno.ENOSPC, "inotify watch limit reached")
    except OSError as exc:
        # The observer (and emitters it started before the failure) must not outlive the fallback.
        observer.stop()
        if observer.is_alive():
            observer.join(timeout=5)
        if exc.errno not in _WATCH_LIMIT_ERRORS:
            raise
        log.warning("inotify watch limit reached under %s; polling it every %gs instead", root, poll_interval_s)
        observer = PollingObserver(timeout=poll_interval_s)
        observer.schedule(handler, root, recursive=True, event_filter=event_filter)
        observer.start()
        return observer, "inotify watch limit reached: polling"
    return observer, None


class _Handler(FileSystemEventHandler):
    """Routes watchdog's events to the source; runs on watchdog's threads."""

    def __init__(self, source: Watched):
        self._source = source

    def dispatch(self, event: FileSystemEvent) -> None:
        self._source.losses.event_started()
        try:
            super().dispatch(event)
        finally:
            self._source.losses.event_finished()

    def on_closed(self, event: FileSystemEvent) -> None:
        self._source.file_closed(os.fsdecode(event.src_path))

    def on_created(self, event: FileSystemEvent) -> None:
        path = os.fsdecode(event.src_path)
        if event.is_directory:
            self._source.folder_appeared(path)
        else:
            self._source.file_created(path)

    def on_modified(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._source.file_modified(os.fsdecode(event.src_path))

    def on_moved(self, event: FileSystemEvent) -> None:
        dest = os.fsdecode(event.dest_path)
        if event.is_directory:
            self._source.folder_appeared(dest)
        else:
            self._source.file_moved_in(dest)

    def on_events_lost(self, event: FileSystemEvent) -> None:
        self._source.events_lost(os.fsdecode(event.src_path))
