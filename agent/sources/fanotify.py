"""A small typed wrapper of Linux fanotify: which process wrote which file, on a whole filesystem.

inotify says that a file was written, never by whom, and needs one watch per folder. fanotify
hands over the writer's pid, and a filesystem or mount mark covers a whole tree at no cost per
folder. It needs ``CAP_SYS_ADMIN``; where it is not permitted, ``Fanotify`` raises
``FanotifyUnavailable`` and the caller keeps inotify.

Two reporting modes are wrapped. FID mode (``FAN_REPORT_DFID_NAME``) reports the parent
folder's file handle and the entry's name, and knows moves and creations; the handle is turned
into a path with ``open_by_handle_at`` (``CAP_DAC_READ_SEARCH``). Descriptor mode reports an
open descriptor of the file (its path read from ``/proc/self/fd``) and knows only writes; it is
what filesystems without file handles (exFAT through FUSE) allow. No library on PyPI fits (the
maintained ones wrap inotify only), so this is ctypes over libc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import errno
import os
import select
import struct
import sys
from typing import NamedTuple

FAN_MODIFY = 0x00000002
FAN_CLOSE_WRITE = 0x00000008
FAN_MOVED_TO = 0x00000080
FAN_CREATE = 0x00000100
FAN_OPEN_EXEC = 0x00001000
FAN_Q_OVERFLOW = 0x00004000
FAN_EVENT_ON_CHILD = 0x08000000
FAN_ONDIR = 0x40000000
FAN_CLOEXEC = 0x00000001
FAN_NONBLOCK = 0x00000002
FAN_CLASS_NOTIF = 0x00000000
FAN_REPORT_DIR_FID = 0x00000400
FAN_REPORT_NAME = 0x00000800
FAN_REPORT_DFID_NAME = FAN_REPORT_DIR_FID | FAN_REPORT_NAME
FAN_MARK_ADD = 0x00000001
FAN_MARK_REMOVE = 0x00000002
FAN_MARK_MOUNT = 0x00000010
FAN_MARK_IGNORED_SURV_MODIFY = 0x00000040
FAN_MARK_FLUSH = 0x00000080
FAN_MARK_IGNORE = 0x00000400
FAN_MARK_FILESYSTEM = 0x00000100
FAN_NOFD = -1
FAN_EVENT_INFO_TYPE_DFID_NAME = 2
METADATA_VERSION = 3
_METADATA = struct.Struct("=IBBHQii")
"""struct fanotify_event_metadata: event_len, vers, reserved, metadata_len, mask, fd, pid."""
_INFO_HEADER = struct.Struct("=BBH")
"""struct fanotify_event_info_header: info_type, pad, len."""
_FSID_AND_HANDLE = struct.Struct("=IIIi")
"""__kernel_fsid_t (two 32-bit words), then struct file_handle's handle_bytes and handle_type."""
_AT_FDCWD = -100
_AT_HANDLE_FID = 0x200  # a handle as fanotify reports it (Linux 6.5+)
_MAX_HANDLE_SZ = 128
_FS_ENCODING = sys.getfilesystemencoding()  # os.fsdecode's, without its checks per call
READ_BYTES = 64 * 1024
"""One read takes at most this much of the queue (a few hundred events); the rest waits in the kernel."""

# Linux only: elsewhere (the agent's file source imports this on every platform) nothing is loaded.
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True) if sys.platform.startswith("linux") else None
_init = getattr(_libc, "fanotify_init", None)
_mark = getattr(_libc, "fanotify_mark", None)
_open_by_handle = getattr(_libc, "open_by_handle_at", None)
_name_to_handle = getattr(_libc, "name_to_handle_at", None)
if _name_to_handle is not None:
    _name_to_handle.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    _name_to_handle.restype = ctypes.c_int
if _init is not None and _mark is not None and _open_by_handle is not None:
    _init.argtypes = [ctypes.c_uint, ctypes.c_uint]
    _init.restype = ctypes.c_int
    _mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
    _mark.restype = ctypes.c_int
    _open_by_handle.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    _open_by_handle.restype = ctypes.c_int


class FanotifyUnavailable(OSError):
    """fanotify cannot be used here (not Linux, no permission, an old kernel, a filesystem without handles)."""


@dataclasses.dataclass(frozen=True)
class WriteEvent:
    """Descriptor mode: ``path`` written (or modified) by ``pid``; ``path`` is ``None`` for a queue overflow."""

    path: str | None
    pid: int
    overflow: bool = False
    mask: int = FAN_CLOSE_WRITE


