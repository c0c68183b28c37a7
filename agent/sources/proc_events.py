"""Every program started on the machine, as it starts: the kernel's process-events connector (Linux).

git and upload tools are short-lived: a push of a small repository runs for a few milliseconds, and
polling /proc misses it. The proc connector (netlink ``NETLINK_CONNECTOR``, group ``CN_IDX_PROC``)
sends a datagram for each exec as it happens. It also sends one for every fork, exit, uid change...
which a ``make -j2`` produces by the thousand, so a classic BPF socket filter drops every message
but execs (and the subscription's acknowledgement) in the kernel, before they cost a wakeup here.

On each exec the reader thread reads ``/proc/<pid>`` at once, while the program most likely still
runs; a program that is already gone still gives a ``ProcessStart`` (with what could be read) and
is counted as ``gone``. A full socket buffer (``ENOBUFS``) means the kernel dropped messages: it is
counted as ``lost`` and reading goes on.

Subscribing needs the initial user and pid namespaces (and ``CAP_NET_ADMIN`` before Linux 6.6);
in a container the kernel ignores the request silently, which shows here as no acknowledgement. Either way
``available`` is False and ``health()`` says why.
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import errno
import logging
import os
import random
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from agent.procinfo import status
from agent.threads import StoppableThread

log = logging.getLogger(__name__)

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
NLMSG_DONE = 3
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2
PROC_EVENT_NONE = 0x0  # the acknowledgement of a subscription request
PROC_EVENT_EXEC = 0x2
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
RCVBUF_BYTES = 8 * 1024 * 1024
"""About ten thousand exec messages: a burst the reader may lag behind without losing any."""
MAX_ARGV_BYTES = 64 * 1024
MAX_ARGS = 4096
ACK_TIMEOUT_S = 2.0

_NLMSGHDR = struct.Struct("=IHHII")
"""struct nlmsghdr: len, type, flags, seq, pid."""
_CN_MSG = struct.Struct("=IIIIHH")
"""struct cn_msg: id.idx, id.val, seq, ack, len, flags (the payload follows)."""
_EVENT_HEADER = struct.Struct("=IIQ")
"""struct proc_event: what, cpu, timestamp_ns (the event's data follows)."""
_EXEC_DATA = struct.Struct("=ii")
"""exec_proc_event: process_pid, process_tgid. The acknowledgement's data is one u32, err, at the same place."""
_EVENT_AT = _NLMSGHDR.size + _CN_MSG.size
_DATA_AT = _EVENT_AT + _EVENT_HEADER.size
_RECV_BYTES = 4096
_QUEUE_MAX = 4096
"""Execs read but not yet handed on; past it the rest wait in the socket buffer."""


@dataclasses.dataclass(frozen=True)
class ProcessStart:
    """A program that was exec'd: what /proc said right after (None or empty where it could not be read).

    ``argv`` is decoded as the file system encoding does (``os.fsdecode``), so a path in it opens
    the file it names even when it is not UTF-8.
    """

    pid: int
    ppid: int | None
    exe: str | None
    argv: tuple[str, ...]
    cwd: str | None
    uid: int | None
    at: float


class _FilterInstruction(ctypes.Structure):
    """struct sock_filter."""

    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _FilterProgram(ctypes.Structure):
    """struct sock_fprog."""

    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_FilterInstruction))]


_BPF_LD_W_ABS = 0x00 | 0x00 | 0x20
_BPF_JEQ_K = 0x05 | 0x10 | 0x00
_BPF_RET_K = 0x06 | 0x00


def _as_loaded(value: int) -> int:
    """``value`` as a host-order u32 field reads to BPF, whose word loads are big-endian."""
    return int.from_bytes(struct.pack("=I", value), "big")


def exec_filter() -> list[tuple[int, int, int, int]]:
    """The classic BPF program: keep a message whose ``proc_event.what`` is EXEC or NONE, drop the rest."""
    return [
        (_BPF_LD_W_ABS, 0, 0, _EVENT_AT),
        (_BPF_JEQ_K, 1, 0, _as_loaded(PROC_EVENT_EXEC)),
        (_BPF_JEQ_K, 0, 1, _as_loaded(PROC_EVENT_NONE)),
        (_BPF_RET_K, 0, 0, 0xFFFFFFFF),
        (_BPF_RET_K, 0, 0, 0),
    ]


