"""Scanning in worker processes: ``dlp-agent scan --jobs N`` on N cores, as ``yara -p N`` does.

Threads share one interpreter, so every file's Python work (open, hash, decode passes, result)
waited for the GIL and two jobs ran 1.14 times as fast as one. Here N forked processes each
scan with the parent's ``Scanner`` (its compiled rules inherited, never compiled again); the
parent walks the tree, hands files out in batches of about half a MiB, and yields the results in
walk order. The end of a scan is handed out largest file first in ever smaller batches, so the
workers finish together. Each worker keeps the per-file deadline and the limits as one job does, and reads
huge files in the same flat buffers.

The parent also watches: a worker still on one file long past its deadline (a parser that does
not check the budget) is killed and the file reported ``timeout``; a worker that dies (a crash,
the OOM killer) costs the file it was on (``unreadable``) and is replaced, its other files
handed out again. Ctrl-C reaches the parent only: it stops the workers and reaps them.
"""

from __future__ import annotations

import collections
import gc
import mmap
import os
import pickle
import selectors
import signal
import struct
import sys
import time
from collections.abc import Generator, Iterable, Iterator
from typing import Any

from agent.scanning.engine import Scanner
from agent.scanning.errors import ScanError
from agent.scanning.results import ScanResult, Status
from agent.scanning.walk import Target

BATCH_BYTES = 512 << 10
BATCH_FILES = 16
"""A batch ends at this many bytes or files: big enough that handing it out costs little next to
scanning it."""
IN_FLIGHT = 2
"""Batches a worker holds: one it scans and the next, so it never waits for the parent."""
WINDOW = 4096
"""Files handed out but not yet yielded: results wait in order behind a slow file up to this many."""
LOOKAHEAD = 512
"""Files the parent walks and sizes ahead of the hand-out. Once the walk has ended, these are all
that is left: the largest go out first, and the batches shrink with what remains, so that the
workers finish together instead of one scanning its last two batches while the others wait."""
WATCH_S = 1.0
"""How often the parent looks for a worker stuck on one file."""
MAX_DEATHS = 3
"""Workers that may die in a row on no file in particular before the scan gives up."""

_HEADER = struct.Struct("<I")
_SLOT = struct.Struct("<qd")
"""Per worker, in memory shared with the parent: the index of the file it is scanning (-1: none)
and when it started on it (``time.monotonic``, one clock for all processes)."""


def scan_in_processes(
    scanner: Scanner, targets: Iterable[Target], *, jobs: int, stuck_after_s: float | None = None
) -> Generator[ScanResult, None, None]:
    """Scan ``targets`` in ``jobs`` worker processes, yielding results in input order.

    A worker still on one file ``stuck_after_s`` after it started (default: twice the per-file
    deadline, plus 10 s) is killed, and the file reported ``timeout``.

    Raises:
        ScanError: a worker failed for a reason of its own (not of a file), or workers
            kept dying on no file in particular.
    """
    pool = _Pool(scanner, jobs, stuck_after_s or 2 * scanner.limits.timeout_s + 10)
    try:
        yield from pool.run(iter(targets))
    finally:
        pool.close()


class _Worker:
    """The parent's side of one worker process."""

    def __init__(self, pid: int, slot: int, tasks: int, results: int):
        self.pid = pid
        self.slot = slot
        self.tasks = tasks
        self.results = results
        self.outbox = bytearray()
        self.inbox = bytearray()
        self.batches: collections.deque[list[int]] = collections.deque()
        self.killed_on: int | None = None
        """The file the parent killed this worker over (stuck past its deadline)."""
        self.writing = False
        """Whether the parent waits for room in the tasks pipe (a batch written in part)."""