class FidEvent(NamedTuple):
    """FID mode: ``name`` in the folder whose handle is ``handle``, on the filesystem ``fsid``.

    ``handle`` is a whole ``struct file_handle`` as ``open_by_handle_at`` takes it. A queue
    overflow has ``mask & FAN_Q_OVERFLOW`` and no handle. A tuple, not a dataclass: the hub makes one
    for every write on a marked filesystem, most of them other programs' and dropped at once, and a
    tuple is made in a third of the time.
    """

    mask: int
    pid: int
    fsid: int = 0
    handle: bytes = b""
    name: str = ""

    @property
    def overflow(self) -> bool:
        return bool(self.mask & FAN_Q_OVERFLOW)


def fsid_of(path: str) -> int:
    """The filesystem id fanotify reports for ``path``'s filesystem (as ``statfs`` gives it)."""
    return os.statvfs(path).f_fsid


class Fanotify:
    """One fanotify group in notification class; close it when done.

    Args:
        fid: FID mode (``FAN_REPORT_DFID_NAME``: folder handle and name) instead of descriptors.
    """

    def __init__(self, *, fid: bool = False) -> None:
        if _init is None or _mark is None:
            raise FanotifyUnavailable(errno.ENOSYS, "fanotify is not available on this system")
        self.fid = fid
        flags = FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | (FAN_REPORT_DFID_NAME if fid else 0)
        fd = _init(flags, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_LARGEFILE", 0))
        if fd < 0:
            code = ctypes.get_errno()
            raise FanotifyUnavailable(code, f"fanotify_init: {os.strerror(code)}")
        self.fd = fd

    def watch(self, path: str, *, filesystem: bool = True, mask: int = FAN_CLOSE_WRITE) -> None:
        """Report ``mask`` on the whole filesystem (or mount) holding ``path``."""
        self.mark(path, mask, filesystem=filesystem)

    def mark(self, path: str, mask: int, *, filesystem: bool = True, remove: bool = False) -> None:
        """Add ``mask`` to (or remove it from) the filesystem or mount mark of ``path``.

        Raises:
            FanotifyUnavailable: the kernel refused (``errno`` says why: EXDEV, ENODEV, EOPNOTSUPP...).
        """
        kind = FAN_MARK_FILESYSTEM if filesystem else FAN_MARK_MOUNT
        action = FAN_MARK_REMOVE if remove else FAN_MARK_ADD
        assert _mark is not None  # checked when the group was made
        if _mark(self.fd, action | kind, mask, _AT_FDCWD, os.fsencode(path)) < 0:
            code = ctypes.get_errno()
            raise FanotifyUnavailable(code, f"fanotify_mark {path}: {os.strerror(code)}")

    def ignore_children(self, folder: str, mask: int) -> None:
        """Stop reporting ``mask`` for the files directly in ``folder`` (events on folders still come).

        Raises:
            FanotifyUnavailable: refused (a kernel older than 6.0 has no ``FAN_MARK_IGNORE``).
        """
        assert _mark is not None
        flags = FAN_MARK_ADD | FAN_MARK_IGNORE | FAN_MARK_IGNORED_SURV_MODIFY
        if _mark(self.fd, flags, mask | FAN_EVENT_ON_CHILD, _AT_FDCWD, os.fsencode(folder)) < 0:
            code = ctypes.get_errno()
            raise FanotifyUnavailable(code, f"fanotify_mark ignore {folder}: {os.strerror(code)}")

    def flush_ignores(self) -> None:
        """Drop every ``ignore_children`` (the group's only marks on single folders)."""
        assert _mark is not None
        _mark(self.fd, FAN_MARK_FLUSH, 0, _AT_FDCWD, None)

    def read(self, timeout: float | None) -> list[WriteEvent]:
        """Descriptor mode: events that arrive within ``timeout`` seconds (``None``: wait), each descriptor closed."""
        return parse(self.read_raw(timeout))

    def read_raw(self, timeout: float | None) -> bytes:
        """At most ``READ_BYTES`` of whole events, or nothing once ``timeout`` passed without any
        (0: no wait, and no poll either: the descriptor does not block)."""
        if timeout != 0 and not ready([self.fd], timeout):
            return b""
        try:
            return os.read(self.fd, READ_BYTES)
        except BlockingIOError:
            return b""

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Fanotify:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def ready(fds: list[int], timeout: float | None) -> set[int]:
    """Which of ``fds`` can be read within ``timeout`` seconds (``None``: wait). poll, not select:
    select cannot take a descriptor numbered past 1024, which a busy agent may well hold."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return {fd for fd, _ in poller.poll(None if timeout is None else timeout * 1000)}


def parse(data: bytes) -> list[WriteEvent]:
    """Descriptor-mode events of one ``read``; every descriptor the kernel opened is closed here, whatever happens."""
    events: list[WriteEvent] = []
    offset = 0
    while offset + _METADATA.size <= len(data):
        length, version, _reserved, _meta_len, mask, fd, pid = _METADATA.unpack_from(data, offset)
        if version != METADATA_VERSION or length < _METADATA.size:
            break  # a layout this code does not know: stop rather than misread (and open nothing)
        offset += length
        if mask & FAN_Q_OVERFLOW:
            events.append(WriteEvent(path=None, pid=pid, overflow=True, mask=mask))
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
            events.append(WriteEvent(path=path, pid=pid, mask=mask))
    return events


def parse_fid(data: bytes) -> list[FidEvent]:
    """FID-mode events of one ``read`` (no descriptors are opened in this mode).

    Only the folder-and-name record is used; an event without one (none is expected with the
    masks this agent asks for) is skipped, and an unknown layout stops the parse.
    """
    events: list[FidEvent] = []
    offset = 0
    size = len(data)
    unpack = _METADATA.unpack_from
    while offset + _METADATA.size <= size:
        length, version, _reserved, meta_len, mask, fd, pid = unpack(data, offset)
        if version != METADATA_VERSION or length < _METADATA.size or offset + length > size:
            break
        end = offset + length
        if fd >= 0:  # not expected in FID mode; never leak one
            os.close(fd)
        if mask & FAN_Q_OVERFLOW:
            events.append(FidEvent(mask, pid))
        else:
            record = _dfid_name(data, offset + meta_len, end)
            if record is not None:
                events.append(FidEvent(mask, pid, *record))
        offset = end
    return events


def _dfid_name(data: bytes, offset: int, end: int) -> tuple[int, bytes, str] | None:
    """(fsid, file handle, name) of the first folder-and-name record between ``offset`` and ``end``."""
    while offset + _INFO_HEADER.size <= end:
        info_type, _pad, length = _INFO_HEADER.unpack_from(data, offset)
        if length < _INFO_HEADER.size or offset + length > end:
            return None
        if info_type == FAN_EVENT_INFO_TYPE_DFID_NAME and length >= _INFO_HEADER.size + _FSID_AND_HANDLE.size:
            fsid_low, fsid_high, handle_bytes, _handle_type = _FSID_AND_HANDLE.unpack_from(data, offset + _INFO_HEADER.size)
            handle_at = offset + _INFO_HEADER.size + 8
            name_at = handle_at + 8 + handle_bytes
            if name_at > offset + length:
                return None
            nul = data.find(b"\0", name_at, offset + length)
            raw_name = data[name_at : nul if nul >= 0 else offset + length]
            return fsid_low | (fsid_high << 32), data[handle_at:name_at], raw_name.decode(_FS_ENCODING, "surrogateescape")
        offset += length
    return None


def open_by_handle(mount_fd: int, handle: bytes) -> int:
    """An ``O_PATH`` descriptor of the object ``handle`` names, on the filesystem ``mount_fd`` is on.

    Raises:
        OSError: ESTALE (the object is gone), EPERM (no ``CAP_DAC_READ_SEARCH``), ...
    """
    if _open_by_handle is None:
        raise FanotifyUnavailable(errno.ENOSYS, "open_by_handle_at is not available")
    fd = _open_by_handle(mount_fd, handle, os.O_PATH | os.O_CLOEXEC)
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return fd


def handle_of(path: str) -> bytes | None:
    """The file handle fanotify would report for ``path`` (a folder), or None where there is none."""
    if _name_to_handle is None:
        return None
    mount_id = ctypes.c_int()
    for flags in (_AT_HANDLE_FID, 0):  # older kernels know only the plain handle (the same bytes on most filesystems)
        buffer = ctypes.create_string_buffer(struct.pack("=Ii", _MAX_HANDLE_SZ, 0) + b"\0" * _MAX_HANDLE_SZ)
        if _name_to_handle(_AT_FDCWD, os.fsencode(path), buffer, ctypes.byref(mount_id), flags) == 0:
            size = struct.unpack_from("=I", buffer.raw)[0]
            return buffer.raw[: 8 + size]
        if ctypes.get_errno() != errno.EINVAL:
            return None
    return None


def handle_path(mount_fd: int, handle: bytes) -> str | None:
    """The path of the folder ``handle`` names, or None when it is gone or cannot be opened."""
    try:
        fd = open_by_handle(mount_fd, handle)
    except OSError:
        return None
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    finally:
        os.close(fd)
    if not path.startswith("/") or path.endswith(" (deleted)"):
        return None  # removed, or outside what this mount namespace can name
    return path
