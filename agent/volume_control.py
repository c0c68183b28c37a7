"""Linux mechanisms that stop writes to a volume, or every use of it, for every process on the machine.

The packaged service runs in its own mount namespace (ProtectSystem=strict), so anything done to
a mount (a bind remount, an unmount) would change only the agent's view. These act on the
superblock, which every namespace shares:

- read-only: ``mount(2)`` with ``MS_REMOUNT | MS_RDONLY`` and the mount's other flags kept (as
  ``mount -o remount,ro`` does): the filesystem itself turns read-only, writes fail with EROFS;
- block: a fanotify permission group (``FAN_CLASS_CONTENT``) with a filesystem mark asking about
  every open and exec on the volume, each answered ``FAN_DENY``; then a lazy unmount, which takes
  the volume away wherever the agent shares the user's namespace. The mark goes with the
  superblock, so it is never taken off when the volume leaves the agent's own mount table.

All of it needs ``CAP_SYS_ADMIN``; each call raises ``VolumeControlError`` with the reason.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import select
import struct
import sys
import threading

from agent.threads import StoppableThread

log = logging.getLogger(__name__)

MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MNT_DETACH = 0x2
SUPPORTED = sys.platform.startswith("linux")
"""Elsewhere device control reports volumes as in ``audit`` (the daemon builds no guard)."""
# statvfs f_flag bits (Linux values) and the mount(2) flags a remount must repeat so it loosens nothing.
_KEPT_FLAGS = {0x2: 0x2, 0x4: 0x4, 0x8: 0x8, 0x10: 0x10, 0x40: 0x40, 0x400: 0x400, 0x800: 0x800, 0x1000: 0x200000}
"""nosuid, nodev, noexec, synchronous, mandlock, noatime, nodiratime, relatime."""
_ST_RDONLY = 0x1
# fanotify's ABI (linux/fanotify.h); agent/sources/fanotify.py has the notification side.
FAN_CLOEXEC = 0x00000001
FAN_MARK_ADD = 0x00000001
FAN_MARK_REMOVE = 0x00000002
FAN_MARK_FILESYSTEM = 0x00000100
METADATA_VERSION = 3
FAN_CLASS_CONTENT = 0x00000004
FAN_OPEN_PERM = 0x00010000
FAN_OPEN_EXEC_PERM = 0x00040000
FAN_ONDIR = 0x40000000
FAN_DENY = 0x02
_DENIED = FAN_OPEN_PERM | FAN_OPEN_EXEC_PERM | FAN_ONDIR
_METADATA = struct.Struct("=IBBHQii")  # struct fanotify_event_metadata
_RESPONSE = struct.Struct("=iI")  # struct fanotify_response: fd, response
_READ_BYTES = 64 * 1024

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True) if SUPPORTED else None
_mount = getattr(_libc, "mount", None)
_umount2 = getattr(_libc, "umount2", None)
_fan_init = getattr(_libc, "fanotify_init", None)
_fan_mark = getattr(_libc, "fanotify_mark", None)
if _mount is not None and _umount2 is not None:
    _mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
    _umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
if _fan_init is not None and _fan_mark is not None:
    _fan_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
    _fan_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]


class VolumeControlError(OSError):
    """The volume could not be made read-only, blocked or unmounted; ``strerror`` says why."""


def _fail(call: str, path: str) -> VolumeControlError:
    code = ctypes.get_errno()
    return VolumeControlError(code, f"{call} {path}: {os.strerror(code)}")


def remount(mountpoint: str, *, read_only: bool) -> None:
    """Turn the filesystem at ``mountpoint`` read-only (or writable again), keeping nosuid, nodev and the rest."""
    kept = os.statvfs(mountpoint).f_flag
    flags = MS_REMOUNT | (MS_RDONLY if read_only else 0)
    for bit, flag in _KEPT_FLAGS.items():
        if kept & bit:
            flags |= flag
    if _mount is None:
        raise VolumeControlError(errno.ENOSYS, "remount is not available on this system")
    if _mount(None, os.fsencode(mountpoint), None, flags, None) != 0:
        raise _fail("remount", mountpoint)


def is_read_only(mountpoint: str) -> bool:
    return bool(os.statvfs(mountpoint).f_flag & _ST_RDONLY)


def lazy_unmount(mountpoint: str) -> None:
    """Detach the mount now; the filesystem goes once nothing holds it open."""
    if _umount2 is None:
        raise VolumeControlError(errno.ENOSYS, "umount2 is not available on this system")
    if _umount2(os.fsencode(mountpoint), MNT_DETACH) != 0:
        raise _fail("umount", mountpoint)


class OpenDenier(StoppableThread):
    """One fanotify permission group answering ``FAN_DENY`` to every open on the volumes it marks.

    The group is made at the first ``block`` (an agent that never blocks needs no permission
    group); the thread waits on it and on a pipe that says "the group changed" or "stop". A
    process opening a file on a blocked volume waits for this thread's answer, so the loop does
    nothing else; if the agent dies, the kernel drops the group and lets the waiting opens through.
    """

    def __init__(self) -> None:
        super().__init__(name="usb-block")
        self._lock = threading.Lock()
        self._fd = -1
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.denied = 0
        self.lost = False
        """The loop died and the group was closed: blocked volumes are no longer denied."""

    def block(self, mountpoint: str) -> None:
        """Deny every open of a file or folder on the filesystem mounted at ``mountpoint``."""
        with self._lock:
            if self._fd < 0:
                if _fan_init is None:
                    raise VolumeControlError(errno.ENOSYS, "fanotify is not available on this system")
                fd = _fan_init(FAN_CLASS_CONTENT | FAN_CLOEXEC, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_LARGEFILE", 0))
                if fd < 0:
                    raise _fail("fanotify_init", "(permission group)")
                self._fd = fd
            self._mark(FAN_MARK_ADD, mountpoint)
        self._wake()

    def unblock(self, mountpoint: str) -> None:
        """Lift the block of a volume still mounted here (a newer policy allows it)."""
        with self._lock:
            if self._fd >= 0:
                self._mark(FAN_MARK_REMOVE, mountpoint)

    def _mark(self, how: int, mountpoint: str) -> None:
        assert _fan_mark is not None
        if _fan_mark(self._fd, how | FAN_MARK_FILESYSTEM, _DENIED, -100, os.fsencode(mountpoint)) != 0:  # -100: AT_FDCWD
            raise _fail("fanotify_mark", mountpoint)

    def health(self) -> dict[str, str]:
        if self.lost:
            return {"state": "degraded", "message": f"the open denial stopped: blocked volumes are open again ({self.denied} open(s) denied before)"}
        return {"state": "ok", "message": f"{self.denied} open(s) denied on blocked volumes"}

    def _wake(self) -> None:
        with self._lock:
            if self._wake_w < 0:
                return
            try:
                os.write(self._wake_w, b"x")
            except BlockingIOError:
                pass  # a wake-up is already pending

    def on_stop(self) -> None:
        if self.is_alive():
            self._wake()  # the loop closes everything on its way out
        else:
            self._close()

    def run_loop(self) -> None:
        # poll, not select: an agent holding many descriptors gets a group numbered past select's 1024.
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        watched = -1
        try:
            while not self.stopping:
                with self._lock:
                    fd = self._fd
                if fd != watched and fd >= 0:
                    poller.register(fd, select.POLLIN)
                    watched = fd
                ready = {ready_fd for ready_fd, _ in poller.poll()}
                if self._wake_r in ready:
                    os.read(self._wake_r, 4096)
                if fd >= 0 and fd in ready:
                    self._answer(fd)
        finally:
            if self.stopping:
                self._close()
            else:
                self._drop_group()

    def _drop_group(self) -> None:
        """The loop died: a group nobody answers would hold every open on a blocked volume forever,
        so it is closed (the kernel lets those opens through) and the health says the block is gone."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
                self.lost = True
        log.error("the fanotify permission group is closed: blocked volumes are no longer denied")

    def _answer(self, fd: int) -> None:
        try:
            data = os.read(fd, _READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            # EMFILE/ENFILE: no descriptor for the event's file; the kernel denied that open itself.
            log.error("fanotify permission event not read: %s (the open was denied by the kernel)", exc.strerror)
            return
        offset = 0
        while offset + _METADATA.size <= len(data):
            length, version, _reserved, _meta_len, _mask, event_fd, _pid = _METADATA.unpack_from(data, offset)
            if version != METADATA_VERSION or length < _METADATA.size:
                raise VolumeControlError(errno.EPROTO, f"fanotify event of an unknown layout (version {version})")
            offset += length
            if event_fd < 0:
                continue
            try:  # each event answered on its own: one failed write must leave no other open waiting
                os.write(fd, _RESPONSE.pack(event_fd, FAN_DENY))
                self.denied += 1
            except OSError as exc:
                log.error("fanotify denial not written: %s", exc.strerror)
            finally:
                os.close(event_fd)

    def _close(self) -> None:
        with self._lock:
            # Pending opens are let through by the kernel; the marks go with the group.
            for fd in (self._fd, self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
            self._fd = self._wake_r = self._wake_w = -1
