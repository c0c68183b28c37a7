"""The mount table: frozen mount records and a watcher that reports what was mounted and unmounted."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import select
import sys
import threading
from collections.abc import Callable, Generator
from typing import Protocol

import psutil

log = logging.getLogger(__name__)

PROC_MOUNTS = "/proc/self/mounts"
_OCTAL_ESCAPE = re.compile(rb"\\([0-7]{3})")


@dataclasses.dataclass(frozen=True, order=True)
class Mount:
    """One line of the mount table."""

    device: str
    mountpoint: str
    fstype: str
    options: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        """What a mount is, as opposed to how it is mounted: a remount with new options keeps its key."""
        return (self.device, self.mountpoint)


@dataclasses.dataclass(frozen=True)
class MountChange:
    """Mounts that appeared and went away since the last change; ``initial`` marks the first snapshot."""

    added: tuple[Mount, ...]
    removed: tuple[Mount, ...]
    initial: bool = False


class Poll(Protocol):
    """The part of ``select.poll`` the watcher uses."""

    def register(self, fd: int, eventmask: int = ...) -> None: ...

    def poll(self, timeout: float | None = ...) -> list[tuple[int, int]]: ...


def _unescape(field: bytes) -> str:
    # The kernel writes space, tab, newline and backslash in paths as \ooo octal escapes.
    return os.fsdecode(_OCTAL_ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), field))


def parse_mounts(data: bytes) -> list[Mount]:
    """Parse the ``/proc/*/mounts`` format (fstab fields, octal-escaped)."""
    mounts = []
    for line in data.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        device, mountpoint, fstype, options = (_unescape(f) for f in fields[:4])
        mounts.append(Mount(device, mountpoint, fstype, tuple(options.split(","))))
    return mounts


def read_proc_mounts(path: str = PROC_MOUNTS) -> list[Mount]:
    with open(path, "rb") as f:
        return parse_mounts(f.read())


def read_psutil_mounts() -> list[Mount]:
    return [
        Mount(p.device, p.mountpoint, p.fstype, tuple(o for o in p.opts.split(",") if o))
        for p in psutil.disk_partitions(all=True)
    ]


# Chosen once per platform at import: the kernel's mount table and its poll, where they exist.
_DEFAULT_PATH: str | None = PROC_MOUNTS if sys.platform.startswith("linux") else None
_DEFAULT_POLL: Callable[[], Poll] | None = getattr(select, "poll", None)


class MountWatcher:
    """Yields what changed in the mount table, to one reader, until ``close()`` is called from any thread.

    On Linux the kernel marks an open ``/proc/self/mounts`` with POLLPRI|POLLERR when the table changes, so
    a change is seen at once and the table is read only then: an idle agent does not wake for it. No
    change can slip between two signals, since the kernel compares the table's change counter with the
    one this descriptor saw at its last poll (a change while the table is being read signals the next
    poll). Where that cannot work (another OS, or a path or poll that fails) the table is re-read every
    ``interval`` seconds instead, and ``health()`` says which is in use.

    Args:
        interval: seconds between re-reads where the kernel cannot signal changes.
        path: the mount table file; None reads the table through psutil (the default off Linux).
        poll_factory: builds the poll object; None means periodic re-reads only.
    """

    def __init__(
        self,
        interval: float = 1.0,
        *,
        path: str | None = _DEFAULT_PATH,
        poll_factory: Callable[[], Poll] | None = _DEFAULT_POLL,
    ):
        self.interval = interval
        self._path = path
        self._poll_factory = poll_factory
        self._read: Callable[[], list[Mount]] = (lambda: read_proc_mounts(path)) if path else read_psutil_mounts
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._wake_w: int | None = None
        self._notify_health = {"state": "ok", "message": "not started"}
        self._read_error: str | None = None

    def health(self) -> dict[str, str]:
        if self._read_error:
            return {"state": "degraded", "message": f"cannot read the mount table: {self._read_error}"}
        return dict(self._notify_health)

    def close(self) -> None:
        """End ``changes()`` promptly; harmless to call twice or before ``changes()`` runs."""
        with self._lock:
            self._closed.set()
            if self._wake_w is not None:
                os.write(self._wake_w, b"x")

    def changes(self) -> Generator[MountChange, None, None]:
        """The first item is the current table (``initial=True``); then one item per change, until closed."""
        poll, fds = self._open_notifier()
        try:
            # The notifier is open before the first read, so no later change can go unsignalled.
            current = self._snapshot()
            while current is None:
                if self._closed.wait(self.interval):
                    return
                current = self._snapshot()
            if self._closed.is_set():
                return
            yield MountChange(added=tuple(sorted(current.values())), removed=(), initial=True)
            while not self._closed.is_set():
                poll = self._wait(poll)
                if self._closed.is_set():
                    return
                latest = self._snapshot()
                if latest is None:
                    continue
                added = tuple(sorted(m for k, m in latest.items() if k not in current))
                removed = tuple(sorted(m for k, m in current.items() if k not in latest))
                current = latest
                if added or removed:
                    yield MountChange(added=added, removed=removed)
        finally:
            with self._lock:
                self._wake_w = None
                for fd in fds:
                    os.close(fd)

    def _open_notifier(self) -> tuple[Poll | None, list[int]]:
        if self._path is None or self._poll_factory is None:
            self._notify_health = {"state": "ok", "message": f"mount table re-read every {self.interval:g}s"}
            return None, []
        fds: list[int] = []
        try:
            fds.append(os.open(self._path, os.O_RDONLY))
            wake_r, wake_w = os.pipe()
            fds += [wake_r, wake_w]
            poll = self._poll_factory()
            poll.register(fds[0], select.POLLPRI | select.POLLERR)
            poll.register(wake_r, select.POLLIN)
        except OSError as e:
            for fd in fds:
                os.close(fd)
            self._degrade(f"cannot poll {self._path} ({e})")
            return None, []
        with self._lock:  # a close() before this is seen by the checks of _closed in changes()
            self._wake_w = wake_w
        self._notify_health = {
            "state": "ok",
            "message": f"kernel signals changes to {self._path} (no timed re-read)",
        }
        return poll, fds

    def _wait(self, poll: Poll | None) -> Poll | None:
        """Wait for a kernel signal or ``close()`` (without a poll: the next periodic re-read); returns
        the poll still usable."""
        if poll is None:
            self._closed.wait(self.interval)
            return None
        try:
            poll.poll(None)
        except OSError as e:
            self._degrade(f"polling {self._path} failed ({e})")
            return None
        return poll

    def _snapshot(self) -> dict[tuple[str, str], Mount] | None:
        try:
            mounts = self._read()
        except OSError as e:
            if self._read_error is None:
                log.warning("cannot read the mount table: %s", e)
            self._read_error = str(e)
            return None
        self._read_error = None
        return {m.key: m for m in mounts}

    def _degrade(self, reason: str) -> None:
        message = f"{reason}: re-reading every {self.interval:g}s, so a change may be seen that late"
        self._notify_health = {"state": "degraded", "message": message}
        log.warning("%s", message)
