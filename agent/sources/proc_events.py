"""Every program started on the machine, as it starts: the kernel's process-events connector (Linux).

git and upload tools are short-lived: a push of a small repository runs for a few milliseconds, and
polling /proc misses it. The proc connector (netlink ``NETLINK_CONNECTOR``, group ``CN_IDX_PROC``)
sends a datagram for each exec as it happens. It also sends one for every fork, exit, uid change...
which a ``make -j2`` produces by the thousand, so a classic BPF socket filter drops every message
but execs (and the subscription's acknowledgement) in the kernel, before they cost a wakeup here.

This module subscribes, then hands the subscribed socket to a reader process
(agent/sources/proc_reader.py): on each exec it reads ``/proc/<pid>`` at once, while the program
most likely still runs. A thread of the agent could not: woken in time, it must still take the
GIL back from the agent's other busy threads, which hold it for up to 5 ms while a /bin/true lives
one. A program that is already gone still gives a ``ProcessStart`` (with what could be read) and
is counted as ``gone``. A full socket buffer (``ENOBUFS``) means the kernel dropped messages: it is
counted as ``lost`` and reading goes on. The reader thread here takes the reader process's records
from a pipe, in the kernel's order, and calls ``on_exec``.

Subscribing needs the initial user and pid namespaces (and ``CAP_NET_ADMIN`` before Linux 6.6);
in a container the kernel ignores the request silently, which shows here as no acknowledgement. Either way
``available`` is False and ``health()`` says why; so it is when the reader process cannot be started.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import random
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.sources import proc_reader
from agent.sources.proc_reader import (  # noqa: F401  (re-exported: the egress tracker and tests use them from here)
    _CN_MSG,
    _NLMSGHDR,
    CN_IDX_PROC,
    CN_VAL_PROC,
    EVENT_AT,
    MAX_ARGS,
    MAX_ARGV_BYTES,
    NETLINK_CONNECTOR,
    PROC_EVENT_EXEC,
    PROC_EVENT_NONE,
    RECV_BYTES,
    ProcessStart,
    parse,
    read_argv,
    read_start,
)
from agent.threads import StoppableThread

log = logging.getLogger(__name__)

NLMSG_DONE = 3
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
RCVBUF_BYTES = 8 * 1024 * 1024
"""About ten thousand exec messages: a burst the reader may lag behind without losing any."""
ACK_TIMEOUT_S = 2.0
READER_START_S = 15.0
"""How long the reader process may take to say it runs (a frozen binary unpacks first)."""
READER_STOP_S = 2.0


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
        (_BPF_LD_W_ABS, 0, 0, EVENT_AT),
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


def reader_command(sock_fd: int, pipe_fd: int) -> list[str]:
    """How to start the reader process: this Python on the module, or the frozen agent binary on its hidden argument."""
    args = [str(sock_fd), str(pipe_fd)]
    if getattr(sys, "frozen", False):
        # A one-file binary started by itself reuses the folder it unpacked to (PyInstaller's
        # sub-process rule), and agent/cli/main.py turns into the reader before importing the rest.
        return [sys.executable, proc_reader.READER_ARG, *args]
    return [sys.executable, "-m", "agent.sources.proc_reader", *args]


def _reader_env() -> dict[str, str] | None:
    """The environment for ``python -m``: this ``agent`` package first on the path, wherever it was imported from."""
    if getattr(sys, "frozen", False):
        return None
    root = str(Path(proc_reader.__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


class ProcessEventsUnavailable(OSError):
    """The proc connector cannot be used here; the message says why."""


class ProcessEvents:
    """Calls ``on_exec`` with a ``ProcessStart`` for every program exec'd on this machine.

    ``on_exec`` runs on this module's reader thread, which takes the reader process's records; a
    slow one makes records wait (in the pipe, then in the reader process, whose reading of /proc
    goes on) and, past the socket buffer, events are lost.

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
        self.datagrams = 0  # messages that reached the reader (the filter's work shows here)
        self.execs = 0  # exec messages, own children included
        self.skipped = 0  # execs of this process's own children
        self.gone = 0  # execs whose program was gone before /proc could be read
        self.lost = 0  # times the kernel reported dropped messages (ENOBUFS)
        self.others = 0  # messages neither exec nor acknowledgement (none with the filter on)
        self.callback_errors = 0

    @property
    def thread(self) -> StoppableThread | None:
        """The thread that takes the reader process's records (for a supervisor), None before a successful ``start``."""
        return self._reader

    @property
    def reader_pid(self) -> int | None:
        """The pid of the reader process while it runs, else None."""
        reader = self._reader
        return reader.child_pid if reader is not None else None

    def start(self) -> None:
        """Subscribe and start the reader; where that is refused, ``available`` stays False and ``reason`` says why."""
        with self._lock:
            if self._reader is not None:
                return
            try:
                sock, early = self._subscribe()
            except ProcessEventsUnavailable as exc:
                self.reason = exc.strerror or str(exc)
                log.warning("no process events: %s", self.reason)
                return
            reader = _Reader(self, sock, early)
            reader.start()
            failure = reader.started(READER_START_S)
            if failure is not None:
                reader.stop()
                _unsubscribe(sock)
                self.reason = failure
                log.warning("no process events: %s", self.reason)
                return
            self._sock = sock
            self._reader = reader
            self.available = True
            self.reason = ""

    def stop(self) -> None:
        """Stop the reader process and thread, unsubscribe and close the socket; harmless twice."""
        with self._lock:
            reader, sock = self._reader, self._sock
            self._reader = self._sock = None
            self.available = False
            if self.reason == "":
                self.reason = "stopped"
        if reader is not None:
            reader.stop()
        if sock is not None:
            _unsubscribe(sock)

    def health(self) -> dict[str, Any]:
        """``{"state": "ok" | "degraded" | "off", "message": ...}``."""
        if not self.available:
            return {"state": "off", "message": f"no process events: {self.reason}"}
        message = f"proc connector: {self.execs} execs, {self.gone} gone, {self.lost} lost"
        reader = self._reader
        if reader is not None and not reader.is_alive():
            return {"state": "degraded", "message": message + f"; the reader stopped{f' ({reader.ended})' if reader.ended else ''}"}
        if reader is not None:
            message += f"; reader process at {reader.priority}"
            if not reader.realtime:
                message += " (programs of a millisecond may be gone)"
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

    def _early(self, datagrams: list[bytes]) -> None:
        """The messages that came before the acknowledgement, read here (the arguments of all first)."""
        execs: list[tuple[int, tuple[str, ...]]] = []
        for datagram in datagrams:
            self.datagrams += 1
            message = parse(datagram)
            if message is None or message[0] == PROC_EVENT_NONE:
                continue
            if message[0] != PROC_EVENT_EXEC:
                self.others += 1
                continue
            execs.append((message[1], read_argv(message[1])))
        for pid, argv in execs:
            start, gone = read_start(pid, argv=argv)
            self._hand_on(start, gone)

    def _record(self, record: list[Any], base: tuple[int, int, int]) -> None:
        """One record of the reader process (see agent/sources/proc_reader.py); counters are its own plus ``base``."""
        counts = record[-1]
        self.datagrams, self.others, self.lost = (b + int(c) for b, c in zip(base, counts))
        if record[0] != "exec":
            return
        _, pid, ppid, exe, argv, cwd, uid, at, gone = record[:9]
        self._hand_on(ProcessStart(pid=pid, ppid=ppid, exe=exe, argv=tuple(argv), cwd=cwd, uid=uid, at=at), bool(gone))

    def _hand_on(self, start: ProcessStart, gone: bool) -> None:
        self.execs += 1
        if gone:
            self.gone += 1
        if self._ignore_own_children and start.ppid == self._own_pid:
            self.skipped += 1
            return
        try:
            self._on_exec(start)
        except Exception:  # one bad call must not end process events for the whole agent
            self.callback_errors += 1
            log.exception("process event handler failed on pid %d", start.pid)


