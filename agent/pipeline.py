"""The pipeline: a bounded queue from sources to scanner threads, then policy, then spool.

Sources call ``submit``; scanner threads take work, scan it, let the policy decide
and put the record in the spool, the only durable hand-off. A spool that cannot
take a record (disk full) keeps the record in its thread and retries: nothing the
policy decided is dropped on the floor, and back-pressure reaches the sources.
"""

from __future__ import annotations

import dataclasses
import getpass
import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from agent.egress.scan import EgressScanner
from agent.policy import Context, decide, decide_egress
from agent.scanning import Scanner
from agent.scanning.results import Match, ScanResult, Status
from agent.sources.work import ClipboardWork, DeviceChange, EgressWork, FileWork, QuarantineReport, Work
from agent.spool import Spool, SpoolError, SpoolFull
from agent.threads import StoppableThread

log = logging.getLogger(__name__)

SUBMIT_TIMEOUT_S = 5.0
STOP_WAKE_S = 0.5
"""How long ``stop`` tries to queue the idle scanners' wake-ups: long enough for sleepers to take them
from a small queue, short for a queue full of work, where no scanner sleeps."""

Enforce = Callable[[Work, ScanResult], "dict[str, Any] | None"]
"""Opt-in enforcement on content (clipboard clear, USB quarantine): called on a scanner thread for
work whose event is about to be spooled with a match; acts, and returns the event's ``enforcement``
(or None when nothing applies). It must not raise: a failed action is ``done: false`` with a detail."""
_RETRY_MAX_S = 30.0


class Pipeline:
    """Scanner threads between a bounded queue and the spool."""

    def __init__(
        self,
        scanner: Scanner,
        spool: Spool,
        context: Context,
        *,
        threads: int = 2,
        queue_size: int = 10_000,
        clock: Callable[[], float] = time.time,
        on_spooled: Callable[[], None] | None = None,
        enforce: Enforce | None = None,
        egress: EgressScanner | None = None,
    ):
        self.scanner = scanner
        self._egress = egress
        self._enforce = enforce
        self._on_spooled = on_spooled
        self.spool = spool
        self.context = context
        self._clock = clock
        # None wakes a stopping worker (``stop``): the workers sleep in ``get`` with no timeout.
        self._queue: queue.Queue[Work | None] = queue.Queue(maxsize=queue_size)
        self._workers = [_Worker(self, i) for i in range(threads)]
        self._lock = threading.Lock()
        self.overflowed = 0
        self.processed = 0
        self.spool_error: str | None = None
        self._unspooled: list[Work] = []  # decided, but the spool could not take it before shutdown

    @property
    def workers(self) -> list[StoppableThread]:
        """The scanner threads, for the daemon's supervisor to watch before ``start``."""
        return list(self._workers)

    def start(self) -> None:
        for worker in self._workers:
            worker.start()

    def submit(self, work: Work) -> bool:
        """Queue ``work``; blocks a while when full (back-pressure), then counts it as lost."""
        try:
            self._queue.put(work, timeout=SUBMIT_TIMEOUT_S)
            return True
        except queue.Full:
            with self._lock:
                self.overflowed += 1
            log.warning("work queue full for %.0fs: a %s was not scanned", SUBMIT_TIMEOUT_S, type(work).__name__)
            return False

    def depth(self) -> int:
        return self._queue.qsize()

    def stop(self, *, drain_s: float = 10.0) -> list[Work]:
        """Finish queued work for up to ``drain_s``, stop the threads, return what is left."""
        deadline = time.monotonic() + drain_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)
        # Every worker is told first, then woken, one wake-up each: one taken by a worker not yet
        # stopping would leave another asleep. A queue full of wake-ups empties as the sleepers take
        # them; one full of work needs none (no worker waits on it), and is given up on after a moment.
        for worker in self._workers:
            worker.stop(timeout=0)
        wake_by = time.monotonic() + STOP_WAKE_S
        for _ in self._workers:
            try:
                self._queue.put(None, timeout=max(0.0, wake_by - time.monotonic()))
            except queue.Full:
                break
        for worker in self._workers:
            worker.stop()
        with self._lock:
            left: list[Work] = list(self._unspooled)
            self._unspooled.clear()
        while True:
            try:
                work = self._queue.get_nowait()
            except queue.Empty:
                return left
            if work is not None:
                left.append(work)

    def health(self) -> dict[str, str]:
        if self.spool_error:
            return {"state": "degraded", "message": f"spool: {self.spool_error}"}
        if self.overflowed:
            return {"state": "degraded", "message": f"{self.overflowed} item(s) lost to a full work queue"}
        return {"state": "ok", "message": f"{self.processed} item(s) processed"}

    # Worker side -----------------------------------------------------------

    def process(self, work: Work, pause: Callable[[float], bool]) -> None:
        """Scan, decide, spool one item (on a worker thread).

        ``pause(seconds)`` sleeps between spool retries and returns True once shutdown is asked.
        """
        if isinstance(work, EgressWork):
            self._process_egress(work, pause)
            return
        result: ScanResult | None = None
        if isinstance(work, FileWork):
            result = self.scanner.scan_path(work.path)
        elif isinstance(work, ClipboardWork):
            result = self.scanner.scan_bytes(work.data, name="clipboard")
        if not self._decide_and_spool(work, result, pause):
            with self._lock:
                self._unspooled.append(work)  # handed back by stop(), to be redone at the next start
            return
        if isinstance(work, ClipboardWork) and work.earlier and result is not None:
            combined = _recent_copies(self.scanner, work, result)
            # Not kept for the next start when shutdown comes first: clipboard text never touches disk.
            if combined is not None:
                self._decide_and_spool(*combined, pause)
        with self._lock:
            self.processed += 1

    def _process_egress(self, work: EgressWork, pause: Callable[[float], bool]) -> None:
        """Scan what a push or an upload carries, then spool each event the policy makes of it."""
        if self._egress is None:
            return
        repo = self._egress.repository(work) if work.repository is not None else None
        upload = self._egress.upload(work) if work.files else None
        for decision in decide_egress(work, repo, upload, self.context, user=_owner(work), now=self._clock()):
            if not self._spool(decision.event, decision.matched, pause):
                with self._lock:
                    self._unspooled.append(work)  # redone whole at the next start: a push is rare, a repeat harmless
                return
        with self._lock:
            self.processed += 1

    def _decide_and_spool(self, work: Work, result: ScanResult | None, pause: Callable[[float], bool]) -> bool:
        """Spool the event the policy makes of ``work``, if any; False if shutdown came first."""
        decision = decide(work, result, self.context, user=_owner(work), now=self._clock())
        if decision is None:
            return True
        if self._enforce is not None and result is not None and result.status is Status.MATCH:
            try:
                enforcement = self._enforce(work, result)
            except Exception as exc:  # an action that failed must not lose the event
                log.exception("enforcement failed for %s", type(work).__name__)
                enforcement = {"action": None, "mode": "enforce", "done": False, "detail": f"failed: {exc}"}
            if enforcement is not None:
                decision.event["enforcement"] = enforcement
        return self._spool(decision.event, decision.matched, pause)

    def _spool(self, event: dict, matched: bool, pause: Callable[[float], bool]) -> bool:
        """Put ``event``, retrying while the spool cannot take it; False if shutdown came first."""
        delay = 0.5
        while True:
            try:
                self.spool.put(event, matched=matched)
                if self._on_spooled is not None:
                    self._on_spooled()
                if self.spool_error:
                    log.info("spool writable again")
                    self.spool_error = None
                return True
            except SpoolError as exc:
                message = "disk full" if isinstance(exc, SpoolFull) else str(exc)
                if self.spool_error != message:
                    log.error("cannot write the spool (%s); holding the event and retrying", message)
                self.spool_error = message
                if pause(delay):
                    log.error("shutting down before the spool could take event %s (%s)", event["id"], message)
                    return False
                delay = min(delay * 2, _RETRY_MAX_S)


