"""watchdog's inotify observer, with the kernel's queue overflow delivered as an event ("events were lost").

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

from watchdog.events import FileSystemEvent
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

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