def _unsubscribe(sock: socket.socket) -> None:
    try:
        sock.send(_request(PROC_CN_MCAST_IGNORE, 2))  # the kernel counts listeners; it only skips work at zero
    except OSError:
        pass
    sock.close()


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
            datagram = sock.recv(RECV_BYTES)
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


class _ReaderFailed(Exception):
    """The reader process could not be started, or did not say it runs; the message says why."""


class _Reader(StoppableThread):
    """Starts the reader process and takes its records until stopped; a pipe wakes it at once on stop.

    The process is started from this thread, not the caller's: its ``PR_SET_PDEATHSIG`` fires when
    the thread that started it ends, and this one lives exactly as long as it is needed.
    """

    def __init__(self, owner: ProcessEvents, sock: socket.socket, early: list[bytes]):
        super().__init__(name="proc-events")
        self._owner = owner
        self._sock = sock
        self._early = early
        self.realtime = False
        self.priority = "ordinary priority"
        self.child_pid: int | None = None
        self.ended = ""  # why the reader process ended, when it ended on its own
        self._child: subprocess.Popen[bytes] | None = None
        self._pipe_r = -1
        self._buffer = b""
        self._ready = threading.Event()
        self._failure: str | None = None
        self._wake_lock = threading.Lock()  # the wake pipe is closed once, by whoever sees the thread end
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

    def started(self, timeout: float) -> str | None:
        """Wait for the reader process to run; None when it does, else why not."""
        if not self._ready.wait(timeout):
            return "the process-events reader did not start in time"
        return self._failure

    def on_stop(self) -> None:
        with self._wake_lock:  # not a descriptor closed meanwhile, its number reused
            if self._wake_w < 0:
                return
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass

    def stop(self, timeout: float | None = 5.0) -> None:
        super().stop(timeout)
        if not self.is_alive():
            self._end_child()  # never started, or ended: nothing else touches it now
            self._close_wake()
        # Else the thread still polls the wake pipe (an ``on_exec`` slow past ``timeout``): it
        # ends the reader process and closes the pipe itself on its way out (``run``).

    def run(self) -> None:
        try:
            super().run()
        finally:
            if self.stopping:  # asked to stop: nothing wakes this thread again
                self._close_wake()

    def _close_wake(self) -> None:
        with self._wake_lock:
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
            self._wake_r = self._wake_w = -1

    def run_loop(self) -> None:
        owner = self._owner
        try:
            try:
                if self._early:
                    owner._early(self._early)
                    self._early = []
                self._spawn()
            except Exception as exc:  # whatever it is, ``start()`` must hear of it, not find a dead thread
                if isinstance(exc, _ReaderFailed):
                    self._failure = str(exc)
                else:  # the type only: a message may carry a command line or what the reader wrote
                    self._failure = f"the process-events reader failed at start ({type(exc).__name__})"
                    log.debug("the process-events reader failed at start", exc_info=True)
                self.ended = self._failure  # a supervised restart that fails shows in health()
                return
            finally:
                self._ready.set()
            base = (owner.datagrams, owner.others, owner.lost)  # the new process counts from zero
            poller = select.poll()
            poller.register(self._pipe_r, select.POLLIN)
            poller.register(self._wake_r, select.POLLIN)
            while not self.stopping:
                for record in self._records():
                    owner._record(record, base)
                if any(fd == self._wake_r for fd, _ in poller.poll()):
                    return
                chunk = os.read(self._pipe_r, 1 << 16)
                if not chunk:
                    self._lost_child()
                    return
                self._buffer += chunk
        finally:
            self._end_child()

    def _spawn(self) -> None:
        """Start the reader process on the subscribed socket and wait for its first record."""
        pipe_r, pipe_w = os.pipe2(os.O_CLOEXEC)
        self._pipe_r = pipe_r
        try:
            command = reader_command(self._sock.fileno(), pipe_w)
            self._child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, close_fds=True, pass_fds=(self._sock.fileno(), pipe_w), env=_reader_env())
        except OSError as exc:
            raise _ReaderFailed(f"the process-events reader could not be started ({_name(exc)})") from None
        finally:
            os.close(pipe_w)
        self._buffer = b""
        deadline = time.monotonic() + READER_START_S
        poller = select.poll()
        poller.register(pipe_r, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            ready = poller.poll(max(left, 0) * 1000) if left > 0 else []
            if not ready:
                raise _ReaderFailed("the process-events reader did not start in time")
            if any(fd == self._wake_r for fd, _ in ready):
                raise _ReaderFailed("stopped while the process-events reader started")
            chunk = os.read(pipe_r, 1 << 16)
            if not chunk:
                try:
                    code = self._child.wait(READER_STOP_S)
                except subprocess.TimeoutExpired:
                    raise _ReaderFailed("the process-events reader closed its pipe at start but did not exit") from None
                raise _ReaderFailed(f"the process-events reader ended at start (exit code {code})")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            hello = json.loads(line)
            if not isinstance(hello, list) or len(hello) < 4 or hello[0] != "hello":
                raise ValueError("not a hello")
            self.child_pid, self.realtime, self.priority = int(hello[1]), bool(hello[2]), str(hello[3])
        except (ValueError, TypeError):  # JSONDecodeError is a ValueError
            raise _ReaderFailed("the process-events reader's first record was not its hello") from None

    def _records(self) -> list[list[Any]]:
        """The complete records in the buffer (a partial last line stays for the next read)."""
        if b"\n" not in self._buffer:
            return []
        *lines, self._buffer = self._buffer.split(b"\n")
        return [json.loads(line) for line in lines]

    def _lost_child(self) -> None:
        child = self._child
        code = child.poll() if child is not None else None
        if code is None and child is not None:
            try:
                code = child.wait(READER_STOP_S)
            except subprocess.TimeoutExpired:
                pass
        self.ended = f"the reader process ended, exit code {code}"
        log.warning("process events: %s", self.ended)

    def _end_child(self) -> None:
        """Close the pipe (the reader process exits on it), make sure it ended, and reap it."""
        if self._pipe_r >= 0:
            os.close(self._pipe_r)
            self._pipe_r = -1
        child, self._child = self._child, None
        self.child_pid = None
        if child is None:
            return
        for ask in (None, child.terminate, child.kill):
            if ask is not None and child.poll() is None:
                ask()
            try:
                child.wait(READER_STOP_S / 2 if ask is None else READER_STOP_S)
                return
            except subprocess.TimeoutExpired:
                pass
        child.wait()