def _attach_filter(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    instructions = (_FilterInstruction * len(program))(*(_FilterInstruction(*op) for op in program))
    fprog = _FilterProgram(len(program), ctypes.cast(instructions, ctypes.POINTER(_FilterInstruction)))
    # ``instructions`` stays referenced until setsockopt returns; the kernel copies the program.
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))


def _request(op: int, seq: int) -> bytes:
    """A request whose acknowledgement will carry ``seq + 1`` in its ``ack`` field (the kernel renumbers ``seq``)."""
    payload = struct.pack("=I", op)
    body = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, seq, seq, len(payload), 0) + payload
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), NLMSG_DONE, 0, seq, os.getpid()) + body


def parse(datagram: bytes) -> tuple[int, int] | None:
    """``(what, value)`` of one connector message: the tgid for an exec, the error for an ack; None if not one."""
    if len(datagram) < _DATA_AT + 4:
        return None
    idx, val = struct.unpack_from("=II", datagram, _NLMSGHDR.size)
    if (idx, val) != (CN_IDX_PROC, CN_VAL_PROC):
        return None
    what = _EVENT_HEADER.unpack_from(datagram, _EVENT_AT)[0]
    if what == PROC_EVENT_EXEC and len(datagram) >= _DATA_AT + _EXEC_DATA.size:
        return what, _EXEC_DATA.unpack_from(datagram, _DATA_AT)[1]
    if what == PROC_EVENT_NONE:
        return what, struct.unpack_from("=I", datagram, _DATA_AT)[0]
    return what, 0


def read_argv(pid: int, *, proc: str = "/proc") -> tuple[str, ...]:
    """``pid``'s arguments (empty once it has exited): the fact that goes first, so it is read first."""
    return _argv(f"{proc}/{pid}/cmdline")


def read_start(pid: int, *, argv: tuple[str, ...] | None = None, proc: str = "/proc") -> tuple[ProcessStart, bool]:
    """What /proc says of ``pid`` now, and whether it was gone (no program and no arguments left to read).

    ``argv``: the arguments if they were read already.
    """
    base = f"{proc}/{pid}"
    if argv is None:
        argv = _argv(f"{base}/cmdline")
    exe = _link(f"{base}/exe")
    cwd = _link(f"{base}/cwd")
    uid, ppid = status(pid, proc=proc)
    start = ProcessStart(pid=pid, ppid=ppid, exe=exe, argv=argv, cwd=cwd, uid=uid, at=time.time())
    return start, exe is None and not argv