class _Pool:
    def __init__(self, scanner: Scanner, jobs: int, hard_limit_s: float):
        self.scanner = scanner
        self.jobs = jobs
        self.hard_limit_s = hard_limit_s
        self.board = mmap.mmap(-1, _SLOT.size * jobs)
        self.selector = selectors.DefaultSelector()
        self.workers: dict[int, _Worker] = {}  # by results fd
        self.paths: dict[int, str] = {}  # handed out, not yet done
        self.done: dict[int, ScanResult] = {}
        self.retry: collections.deque[int] = collections.deque()
        self.deaths = 0
        self.finished = False
        self.targets: Iterator[Target] = iter(())
        self.ahead: collections.deque[tuple[int, str, int]] = collections.deque()
        """Walked, not yet handed out: index, path and size."""
        self.ahead_bytes = 0
        self.exhausted = False
        """Whether the walk has ended."""
        self.next_in = 0
        """The index the next walked path gets."""
        self.next_out = 0
        """The index of the next result to yield."""
        for slot in range(jobs):
            _SLOT.pack_into(self.board, slot * _SLOT.size, -1, 0.0)

    # The parent's loop ---------------------------------------------------

    def run(self, targets: Iterator[Target]) -> Iterator[ScanResult]:
        self.targets = targets
        while True:
            while self.retry or self._read_ahead(1):
                worker = self._idle_worker()
                if worker is None:
                    break
                self._send(worker, self._batch())
            self._read_ahead(LOOKAHEAD)  # while the workers scan
            while self.next_out in self.done:
                result = self.done.pop(self.next_out)
                self.next_out += 1
                yield result
            if self.exhausted and self.next_out == self.next_in:
                self.finished = True
                return
            self._wait()

    def _read_ahead(self, count: int) -> bool:
        """Walk until ``count`` files wait to be handed out (or the walk or the window ends);
        whether any wait. Paths the walk could not list are results at once."""
        while len(self.ahead) < count and not self.exhausted and self.next_in - self.next_out < WINDOW:
            target = next(self.targets, None)
            if target is None:
                self.exhausted = True
                # The tail is known: largest first, so the last batches are the smallest files.
                self.ahead = collections.deque(sorted(self.ahead, key=lambda entry: -entry[2]))
                break
            index = self.next_in
            self.next_in += 1
            if target.error is not None:
                self.done[index] = ScanResult.problem(target.path, Status.UNREADABLE, target.error)
                continue
            size = _size(target.path)
            self.ahead.append((index, target.path, size))
            self.ahead_bytes += size
        return bool(self.ahead)

    def _batch(self) -> list[tuple[int, str]]:
        """Files handed back after a worker died first, then the walk's, up to a batch's size;
        once the walk has ended, a share of what is left (down to one file a batch)."""
        batch: list[tuple[int, str]] = []
        while self.retry and len(batch) < BATCH_FILES:
            index = self.retry.popleft()
            batch.append((index, self.paths[index]))
        limit = BATCH_BYTES
        if self.exhausted:
            limit = min(limit, self.ahead_bytes // (2 * self.jobs))
        size = 0
        while len(batch) < BATCH_FILES and (not batch or size < limit) and self._read_ahead(1):
            index, path, length = self.ahead.popleft()
            self.ahead_bytes -= length
            batch.append((index, path))
            size += length
        return batch

    def _idle_worker(self) -> _Worker | None:
        """A worker that can take a batch, forking one while fewer than ``jobs`` run."""
        for worker in self.workers.values():
            if len(worker.batches) < IN_FLIGHT:
                return worker
        if len(self.workers) < self.jobs:
            used = {w.slot for w in self.workers.values()}
            try:
                return self._spawn(min(set(range(self.jobs)) - used))
            except OSError as exc:  # out of processes or memory: go on with the workers there are
                if not self.workers:
                    raise ScanError(f"cannot start a scan worker: {exc.strerror or exc}") from exc
        return None

    def _send(self, worker: _Worker, batch: list[tuple[int, str]]) -> None:
        for index, path in batch:
            self.paths[index] = path
        worker.batches.append([index for index, _ in batch])
        payload = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
        worker.outbox += _HEADER.pack(len(payload)) + payload
        self._flush(worker)

    def _flush(self, worker: _Worker) -> None:
        try:
            while worker.outbox:
                written = os.write(worker.tasks, worker.outbox)
                del worker.outbox[:written]
        except BlockingIOError:
            pass
        except BrokenPipeError:
            worker.outbox.clear()  # it died: its results pipe says so
        if worker.outbox and not worker.writing:
            self.selector.register(worker.tasks, selectors.EVENT_WRITE, worker)
        elif worker.writing and not worker.outbox:
            self.selector.unregister(worker.tasks)
        worker.writing = bool(worker.outbox)

    def _wait(self) -> None:
        for key, _events in self.selector.select(WATCH_S):
            worker: _Worker = key.data
            if self.workers.get(worker.results) is not worker:
                continue  # buried while handling an earlier event of this round
            if key.fd == worker.results:
                self._receive(worker)
            else:
                self._flush(worker)
        self._watch()

    def _receive(self, worker: _Worker) -> None:
        ended = False
        try:
            while chunk := os.read(worker.results, 1 << 20):
                worker.inbox += chunk
            ended = True
        except BlockingIOError:
            pass  # all there is for now
        while len(worker.inbox) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(worker.inbox)
            if len(worker.inbox) < _HEADER.size + length:
                break
            kind, body = pickle.loads(worker.inbox[_HEADER.size : _HEADER.size + length])
            del worker.inbox[: _HEADER.size + length]
            if kind == "error":
                raise ScanError(f"scan worker failed: {body}")
            for index, result in body:
                self.done[index] = result
                del self.paths[index]
            worker.batches.popleft()
            self.deaths = 0
        if ended:
            self._buried(worker)

    def _watch(self) -> None:
        """Kill a worker stuck on one file far past the deadline the scanner itself keeps."""
        now = time.monotonic()
        for worker in self.workers.values():
            index, started = _SLOT.unpack_from(self.board, worker.slot * _SLOT.size)
            if index >= 0 and worker.killed_on is None and now - started > self.hard_limit_s:
                worker.killed_on = index
                _kill(worker.pid)

    def _buried(self, worker: _Worker) -> None:
        """A worker ended before its work did: blame the file it was on, hand out the rest again."""
        index, _started = _SLOT.unpack_from(self.board, worker.slot * _SLOT.size)
        how = _reap(worker.pid)
        self._forget(worker)
        unfinished = [i for batch in worker.batches for i in batch]
        blame = index if worker.killed_on is None else worker.killed_on
        if blame in unfinished:
            path = self.paths.pop(blame)
            if worker.killed_on is not None:
                reason = f"scan took longer than {self.scanner.limits.timeout_s:g}s; its process was stopped after {self.hard_limit_s:g}s"
                self.done[blame] = ScanResult.problem(path, Status.TIMEOUT, reason)
            else:
                self.done[blame] = ScanResult.problem(path, Status.UNREADABLE, f"the scanning process died on this file ({how})")
            unfinished.remove(blame)
            self.deaths = 0
        elif unfinished:
            self.deaths += 1
            if self.deaths > MAX_DEATHS:
                raise ScanError(f"scan workers keep dying ({how})")
        self.retry.extendleft(reversed(unfinished))

    # Processes ------------------------------------------------------------

    def _spawn(self, slot: int) -> _Worker:
        tasks_read, tasks_write = os.pipe()
        results_read, results_write = os.pipe()
        if sys.platform.startswith("linux") and not _LIBC:
            import ctypes  # loaded before fork: the child only calls it

            _LIBC.append(ctypes.CDLL(None, use_errno=True))
        parent = os.getpid()
        gc.freeze()  # the objects the workers inherit stay shared pages: collection would write to them
        try:
            pid = os.fork()
        except OSError:
            for fd in (tasks_read, tasks_write, results_read, results_write):
                os.close(fd)
            raise
        if pid == 0:
            code = 0
            try:
                os.close(tasks_write)
                os.close(results_read)
                for other in self.workers.values():
                    os.close(other.tasks)
                    os.close(other.results)
                self.selector.close()
                code = _work(self.scanner, tasks_read, results_write, self.board, slot, parent)
            except BaseException:
                code = 70
            finally:
                os._exit(code)
        os.close(tasks_read)
        os.close(results_write)
        os.set_blocking(tasks_write, False)
        os.set_blocking(results_read, False)
        worker = _Worker(pid, slot, tasks_write, results_read)
        self.workers[results_read] = worker
        self.selector.register(results_read, selectors.EVENT_READ, worker)
        return worker

    def _forget(self, worker: _Worker) -> None:
        self.selector.unregister(worker.results)
        if worker.writing:
            self.selector.unregister(worker.tasks)
        del self.workers[worker.results]
        os.close(worker.tasks)
        os.close(worker.results)
        _SLOT.pack_into(self.board, worker.slot * _SLOT.size, -1, 0.0)

    def close(self) -> None:
        """Let finished workers end on their own; stop the others (Ctrl-C, an error, an abandoned scan)."""
        workers = list(self.workers.values())
        for worker in workers:
            os.close(worker.tasks)  # end of input: a worker with nothing left exits
            if not self.finished:
                _kill(worker.pid)
        for worker in workers:
            _reap(worker.pid)
            os.close(worker.results)
        self.workers.clear()
        self.selector.close()
        self.board.close()


# The worker -------------------------------------------------------------

_LIBC: list[Any] = []
_PR_SET_PDEATHSIG = 1


def _work(scanner: Scanner, tasks: int, results: int, board: mmap.mmap, slot: int, parent: int) -> int:
    """A worker's life: read batches until the parent closes the pipe, send each batch's results."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if _LIBC:
        _LIBC[0].prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # a parent killed outright takes the workers along
    if os.getppid() != parent:
        return 0
    offset = slot * _SLOT.size
    with os.fdopen(tasks, "rb") as reader:
        while header := reader.read(_HEADER.size):
            (length,) = _HEADER.unpack(header)
            batch = pickle.loads(reader.read(length))
            out = []
            try:
                for index, path in batch:
                    _SLOT.pack_into(board, offset, index, time.monotonic())
                    out.append((index, scanner.scan_path(path)))
                    _SLOT.pack_into(board, offset, -1, 0.0)
                message: tuple[str, Any] = ("results", out)
            except Exception:
                import traceback

                message = ("error", f"{path}: {traceback.format_exc()}")
            payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
            _write_all(results, _HEADER.pack(len(payload)) + payload)
            if message[0] == "error":
                return 1
    return 0


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> str:
    """Wait for a worker to end; say how it did."""
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(number).name}"
        except ValueError:
            return f"killed by signal {number}"
    return f"exit status {os.WEXITSTATUS(status)}"