def _recent_copies(scanner: Scanner, work: ClipboardWork, alone: ScanResult) -> tuple[ClipboardWork, ScanResult] | None:
    """The recent texts and this one scanned as one, when that finds a rule neither finds without the other.

    A rule the earlier texts already match together was reported when it first emerged, and one
    this text matches alone is reported with it: neither is raised again for the concatenation.
    """
    combined = work.earlier + work.data
    together = scanner.scan_bytes(combined, name="clipboard")
    if together.status is not Status.MATCH:
        return None
    before = scanner.scan_bytes(work.earlier, name="clipboard")
    known = {_rule(m) for m in (*alone.matches, *before.matches)}
    new = tuple(m for m in together.matches if _rule(m) not in known)
    if not new:
        return None
    concatenation = ClipboardWork(
        data=combined, sha256=hashlib.sha256(combined).hexdigest(), original_size=len(combined),
        observed_at=work.observed_at, trigger="recent_copies",
    )
    return concatenation, dataclasses.replace(together, matches=new)


def _rule(match: Match) -> tuple[str, str]:
    # Not the member: a decoded part's name carries its offset, which differs in the concatenation.
    return match.namespace, match.rule


class _Worker(StoppableThread):
    def __init__(self, pipeline: Pipeline, index: int):
        super().__init__(name=f"scanner-{index}")
        self._pipeline = pipeline

    def run_loop(self) -> None:
        q = self._pipeline._queue
        while not self.stopping:
            work = q.get()  # no timeout: an idle scanner sleeps until work or ``Pipeline.stop``'s wake-up
            if work is None:
                q.task_done()
                continue
            try:
                self._pipeline.process(work, self.wait)
            except Exception:  # one bad item must not take the scanner thread down
                log.exception("failed to process %s", type(work).__name__)
            finally:
                q.task_done()


try:
    import pwd
except ImportError:  # Windows: no uid-to-name table; files are then attributed to the agent's user
    pwd = None  # type: ignore[assignment]


def _owner(work: Work) -> str | None:
    """The user behind an item: the writing process's user where known, else a file's owner; for other
    work, the agent's own user."""
    if isinstance(work, (DeviceChange, QuarantineReport)):
        return None
    if isinstance(work, (FileWork, ClipboardWork, EgressWork)) and work.process and isinstance(work.process.get("user"), str):
        return str(work.process["user"])
    if pwd is None:
        return getpass.getuser()
    uid = os.getuid()
    if isinstance(work, FileWork):
        try:
            uid = os.stat(work.path).st_uid
        except OSError:
            pass
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