def _argv(path: str) -> tuple[str, ...]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return ()
    try:
        chunks: list[bytes] = []
        size = 0
        while size < MAX_ARGV_BYTES:
            chunk = os.read(fd, MAX_ARGV_BYTES - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError:
        return ()
    finally:
        os.close(fd)
    raw = b"".join(chunks)
    if raw.endswith(b"\0"):
        raw = raw[:-1]
    if not raw:
        return ()
    return tuple(os.fsdecode(part) for part in raw.split(b"\0", MAX_ARGS)[:MAX_ARGS])


def _link(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


class ProcessEventsUnavailable(OSError):
    """The proc connector cannot be used here; the message says why."""


class ProcessEvents:
    """Calls ``on_exec`` with a ``ProcessStart`` for every program exec'd on this machine.

    ``on_exec`` runs on the reader thread and must be quick: a slow one makes the reader lag and,
    past the socket buffer, lose events.

    Args:
        on_exec: called once per exec, in order of the kernel's messages.
        ignore_own_children: skip programs whose parent is this process (the agent runs git itself).
        kernel_filter: drop every message but execs in the kernel (off only to measure what it saves).
    """

    def __init__(self, on_exec: Callable[[ProcessStart], None], *, ignore_own_children: bool = True, kernel_filter: bool = True):
        self._on_exec = on_exec
        self._ignore_own_children = ignore_own_children
        self._kernel_filter = kernel_filter
        self._own_pid = os.getpid()
        self._sock: socket.socket | None = None
        self._reader: _Reader | None = None
        self._lock = threading.Lock()
        self.available = False
        self.reason = "not started"
        self.datagrams = 0  # messages that reached this process (the filter's work shows here)
        self.execs = 0  # exec messages, own children included
        self.skipped = 0  # execs of this process's own children
        self.gone = 0  # execs whose program was gone before /proc could be read
        self.lost = 0  # times the kernel reported dropped messages (ENOBUFS)
        self.others = 0  # messages neither exec nor acknowledgement (none with the filter on)
        self.callback_errors = 0

    @property
    def thread(self) -> StoppableThread | None:
        """The reader thread (for a supervisor), None before a successful ``start``."""
        return self._reader

    def start(self) -> None:
        """Subscribe and start the reader thread; where that is refused, ``available`` stays False and ``reason`` says why."""
        with self._lock:
            if self._reader is not None:
                return
            try:
                sock, early = self._subscribe()
            except ProcessEventsUnavailable as exc:
                self.reason = exc.strerror or str(exc)
                log.warning("no process events: %s", self.reason)
                return
            self._sock = sock
            self._reader = _Reader(self, sock, early)
            self.available = True
            self.reason = ""
            self._reader.start()

    def stop(self) -> None:
        """Stop reading, unsubscribe and close the socket; harmless twice."""
        with self._lock:
            reader, sock = self._reader, self._sock
            self._reader = self._sock = None
            self.available = False
            if self.reason == "":
                self.reason = "stopped"
        if reader is not None:
            reader.stop()
        if sock is not None:
            try:
                sock.send(_request(PROC_CN_MCAST_IGNORE, 2))  # the kernel counts listeners; it only skips work at zero
            except OSError:
                pass
            sock.close()

    def health(self) -> dict[str, Any]:
        """``{"state": "ok" | "degraded" | "off", "message": ...}``."""
        if not self.available:
            return {"state": "off", "message": f"no process events: {self.reason}"}
        message = f"proc connector: {self.execs} execs, {self.gone} gone, {self.lost} lost"
        reader = self._reader
        if reader is not None and not reader.is_alive():
            return {"state": "degraded", "message": message + "; the reader stopped"}
        if reader is not None and not reader.realtime:
            message += "; reader at ordinary priority (programs of a millisecond may be gone)"
        return {"state": "degraded" if self.lost else "ok", "message": message}

    def _subscribe(self) -> tuple[socket.socket, list[bytes]]:
        """A subscribed socket and any message that came before the kernel's acknowledgement."""
        if not sys.platform.startswith("linux"):
            raise ProcessEventsUnavailable(errno.ENOSYS, "the proc connector is Linux only")
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_CONNECTOR)
        except OSError as exc:
            raise ProcessEventsUnavailable(exc.errno, f"no proc connector in this kernel ({_name(exc)})") from None
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF_BYTES)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
            if self._kernel_filter:
                _attach_filter(sock, exec_filter())
            try:
                sock.bind((0, CN_IDX_PROC))
            except OSError as exc:
                raise ProcessEventsUnavailable(exc.errno, f"joining the proc connector's group was refused ({_name(exc)}: needs CAP_NET_ADMIN)") from None
            seq = random.getrandbits(31)
            sock.send(_request(PROC_CN_MCAST_LISTEN, seq))
            return sock, _await_ack(sock, seq)
        except ProcessEventsUnavailable:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            raise ProcessEventsUnavailable(exc.errno, f"proc connector: {_name(exc)}") from None

    def _exec_pid(self, datagram: bytes) -> int | None:
        """Count one message; the pid when it is an exec."""
        self.datagrams += 1
        message = parse(datagram)
        if message is None or message[0] == PROC_EVENT_NONE:
            return None
        if message[0] != PROC_EVENT_EXEC:
            self.others += 1
            return None
        self.execs += 1
        return message[1]

    def _finish(self, pid: int, argv: tuple[str, ...]) -> None:
        """Read the rest of what /proc says of an exec whose arguments were read, and hand it on."""
        start, gone = read_start(pid, argv=argv)
        if gone:
            self.gone += 1
        if self._ignore_own_children and start.ppid == self._own_pid:
            self.skipped += 1
            return
        try:
            self._on_exec(start)
        except Exception:  # one bad call must not end process events for the whole agent
            self.callback_errors += 1
            log.exception("process event handler failed on pid %d", pid)


