"""The time-critical half of the process source: a small process that reads each exec's /proc at once.

A /bin/true lives about a millisecond, and its arguments go first when it exits. A reader thread
inside the agent wakes in time (real-time priority) but must then take the Python GIL back, which
any other busy thread of the agent holds for up to its switch interval (5 ms): measured, 300
runs of /bin/true with one spinning Python thread beside the reader, 271 were gone before they
could be read; with two, all of them. So the agent (agent/sources/proc_events.py) subscribes to
the kernel's proc connector, then hands the subscribed socket to this process, which runs one
Python thread and nothing else: it receives the messages, reads ``/proc/<pid>`` for each exec
(the arguments of every waiting exec first, then the rest), and writes one record per exec to a
pipe the agent reads at its own pace.

Only the standard library, and nothing of the rest of the agent: measured, the agent's ``start()``
returns about 0.1 s after starting it (its first record read), and it holds about 7 MB of memory of
its own (14 MB resident with the interpreter's shared pages). Started as ``python -m agent.sources.proc_reader SOCKET_FD
PIPE_FD`` (or the frozen agent binary with ``READER_ARG`` first, see agent/cli/main.py).

The pipe carries JSON lines (``ensure_ascii``, so arguments that are not UTF-8, decoded with
surrogate escapes, come back intact):

- ``["hello", pid, realtime, priority]``: first, once: the reader's pid and its scheduling.
- ``["exec", pid, ppid, exe, argv, cwd, uid, at, gone, counts]``: one exec, in the kernel's order.
- ``["counts", counts]``: counters that changed with no exec after them.

``counts`` is ``[datagrams, others, lost]`` as of that record: messages received, messages neither
exec nor acknowledgement, and times the kernel reported dropped messages (``ENOBUFS``).

The reader exits when the agent closes the pipe or dies (``PR_SET_PDEATHSIG``), and on ``SIGTERM``.
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import errno
import json
import os
import select
import socket
import struct
import sys
import time

READER_ARG = "--dlp-agent-proc-reader"
"""The frozen binary's hidden first argument that makes it this reader (agent/cli/main.py)."""

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_EVENT_NONE = 0x0  # the acknowledgement of a subscription request
PROC_EVENT_EXEC = 0x2
MAX_ARGV_BYTES = 64 * 1024
MAX_ARGS = 4096

_NLMSGHDR = struct.Struct("=IHHII")
"""struct nlmsghdr: len, type, flags, seq, pid."""
_CN_MSG = struct.Struct("=IIIIHH")
"""struct cn_msg: id.idx, id.val, seq, ack, len, flags (the payload follows)."""
_EVENT_HEADER = struct.Struct("=IIQ")
"""struct proc_event: what, cpu, timestamp_ns (the event's data follows)."""
_EXEC_DATA = struct.Struct("=ii")
"""exec_proc_event: process_pid, process_tgid. The acknowledgement's data is one u32, err, at the same place."""
EVENT_AT = _NLMSGHDR.size + _CN_MSG.size
_DATA_AT = EVENT_AT + _EVENT_HEADER.size
RECV_BYTES = 4096
QUEUE_MAX = 4096
"""Execs read but not yet written to the pipe (a slow agent); past it the rest wait in the socket buffer."""
PIPE_BYTES = 1024 * 1024
OUT_MAX_BYTES = 4 * 1024 * 1024
"""Records finished but not yet taken by the pipe; past it execs wait with only their arguments read."""
_PR_SET_PDEATHSIG = 1


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


def parse(datagram: bytes) -> tuple[int, int] | None:
    """``(what, value)`` of one connector message: the tgid for an exec, the error for an ack; None if not one."""
    if len(datagram) < _DATA_AT + 4:
        return None
    idx, val = struct.unpack_from("=II", datagram, _NLMSGHDR.size)
    if (idx, val) != (CN_IDX_PROC, CN_VAL_PROC):
        return None
    what = _EVENT_HEADER.unpack_from(datagram, EVENT_AT)[0]
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
    uid, ppid = read_status_file(f"{base}/status")
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


def read_status_file(path: str) -> tuple[int | None, int | None]:
    """Real uid and parent pid from ``/proc/PID/status`` (None, None when it is gone); agent/procinfo.py reads them with this too."""
    uid = ppid = None
    try:
        with open(path, "rb") as f:
            for line in f.read(16384).splitlines():
                if line.startswith(b"Uid:"):
                    fields = line.split()
                    uid = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None
                elif line.startswith(b"PPid:"):
                    fields = line.split()
                    ppid = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None
    except OSError:
        return None, None
    return uid, ppid


