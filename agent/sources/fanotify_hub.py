"""One daemon-wide fanotify reader: whole-filesystem marks, events turned into paths and writers, handed to file sources.

Each watched root costs a mark on its filesystem (shared by every root there), not a watch per
folder. Events name the parent folder by file handle; it is opened (``open_by_handle_at``) and
read back as a path, kept in a small cache that any folder rename clears. Events of this agent,
and of paths under no watched root, are dropped before anything else is read; for the rest the
writer (agent/procinfo.py) is read at once, while it most likely still runs, and the event goes to
the source with the longest root containing it.

Where a filesystem refuses a filesystem mark, a mount mark is used (closes and writes only:
the kernel has no creations or moves for mount marks); where it has no file handles (exFAT
through FUSE), a second group in descriptor mode (closes and writes, path from the descriptor).
Where fanotify is refused altogether, ``open_hub`` says why and the sources keep inotify.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import select
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from agent.procinfo import WriterCache
from agent.sources import fanotify as fan
from agent.sources.fanotify import FanotifyUnavailable
from agent.sources.fanotify_writers import Writers
from agent.sources.losses import LossTracker
from agent.threads import StoppableThread

log = logging.getLogger(__name__)

BACKENDS = ("auto", "fanotify", "inotify")
FID_MASK = fan.FAN_CLOSE_WRITE | fan.FAN_CREATE | fan.FAN_MOVED_TO | fan.FAN_ONDIR | fan.FAN_OPEN_EXEC
"""Filesystem marks: closes after writing, creations (files created and never closed), moves in (files and
folders), and programs started from the filesystem (which program a writer ran, should it be gone before
its event is read)."""
CLOSE_MASK = fan.FAN_CLOSE_WRITE
"""Mount marks and descriptor mode: the kernel reports no folder entries there."""
_DIR_CACHE_MAX = 8192
_HOT_EVENTS = 32  # events in one folder outside every root before the kernel is told to drop its files' events
_HOT_MAX = 4096  # folders counted at once
_IGNORED_MAX = 1024  # folders ignored at once (each pins its inode in the kernel)
_IGNORE_MASK = fan.FAN_CLOSE_WRITE | fan.FAN_CREATE | fan.FAN_MOVED_TO | fan.FAN_MODIFY
BATCH_S = 0.05
"""The longest the reader lets other programs' events gather after a read with nothing under a root:
they then cost one wakeup and read per batch instead of one per event or two. Measured with 50 writes a
second in fresh folders outside the roots, the reader's CPU was 1.0-1.3% of a core reading at once,
0.33-0.40% with 50 ms, 0.20-0.27% with 100 ms and 0.13-0.27% with 200 ms (each read costs far more than
each event in it). An event under a root that comes meanwhile waits at most this long, which is why it is
not longer: with 100 ms, writes under a root during those 50 writes a second took 46 ms to their event at
p50 against 4 ms reading at once. Nothing is lost (the kernel queues 16,384 events, and an overflow
rescans the roots)."""
QUIET_RATE = 20.0
"""Other programs' events a second below which the reader reads at once (no gathering): a few reads a
second cost little CPU, while any wait is paid in full by a write under a root that comes during it."""
BUSY_RATE = 50.0
"""Other programs' events a second from which the reader gathers the whole ``BATCH_S``; between the two,
the wait grows in proportion. At 100, 50 file writes a second in fresh folders (the kernel merges a
file's creation and close into one event when nothing came between) still woke the reader 24 times a
second against 16 with a fixed 50 ms (bench/idle_wakeups.py, 2026-12-03): they make about 50-80 events
a second, so from 50 they get the whole batch."""


class ForeignRate:
    """How many events handed to no source (other programs' outside the roots, this agent's own) came in
    the last second, and so how long the reader lets the next ones gather (``gather_s``).

    Events are counted, not reads: gathering makes fewer reads of the same events, so a count of reads
    would fall as soon as the reader gathered and switch it back. Two one-second buckets, the previous
    one weighted by how much of it the last second still covers: two additions and a multiplication a
    read, no clock beyond the one the reader already takes.
    """

    def __init__(self, quiet: float = QUIET_RATE, busy: float = BUSY_RATE, longest_s: float = BATCH_S):
        self.quiet, self.busy, self.longest_s = quiet, busy, longest_s
        self._second = 0  # which whole second of the monotonic clock ``_count`` is for
        self._count = 0
        self._previous = 0

    def note(self, now: float, events: int) -> None:
        """``events`` of other programs read at ``now`` (``time.monotonic()``)."""
        self._roll(now)
        self._count += events

    def rate(self, now: float) -> float:
        """Events a second over the second before ``now``."""
        self._roll(now)
        return self._count + self._previous * (1.0 - (now - self._second))

    def gather_s(self, now: float) -> float:
        """0 while other programs' events are rare; up to ``longest_s`` in proportion beyond ``quiet``."""
        rate = self.rate(now)
        if rate < self.quiet:
            return 0.0
        return self.longest_s * min(1.0, (rate - self.quiet) / max(self.busy - self.quiet, 1e-9))

    def _roll(self, now: float) -> None:
        second = int(now)
        if second != self._second:
            self._previous = self._count if second == self._second + 1 else 0
            self._count = 0
            self._second = second


_CAP_DAC_READ_SEARCH = 2
_CAP_SYS_ADMIN = 21


class Sink(Protocol):
    """What a file source offers the hub (agent/sources/files.py ``FileSource``); called on the hub's thread."""

    losses: LossTracker

    def file_closed(self, path: str, process: dict[str, Any] | None = None) -> None: ...

    def file_created(self, path: str, reason: str = "moved", process: dict[str, Any] | None = None) -> None: ...

    def file_modified(self, path: str, process: dict[str, Any] | None = None) -> None: ...

    def file_moved_in(self, path: str, process: dict[str, Any] | None = None) -> None: ...

    def folder_moved_in(self, path: str, process: dict[str, Any] | None = None) -> None: ...

    def events_lost(self, root: str) -> None: ...


@dataclasses.dataclass(frozen=True)
class _Mark:
    """Where a mark sits: which group, a filesystem (by fsid) or a mount (by mount point): ``_where``."""

    fid: bool
    filesystem: bool
    key: int | str


@dataclasses.dataclass(frozen=True)
class _Watch:
    root: str
    sink: Sink
    mask: int
    mark: _Mark
    fsid: int


class FanotifyHub(StoppableThread):
    """The one fanotify reader of the daemon; ``watch`` roots for sources, ``stop`` then ``close``.

    The thread sleeps in ``poll`` with no timeout (``stop`` and a new group wake it through a pipe),
    so it wakes only for events.

    Args:
        attribution: turns a pid into the event's ``process`` (cached /proc reads).
        own_pid: events of this process are never this agent's business.
        settle: how the reader lets events gather after a read with nothing under a root, given how long
            (``ForeignRate.gather_s``, never 0); returns True when the hub is stopping. The default waits that
            long (a test holds it to see a batch).
        foreign: the estimate of other programs' events that decides whether and how long to gather.

    Raises:
        FanotifyUnavailable: fanotify (FID mode) is not permitted here.
    """

    def __init__(
        self,
        *,
        attribution: WriterCache | None = None,
        own_pid: int | None = None,
        settle: Callable[[float], bool] | None = None,
        foreign: ForeignRate | None = None,
    ):
        super().__init__(name="fanotify")
        if not _has_capability(_CAP_SYS_ADMIN):
            # fanotify_init itself is allowed without it (FID mode), but not one filesystem or mount mark.
            raise FanotifyUnavailable(errno.EPERM, "fanotify filesystem marks need CAP_SYS_ADMIN")
        self._fid_group = fan.Fanotify(fid=True)
        self._fd_group: fan.Fanotify | None = None
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._settle = settle if settle is not None else self.wait
        self._foreign = foreign if foreign is not None else ForeignRate()
        # Without CAP_DAC_READ_SEARCH no handle can be opened back into a path: descriptors only.
        self._handles_ok = _has_capability(_CAP_DAC_READ_SEARCH)
        self._writers = Writers(attribution)
        self._own_pid = os.getpid() if own_pid is None else own_pid
        self._lock = threading.Lock()
        self._watches: list[_Watch] = []
        self._masks: dict[_Mark, tuple[str, int]] = {}  # mark -> (a path on it, the mask it has now)
        self._dirs: dict[tuple[int, bytes], str] = {}
        # Folders under no root and holding none, by handle: a file event there needs no path. Cleared
        # by every folder move and every root added or removed, as ignore marks are.
        self._far: dict[tuple[int, bytes], str] = {}
        # Each root's own handle, known before any event: a stick pulled before its first event was
        # read cannot be opened any more, and the files at its top still need a path.
        self._root_handles: dict[tuple[int, bytes], str] = {}
        # Folders outside every root, by events seen there; a busy one (a browser cache, a build
        # tree) has its files' events dropped by the kernel instead of read and thrown away here.
        self._hot: dict[tuple[int, bytes], int] = {}
        self._ignored: set[str] = set()
        self._ignore_lock = threading.Lock()  # taken inside ``_lock`` (a new root), never around it
        self.events = 0  # events read (every filesystem marked, any process)
        self.reads = 0  # reads that returned events
        self.dispatched = 0  # events handed to a source
        self.busy_s = 0.0  # this thread's CPU time spent on events, writer reads included

    # Marks ----------------------------------------------------------------

    def watch(self, root: str, sink: Sink, *, writes: bool = False) -> str:
        """Report what happens under ``root`` to ``sink``; returns how (``filesystem mark``...).

        ``writes``: also every write (removable volumes, scanned while being written).

        Raises:
            FanotifyUnavailable: no mark of any kind was accepted for ``root``'s filesystem.
        """
        root = os.path.abspath(root)
        extra = fan.FAN_MODIFY if writes else 0
        try:
            fsid = fan.fsid_of(root)
            places = {True: _where(root, filesystem=True), False: _where(root, filesystem=False)}
        except OSError as exc:
            raise FanotifyUnavailable(exc.errno or errno.EIO, f"statfs {root}: {exc.strerror}") from None
        refused: list[str] = []
        for fid, filesystem in ((True, True), (True, False), (False, True), (False, False)):
            if fid and not self._handles_ok:
                refused.append("file handles need CAP_DAC_READ_SEARCH")
                continue
            mark = _Mark(fid, filesystem, places[filesystem])
            mask = (FID_MASK if fid and filesystem else CLOSE_MASK) | extra
            try:
                self._add(_Watch(root, sink, mask, mark, fsid))
            except FanotifyUnavailable as exc:
                refused.append(errno.errorcode.get(exc.errno or 0, str(exc)))
                continue
            how = ("filesystem mark" if filesystem else "mount mark") + ("" if fid else " (descriptors: no moves)")
            log.info("watching %s with fanotify: %s", root, how)
            return how
        raise FanotifyUnavailable(errno.EOPNOTSUPP, f"fanotify refused {root}: {', '.join(dict.fromkeys(refused))}")

    def unwatch(self, root: str, sink: Sink) -> None:
        """Stop reporting ``root`` to ``sink``; a mark no other root needs loses what only it asked for."""
        root = os.path.abspath(root)
        with self._lock:
            gone = [w for w in self._watches if w.root == root and w.sink is sink]
            self._watches = [w for w in self._watches if not (w.root == root and w.sink is sink)]
            for watch in gone:
                self._shrink(watch.mark)
            self._far.clear()
            kept = {w.root for w in self._watches}
            self._root_handles = {key: path for key, path in self._root_handles.items() if path in kept}

    def describe(self) -> str:
        """Status text: ``filesystem marks on 2 filesystem(s)`` and any other kinds in use."""
        with self._lock:
            marks = list(self._masks)
        kinds = [
            (sum(1 for m in marks if m.fid and m.filesystem), "filesystem marks on {} filesystem(s)"),
            (sum(1 for m in marks if m.fid and not m.filesystem), "mount marks on {} mount(s)"),
            (sum(1 for m in marks if not m.fid), "descriptor-mode marks on {} volume(s) without file handles"),
        ]
        return ", ".join(text.format(n) for n, text in kinds if n) or "no marks yet"

    def _add(self, watch: _Watch) -> None:
        with self._lock:
            group = self._group(watch.mark.fid)
            mask = self._masks.get(watch.mark, (watch.root, 0))[1]
            if watch.mask & ~mask:
                group.mark(watch.root, watch.mask, filesystem=watch.mark.filesystem)
            self._masks[watch.mark] = (watch.root, mask | watch.mask)
            self._watches.append(watch)
            self._far.clear()
            self._unignore()  # the new root may hold a folder ignored until now
            handle = fan.handle_of(watch.root) if watch.mark.fid else None
            if handle is not None:
                self._root_handles[(watch.fsid, handle)] = watch.root

    def _shrink(self, mark: _Mark) -> None:
        """Called with the lock held: remove the bits of ``mark`` no remaining watch asks for."""
        if mark not in self._masks:
            return
        path, mask = self._masks[mark]
        needed = 0
        for w in self._watches:
            if w.mark == mark:
                needed |= w.mask
                path = w.root
        if needed:
            self._masks[mark] = (path, needed)
        else:
            del self._masks[mark]
        unneeded = mask & ~needed
        group = self._fid_group if mark.fid else self._fd_group
        try:
            # A stick pulled: its marks went with it, and its mount point now names the filesystem
            # below it, whose mark other roots need. Only a path still on the marked place is used.
            if unneeded and group is not None and _where(path, filesystem=mark.filesystem) == mark.key:
                group.mark(path, unneeded, filesystem=mark.filesystem, remove=True)
        except OSError:
            pass  # gone, or unmounted in between: its marks went with it

    def _group(self, fid: bool) -> fan.Fanotify:
        if fid:
            return self._fid_group
        if self._fd_group is None:
            self._fd_group = fan.Fanotify(fid=False)
            self._wake()  # the reader polls the new group from now on
        return self._fd_group

    # Reading --------------------------------------------------------------

    def run_loop(self) -> None:
        poller: select.poll | None = None
        groups: list[fan.Fanotify] = []
        while not self.stopping:
            current = [g for g in (self._fid_group, self._fd_group) if g is not None and g.fd >= 0]
            if not current:
                return
            if poller is None or current != groups:
                groups, poller = current, select.poll()
                for fd in (self._wake_r, *(g.fd for g in groups)):
                    poller.register(fd, select.POLLIN)
            ready = {fd for fd, _ in poller.poll()}
            if self._wake_r in ready:
                self._drain_wake()
            handed, seen = self.dispatched, self.events
            read = False
            for group in groups:
                if group.fd in ready:
                    read = self.drain(group) or read
            if not read:
                continue
            now = time.monotonic()
            self._foreign.note(now, (self.events - seen) - (self.dispatched - handed))
            if self.dispatched == handed:
                gather = self._foreign.gather_s(now)
                if gather > 0 and self._settle(gather):
                    return

    def on_stop(self) -> None:
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # already woken (a full pipe), or closed after the hub ended

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def drain(self, group: fan.Fanotify) -> bool:
        """Handle one read's worth of events of ``group`` (bounded: at most ``fan.READ_BYTES``); False when
        there was none."""
        started = time.thread_time()
        data = group.read_raw(0)
        if not data:
            return False
        self.reads += 1
        if group.fid:
            self._handle_fid(fan.parse_fid(data))
        else:
            self._handle_descriptors(fan.parse(data))
        self.busy_s += time.thread_time() - started
        return True

    def _handle_fid(self, events: list[fan.FidEvent]) -> None:
        mount_fds: dict[int, int | None] = {}
        try:
            for event in events:
                self.events += 1
                if event.overflow:
                    self._overflow(fid=True)
                    continue
                if event.pid == self._own_pid:
                    continue
                mask = event.mask
                if mask & fan.FAN_MOVED_TO and mask & fan.FAN_ONDIR:
                    # A folder renamed: cached paths below it are wrong now, and an ignored folder
                    # may have moved into a root with it.
                    self._dirs.clear()
                    self._far.clear()
                    self._unignore()
                elif not mask & (fan.FAN_ONDIR | fan.FAN_OPEN_EXEC):
                    far = self._far.get((event.fsid, event.handle))
                    if far is not None:  # another program's file, in a folder known to be under no root
                        self._outside(event, far)
                        continue
                folder = self._folder(event, mount_fds)
                if folder is None:
                    continue
                path = os.path.join(folder, event.name) if event.name not in ("", ".") else folder
                if event.mask & fan.FAN_OPEN_EXEC:
                    self._writers.started(event.pid, path)
                    if not event.mask & ~(fan.FAN_OPEN_EXEC | fan.FAN_ONDIR):
                        continue
                if not self._dispatch(path, event.mask, event.pid) and not event.mask & fan.FAN_ONDIR:
                    self._outside(event, folder)
                    self._remember_far(event, folder)
        finally:
            for fd in mount_fds.values():
                if fd is not None:
                    os.close(fd)

    def _handle_descriptors(self, events: list[fan.WriteEvent]) -> None:
        for event in events:
            self.events += 1
            if event.overflow:
                self._overflow(fid=False)
            elif event.path is not None and event.pid != self._own_pid:
                self._dispatch(event.path, event.mask, event.pid)

    def _folder(self, event: fan.FidEvent, mount_fds: dict[int, int | None]) -> str | None:
        """The event's folder as a path; the filesystem's root folder is opened once per read
        (nothing stays open between reads: a held descriptor would keep a stick from unmounting)."""
        key = (event.fsid, event.handle)
        cached = self._dirs.get(key) or self._root_handles.get(key)
        if cached is not None:
            return cached
        if event.fsid not in mount_fds:
            mount_fds[event.fsid] = self._mount_fd(event.fsid)
        mount_fd = mount_fds[event.fsid]
        if mount_fd is None:
            return None
        path = fan.handle_path(mount_fd, event.handle)
        if path is not None:
            if len(self._dirs) >= _DIR_CACHE_MAX:
                self._dirs.clear()
            self._dirs[key] = path
        return path

    def _mount_fd(self, fsid: int) -> int | None:
        with self._lock:
            roots = [w.root for w in self._watches if w.fsid == fsid and w.mark.fid]
        for root in roots:
            try:
                return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                continue
        return None

    def _remember_far(self, event: fan.FidEvent, folder: str) -> None:
        """Note ``folder`` as holding no root and lying under none: its files' next events are dropped
        before any path is made. Decided under the lock ``watch`` and ``unwatch`` clear the notes under."""
        prefix = folder.rstrip("/") + "/"
        with self._lock:
            for watch in self._watches:
                root = watch.root
                if root == folder or root.startswith(prefix) or folder.startswith(root.rstrip("/") + "/"):
                    return
            if len(self._far) >= _DIR_CACHE_MAX:
                self._far.clear()
            self._far[(event.fsid, event.handle)] = folder

    def _outside(self, event: fan.FidEvent, folder: str) -> None:
        """A file event under no root: after a few in one folder, have the kernel drop them there."""
        key = (event.fsid, event.handle)
        with self._ignore_lock:
            seen = self._hot.get(key, 0) + 1
            if seen < _HOT_EVENTS:
                if len(self._hot) >= _HOT_MAX:
                    self._hot.clear()
                self._hot[key] = seen
                return
            del self._hot[key]
            if len(self._ignored) >= _IGNORED_MAX:
                self._fid_group.flush_ignores()
                self._ignored.clear()
            try:
                self._fid_group.ignore_children(folder, _IGNORE_MASK)
            except OSError:
                return  # gone, or a kernel without ignore marks: the events keep coming, and are dropped here
            self._ignored.add(folder)

    def ignoring(self, folder: str) -> bool:
        """Whether the kernel drops the events of files directly in ``folder`` (busy, under no root)."""
        return folder in self._ignored

    def _unignore(self) -> None:
        """Every folder ignored is reported again (a rename or a new root may have put it under a root)."""
        with self._ignore_lock:
            if self._ignored:
                self._fid_group.flush_ignores()
                self._ignored.clear()
            self._hot.clear()

    def _dispatch(self, path: str, mask: int, pid: int) -> bool:
        """Hand the event to the source whose root holds ``path``; False when none does."""
        watch = self._owner(path)
        if watch is None:
            return False
        process = self._writers.writer(pid)
        sink = watch.sink
        self.dispatched += 1
        sink.losses.event_started()
        try:
            if mask & fan.FAN_ONDIR:
                if mask & fan.FAN_MOVED_TO:
                    sink.folder_moved_in(path, process)
                # A folder created here fills with files whose own events follow: nothing to walk.
            elif mask & fan.FAN_MOVED_TO:
                sink.file_moved_in(path, process)
            elif mask & fan.FAN_CLOSE_WRITE:
                sink.file_closed(path, process)
            else:
                if mask & fan.FAN_CREATE:
                    sink.file_created(path, "created", process)
                if mask & fan.FAN_MODIFY:
                    sink.file_modified(path, process)
        finally:
            sink.losses.event_finished()
        return True

    def _owner(self, path: str) -> _Watch | None:
        """The watch with the longest root containing ``path``."""
        best: _Watch | None = None
        with self._lock:
            for watch in self._watches:
                root = watch.root
                if (path == root or path.startswith(root.rstrip("/") + "/")) and (best is None or len(root) > len(best.root)):
                    best = watch
        return best

    def _overflow(self, *, fid: bool) -> None:
        """The kernel dropped events of this group: every root it watches gets a rescan."""
        with self._lock:
            hit = {(id(w.sink), w.root): w for w in self._watches if w.mark.fid == fid}
        log.warning("fanotify queue overflowed: events were lost under %d folder(s); rescanning what changed", len(hit))
        for watch in hit.values():
            watch.sink.events_lost(watch.root)

    def close(self) -> None:
        """Close both groups (after ``stop``); every mark goes with them. Harmless twice."""
        for group in (self._fid_group, self._fd_group):
            if group is not None:
                group.close()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1


def open_hub(backend: str) -> tuple[FanotifyHub | None, str]:
    """The hub for ``[files] backend`` (auto, fanotify, inotify), or None and why the sources use inotify."""
    if backend == "inotify":
        return None, "inotify (configured)"
    if not sys.platform.startswith("linux"):
        return None, "watchdog (fanotify is Linux only)"
    try:
        hub = FanotifyHub()
    except FanotifyUnavailable as exc:
        why = errno.errorcode.get(exc.errno or 0, str(exc))
        level = logging.ERROR if backend == "fanotify" else logging.INFO
        log.log(level, "fanotify not permitted (%s): watching files with inotify, writers unknown", exc)
        asked = " configured but" if backend == "fanotify" else ""
        return None, f"inotify (fanotify{asked} not permitted: {why})"
    return hub, "fanotify"


def _where(path: str, *, filesystem: bool) -> int | str:
    """What a mark of ``path`` is on: its filesystem (fsid; the device where there is none, as on
    FUSE) or its mount (the mount point)."""
    if not filesystem:
        return _mountpoint(path)
    return fan.fsid_of(path) or f"dev:{os.stat(path).st_dev}"


def _mountpoint(path: str) -> str:
    path = os.path.realpath(path)
    while not os.path.ismount(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _has_capability(bit: int) -> bool:
    """Whether this process has capability ``bit`` in its effective set (Linux)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f.read(16384).splitlines():
                if line.startswith(b"CapEff:"):
                    return bool(int(line.split()[1], 16) >> bit & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False
