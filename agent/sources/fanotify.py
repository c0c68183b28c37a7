"""A small typed wrapper of Linux fanotify: which process closed which file after writing it.

inotify says that a file was written, never by whom. fanotify (``FAN_CLOSE_WRITE``) hands
over the writer's pid and an open descriptor of the file, and a filesystem or mount mark
covers a whole tree without one watch per folder. It needs ``CAP_SYS_ADMIN``; where it is
not permitted, ``Fanotify`` raises ``FanotifyUnavailable`` and the caller keeps inotify.

Only what is used is wrapped: notification class, descriptor events (the path is read from
``/proc/self/fd``), close-after-write, and the queue-overflow marker. No library on PyPI
fits (the maintained ones wrap inotify only), so this is ctypes over libc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import errno
import os
import select
import struct

FAN_CLOSE_WRITE = 0x00000008
FAN_Q_OVERFLOW = 0x00004000
FAN_CLOEXEC = 0x00000001
FAN_NONBLOCK = 0x00000002
FAN_CLASS_NOTIF = 0x00000000
FAN_MARK_ADD = 0x00000001
FAN_MARK_REMOVE = 0x00000002
FAN_MARK_MOUNT = 0x00000010
FAN_MARK_FILESYSTEM = 0x00000100
FAN_NOFD = -1
METADATA_VERSION = 3
_METADATA = struct.Struct("=IBBHQii")
"""struct fanotify_event_metadata: event_len, vers, reserved, metadata_len, mask, fd, pid."""
_READ_BYTES = 64 * 1024

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_init = getattr(_libc, "fanotify_init", None)
_mark = getattr(_libc, "fanotify_mark", None)
if _init is not None and _mark is not None:
    _init.argtypes = [ctypes.c_uint, ctypes.c_uint]
    _init.restype = ctypes.c_int
    _mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
    _mark.restype = ctypes.c_int


class FanotifyUnavailable(OSError):
    """fanotify cannot be used here (not Linux, no permission, an old kernel)."""


@dataclasses.dataclass(frozen=True)
class WriteEvent:
    """A file closed after writing, by ``pid``; ``path`` is ``None`` for a queue overflow."""

    path: str | None
    pid: int
    overflow: bool = False


class Fanotify:
    """One fanotify group reporting ``FAN_CLOSE_WRITE``; close it when done."""

    def __init__(self) -> None:
        if _init is None or _mark is None:
            raise FanotifyUnavailable(errno.ENOSYS, "fanotify is not available on this system")
        flags = FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK
        fd = _init(flags, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_LARGEFILE", 0))
        if fd < 0:
            code = ctypes.get_errno()
            raise FanotifyUnavailable(code, f"fanotify_init: {os.strerror(code)}")
        self.fd = fd

    def watch(self, path: str, *, filesystem: bool = True) -> None:
        """Report writes on the whole filesystem (or mount) holding ``path``."""
        kind = FAN_MARK_FILESYSTEM if filesystem else FAN_MARK_MOUNT
        assert _mark is not None  # checked when the group was made
        if _mark(self.fd, FAN_MARK_ADD | kind, FAN_CLOSE_WRITE, -100, os.fsencode(path)) < 0:  # -100: AT_FDCWD
            code = ctypes.get_errno()
            raise FanotifyUnavailable(code, f"fanotify_mark {path}: {os.strerror(code)}")

    def read(self, timeout: float | None) -> list[WriteEvent]:
        """Events that arrive within ``timeout`` seconds (``None``: wait), each file's descriptor closed."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        try:
            data = os.read(self.fd, _READ_BYTES)
        except BlockingIOError:
            return []
        return parse(data)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Fanotify:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def parse(data: bytes) -> list[WriteEvent]:
    """Events of one ``read``; every descriptor the kernel opened is closed here, whatever happens."""
    events: list[WriteEvent] = []
    offset = 0
    while offset + _METADATA.size <= len(data):
        length, version, _reserved, _meta_len, mask, fd, pid = _METADATA.unpack_from(data, offset)
        if version != METADATA_VERSION or length < _METADATA.size:
            break  # a layout this code does not know: stop rather than misread (and open nothing)
        offset += length
        if mask & FAN_Q_OVERFLOW:
            events.append(WriteEvent(path=None, pid=pid, overflow=True))
            continue
        if fd < 0:
            continue
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            path = None
        finally:
            os.close(fd)
        if path is not None:
            events.append(WriteEvent(path=path, pid=pid))
    return events