def _await_ack(sock: socket.socket, seq: int) -> list[bytes]:
    """Wait for the acknowledgement of request ``seq``; return the messages that came before it.

    Acknowledgements go to every listener, so another program subscribing at the same moment
    sends one here too: only the one answering this request (``ack == seq + 1``) counts.

    Raises:
        ProcessEventsUnavailable: the kernel refused (the ack's error) or never answered (a
            container: the kernel ignores subscriptions outside the initial namespaces).
    """
    early: list[bytes] = []
    deadline = time.monotonic() + ACK_TIMEOUT_S
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    while len(early) < 10_000:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            break
        try:
            datagram = sock.recv(_RECV_BYTES)
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                continue
            raise
        message = parse(datagram)
        if message is not None and message[0] == PROC_EVENT_NONE and _acked(datagram) == seq + 1:
            if message[1]:
                raise ProcessEventsUnavailable(message[1], f"the proc connector refused the subscription ({errno.errorcode.get(message[1], message[1])})")
            return early
        early.append(datagram)
    raise ProcessEventsUnavailable(errno.ETIMEDOUT, "the proc connector did not answer (not the initial pid or user namespace?)")


def _acked(datagram: bytes) -> int:
    return int(_CN_MSG.unpack_from(datagram, _NLMSGHDR.size)[3])


def _name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc))


class _Reader(StoppableThread):
    """Reads the subscribed socket until stopped; a pipe wakes it at once on stop."""

    def __init__(self, owner: ProcessEvents, sock: socket.socket, early: list[bytes]):
        super().__init__(name="proc-events")
        self._owner = owner
        self._sock = sock
        self._early = early
        self.realtime = False
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

    def on_stop(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def stop(self, timeout: float | None = 5.0) -> None:
        super().stop(timeout)
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def run_loop(self) -> None:
        self.realtime = _prefer_cpu()
        poller = select.poll()
        poller.register(self._sock.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        # Arguments vanish when a program exits: every exec that arrived has its arguments read
        # before the slower rest (links, status, on_exec) of any one of them.
        queue: collections.deque[tuple[int, tuple[str, ...]]] = collections.deque()
        for datagram in self._early:
            self._queue(datagram, queue)
        self._early = []
        while not self.stopping:
            if not queue and any(fd != self._sock.fileno() for fd, _ in poller.poll()):
                return
            while len(queue) < _QUEUE_MAX:
                try:
                    datagram = self._sock.recv(_RECV_BYTES, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno != errno.ENOBUFS:
                        raise
                    self._owner.lost += 1
                    continue
                self._queue(datagram, queue)
            if queue:
                self._owner._finish(*queue.popleft())

    def _queue(self, datagram: bytes, queue: collections.deque[tuple[int, tuple[str, ...]]]) -> None:
        pid = self._owner._exec_pid(datagram)
        if pid is not None:
            queue.append((pid, read_argv(pid)))


def _prefer_cpu() -> bool:
    """Make the calling thread preempt ordinary work when it wakes (SCHED_FIFO 1); whether that was allowed.

    A /bin/true lives about a millisecond. Woken on the CPU the new program runs on, an ordinary
    thread waits for it to finish and finds /proc empty; measured here (2 CPUs), 5 to 15 % of such
    programs were gone, and none of 5000 with this. The thread sleeps whenever no message waits, its
    work per exec is bounded, and the kernel keeps a share of every CPU for ordinary work
    (sched_rt_runtime_us). Every observer on the machine wakes for every exec: two agents (or a
    test beside a running agent) at this priority delay each other, and some short programs are gone.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except (OSError, AttributeError):
        try:
            os.setpriority(os.PRIO_PROCESS, 0, -10)
        except OSError:
            pass
        return False
    return True