def prefer_cpu() -> tuple[bool, str]:
    """Make this process preempt ordinary work when it wakes (SCHED_FIFO 1); whether that was allowed, and what it got.

    A /bin/true lives about a millisecond. Woken on the CPU the new program runs on, an ordinary
    process waits for it to finish and finds /proc empty; measured here (2 CPUs), 5 to 15 % of such
    programs were gone, and none of 5000 with this. The reader sleeps whenever no message waits, its
    work per exec is bounded, and the kernel keeps a share of every CPU for ordinary work
    (sched_rt_runtime_us). Every observer on the machine wakes for every exec: two agents (or a
    test beside a running agent) at this priority delay each other, and some short programs are gone.
    Without the right (no root or CAP_SYS_NICE), nice -10 where allowed.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except (OSError, AttributeError):
        try:
            os.setpriority(os.PRIO_PROCESS, 0, -10)
        except OSError:
            return False, "ordinary priority"
        return False, "ordinary priority (nice -10)"
    return True, "real-time priority (SCHED_FIFO 1)"


def _die_with_parent() -> None:
    """SIGKILL when the thread that started this process ends.

    An agent that died before this ran, or a frozen binary's bootloader in between (its parent is
    the agent), is covered by the pipe: its read end closes with the agent, and this process exits.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, 9, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class _Reader:
    """The loop: receive, read arguments, read the rest, write records; one thread, no other work."""

    def __init__(self, sock: socket.socket, pipe: int, proc: str = "/proc"):
        self.sock = sock
        self.pipe = pipe
        self.proc = proc
        self.datagrams = self.others = self.lost = 0
        # (pid, argv, counts) of an exec, or (None, (), counts) for counters alone; in the kernel's order.
        self.queue: collections.deque[tuple[int | None, tuple[str, ...], list[int]]] = collections.deque()
        self.out = bytearray()

    def counts(self) -> list[int]:
        return [self.datagrams, self.others, self.lost]

    def drain(self) -> None:
        """Receive every waiting message (up to the queue's bound); read each exec's arguments at once."""
        changed = False
        while len(self.queue) < QUEUE_MAX:
            try:
                datagram = self.sock.recv(RECV_BYTES, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self.lost += 1
                changed = True
                continue
            self.datagrams += 1
            message = parse(datagram)
            if message is not None and message[0] == PROC_EVENT_EXEC:
                pid = message[1]
                self.queue.append((pid, read_argv(pid, proc=self.proc), self.counts()))
                changed = False
                continue
            if message is not None and message[0] != PROC_EVENT_NONE:
                self.others += 1
            changed = True
        if changed:  # counters moved after the last exec queued: they go out in their turn
            if self.queue and self.queue[-1][0] is None:
                self.queue.pop()
            self.queue.append((None, (), self.counts()))

    def finish_one(self) -> None:
        """Read the rest of /proc for the oldest exec and put its record out (or the counters alone)."""
        pid, argv, counts = self.queue.popleft()
        if pid is None:
            self.put(["counts", counts])
            return
        start, gone = read_start(pid, argv=argv, proc=self.proc)
        self.put(["exec", start.pid, start.ppid, start.exe, list(start.argv), start.cwd, start.uid, start.at, gone, counts])

    def put(self, record: list[object]) -> None:
        self.out += json.dumps(record, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"

    def flush(self) -> bool:
        """Write what the pipe takes now; False once the agent has closed it."""
        while self.out:
            try:
                written = os.write(self.pipe, self.out)
            except BlockingIOError:
                return True
            except BrokenPipeError:
                return False
            del self.out[:written]
        return True

    def run(self) -> int:
        poller = select.poll()
        sock_fd = self.sock.fileno()
        poller.register(sock_fd, select.POLLIN)
        poller.register(self.pipe, 0)  # POLLERR alone: the agent closed its end
        while True:
            # An agent slow to read fills the pipe, then ``out``: records wait finished, then
            # execs wait with their arguments read, then messages wait in the socket buffer.
            reading = len(self.queue) < QUEUE_MAX
            finishing = bool(self.queue) and len(self.out) < OUT_MAX_BYTES
            poller.modify(sock_fd, select.POLLIN if reading else 0)
            poller.modify(self.pipe, select.POLLOUT if self.out else 0)
            for fd, event in poller.poll(0 if finishing else None):
                if fd == self.pipe and event & (select.POLLERR | select.POLLHUP):
                    return 0
            if reading:
                self.drain()
            if self.queue and len(self.out) < OUT_MAX_BYTES:
                self.finish_one()
            if self.out and not self.flush():
                return 0


def serve(sock_fd: int, pipe_fd: int, *, proc: str = "/proc") -> int:
    """Read the subscribed socket ``sock_fd`` and write records to ``pipe_fd`` until the agent goes away."""
    _die_with_parent()
    realtime, priority = prefer_cpu()
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR, fileno=sock_fd)
    reader = _Reader(sock, pipe_fd, proc)
    try:
        import fcntl

        fcntl.fcntl(pipe_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (OSError, AttributeError):
        pass  # the default 64 KB: a few hundred records
    reader.put(["hello", os.getpid(), realtime, priority])
    os.set_blocking(pipe_fd, True)
    if not reader.flush():
        return 0
    os.set_blocking(pipe_fd, False)
    return reader.run()


def main(argv: list[str] | None = None) -> int:
    """``SOCKET_FD PIPE_FD``: the entry point of the reader process."""
    args = sys.argv[1:] if argv is None else argv
    try:
        sock_fd, pipe_fd = int(args[0]), int(args[1])
    except (IndexError, ValueError):
        print("usage: proc_reader SOCKET_FD PIPE_FD", file=sys.stderr)
        return 2
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the agent, which stops this reader itself
    return serve(sock_fd, pipe_fd)


if __name__ == "__main__":
    sys.exit(main())
