"""Clipboard source: read the clipboard text (or X's PRIMARY selection) when it changes and emit a ClipboardWork."""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psutil
import pyperclip

from agent.sources.recent import RecentCopies
from agent.sources.work import ClipboardWork, Emit
from agent.sources.xowner import owner_process
from agent.sources.xselection import SelectionWatcher, SelectionWatchLost, SelectionWatchUnavailable, watch_selection
from agent.threads import StoppableThread

if TYPE_CHECKING:
    from agent.config import ClipboardSection
    from agent.sources.clipboard_clear import ClipboardClearer

log = logging.getLogger(__name__)

MIB = 1 << 20
# Text is encoded a slice at a time so a huge clipboard never exists twice (str and bytes) in full.
ENCODE_CHUNK_CHARS = 1 << 20
FAILURE_LOG_EVERY_S = 60.0
X_PROBE_TIMEOUT_S = 1.0
# Each cancelled read doubles the next one's time limit up to this factor, so a clipboard that is
# merely slow (100 MB on a loaded machine) still gets read; a success restores the configured limit.
TIMEOUT_BACKOFF_MAX = 8
READ_THREAD_NAME = "clipboard-read"
ABANDON_S, ABANDON_STEP_S = 0.5, 0.05
"""How long, and how often, a stopping source cancels a read still running (``_abandon``)."""
# Programs pyperclip runs to read the clipboard on Linux.
PASTE_HELPERS = frozenset({"xclip", "xsel", "wl-paste"})
# Proof that nothing listens at an address; a timeout or a full backlog may just be a busy server.
_ABSENT = (FileNotFoundError, ConnectionRefusedError, socket.gaierror)

Paste = Callable[[], str]
Watch = Callable[[str], SelectionWatcher]
Owner = Callable[[str], "dict[str, Any] | None"]
"""The event's ``process`` for the selection's owner (``owner_process``), or None where the display cannot tell."""
"""Subscribes to a selection's changes (``watch_selection``); raises ``SelectionWatchUnavailable`` where it cannot."""
CLIPBOARD = "clipboard"
PRIMARY = "primary"
"""X's selection of whatever text is highlighted, pasted with the middle button; no copy command needed."""
_TRIGGERS = {CLIPBOARD: "copy", PRIMARY: "select"}
# A text one selection handed on this recently is not handed on again by the other (highlight, then Ctrl-C).
HANDED_ON_S = 30.0
# With notifications, the selection is also read after this long without one, in case one was ever lost.
NOTIFIED_REREAD_S = 60.0
OWNER_TIMEOUT_S = 2.0
OWNER_THREAD_NAME = "clipboard-owner"


def x_display_missing(display: str) -> str | None:
    """Why no X server is at the display name ``[host]:number[.screen]``, or None when one may be.

    Only proof of absence counts: calling a busy server "no clipboard" would blind the source
    until its next quiet retry.
    """
    host, colon, rest = display.rpartition(":")
    number = rest.partition(".")[0]
    if not colon or not number.isdigit():
        return f"DISPLAY={display!r} is not an X display name"
    try:
        if host in ("", "unix"):
            try:
                _connect_unix(f"/tmp/.X11-unix/X{number}")
            except _ABSENT:
                # Linux servers also listen on an abstract socket, which works without the file.
                _connect_unix(f"\0/tmp/.X11-unix/X{number}")
        else:
            socket.create_connection((host, 6000 + int(number)), timeout=X_PROBE_TIMEOUT_S).close()
    except _ABSENT as exc:
        return f"the X display {display} does not answer ({exc.strerror or exc})"
    except OSError:
        return None
    return None


def _connect_unix(address: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(X_PROBE_TIMEOUT_S)
        sock.connect(address)


def system_paste() -> str:
    """Read the CLIPBOARD selection's text: ``read_selection(primary=False)``."""
    return read_selection(primary=False)


def system_paste_primary() -> str:
    """Read the PRIMARY selection's text (X11, or Wayland through wl-paste): ``read_selection(primary=True)``."""
    return read_selection(primary=True)


def read_selection(*, primary: bool) -> str:
    """Read the clipboard text through pyperclip, choosing its mechanism afresh on every call.

    pyperclip caches its first choice for the whole process, so one call made without a display
    would pin "no clipboard" forever; choosing again costs about 60 microseconds and lets a display
    that appears later be used. pyperclip's xclip and xsel backends return "" when the X display
    cannot be opened, so on Linux an empty read is believed only if the display answers.

    Raises:
        pyperclip.PyperclipException: no clipboard mechanism, or DISPLAY names an X server that is not there,
            or (for ``primary``) a mechanism without a PRIMARY selection (Windows, macOS).
    """
    _, paste = pyperclip.determine_clipboard()
    try:
        if not primary:
            text = paste()
        elif takes_primary(paste):
            text = paste(primary=True)
        else:
            raise pyperclip.PyperclipException("this clipboard mechanism has no PRIMARY selection")
    except pyperclip.PyperclipException as exc:
        if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
            raise pyperclip.PyperclipException("no display: neither DISPLAY nor WAYLAND_DISPLAY is set") from exc
        raise
    display = os.environ.get("DISPLAY")
    # With WAYLAND_DISPLAY set pyperclip may be reading through wl-paste, where DISPLAY says nothing.
    if not text and display and sys.platform.startswith("linux") and not os.environ.get("WAYLAND_DISPLAY"):
        missing = x_display_missing(display)
        if missing:
            raise pyperclip.PyperclipException(missing)
    return text


def takes_primary(paste: Callable[..., str]) -> bool:
    """Whether pyperclip's paste function reads PRIMARY on request (its "no clipboard" stand-in takes anything, and says why)."""
    parameters = inspect.signature(paste).parameters.values()
    return any(p.name == "primary" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def kill_paste_helpers(primary: bool = False) -> None:
    """Kill this process's children (xclip, xsel, wl-paste) reading the CLIPBOARD, or with ``primary`` the PRIMARY, selection.

    pyperclip keeps no handle on the child it runs, so this is the only way to end a read stuck in
    one; xclip is known to hang for good on large selections (astrand/xclip issues 34, 43 and 162).
    The other selection's reader, polled by another thread, is left alone.
    """
    for child in psutil.Process().children():
        try:
            if child.name() in PASTE_HELPERS and _reads_primary(child.cmdline()) == primary:
                child.kill()
        except psutil.Error:  # it ended meanwhile
            continue


def _reads_primary(argv: list[str]) -> bool:
    """Whether a helper's command line (as pyperclip builds it) reads the PRIMARY selection."""
    return "-p" in argv or any(a == "-selection" and b in ("p", "primary") for a, b in zip(argv, argv[1:], strict=False))


def call_within(call: Callable[[], Any], timeout_s: float, name: str) -> Any:
    """``call()``'s result, the exception it raised, or a TimeoutError when it took longer than ``timeout_s``.

    The call runs on a daemon thread; one that overruns (an X server that stopped answering) is
    left there and never holds up the agent's exit.
    """
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(call())
        except Exception as exc:  # handed back to the caller, which says what failed by its type
            box.append(exc)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return box[0] if box else TimeoutError(f"no answer within {timeout_s:g}s")


def no_owner(selection: str) -> dict[str, Any] | None:
    """An ``owner`` for platforms whose clipboard does not say who put the text there."""
    return None


def no_notifications(selection: str) -> SelectionWatcher:
    """A ``watch`` that never has notifications: the source polls (the default off X11)."""
    raise SelectionWatchUnavailable(f"no change notifications for the {selection} selection on {sys.platform}")


def fingerprint(text: str, max_bytes: int) -> tuple[str, int, bytes]:
    """Return the sha256 hex and byte size of ``text`` as UTF-8, and its first ``max_bytes`` bytes.

    Besides ``text`` itself, at most one encoded slice and the capped head are alive at a time.
    Lone surrogates (possible from some platforms' clipboards) are passed through rather than raised on.
    """
    digest = hashlib.sha256()
    size = 0
    head: list[bytes] = []
    head_size = 0
    for start in range(0, len(text), ENCODE_CHUNK_CHARS):
        chunk = text[start : start + ENCODE_CHUNK_CHARS].encode("utf-8", "surrogatepass")
        digest.update(chunk)
        size += len(chunk)
        if head_size < max_bytes:
            piece = chunk[: max_bytes - head_size]
            head.append(piece)
            head_size += len(piece)
    return digest.hexdigest(), size, b"".join(head)


class _Read:
    """One paste call on its own daemon thread; ``wake`` is set when it returns, or by a stop."""

    def __init__(self, paste: Paste):
        self.wake = threading.Event()
        self.done = threading.Event()  # set only when paste returned (``wake`` is also set by a stop)
        self.finished = False
        self.text: str | None = None
        self.error: Exception | None = None
        self._paste = paste
        threading.Thread(target=self._run, name=READ_THREAD_NAME, daemon=True).start()

    def _run(self) -> None:
        try:
            self.text = self._paste()
        except Exception as exc:  # handed to the source, which decides how loud to be
            self.error = exc
        finally:
            self.finished = True
            self.wake.set()
            self.done.set()


class ClipboardSource(StoppableThread):
    """Reads the clipboard text when it changes and emits a ``ClipboardWork`` for each new text.

    On X11 the X server says when the selection changes owner (XFixes, through ``watch``): the source
    subscribes before its first read and reads once per wake-up, so a change made during a read is
    read again after it. Where that is impossible (no python-xlib, no display, no XFixes, other
    platforms) it polls every ``interval_s``, and tries to subscribe again every ``unavailable_retry_s``;
    its health message says which it does.

    The first successful read after start-up is a baseline only: what the clipboard held then was
    put there before the agent was watching, so it is not an action we observed. The same holds
    after a spell without any clipboard mechanism. An empty read is neither an event nor a change:
    pyperclip's xclip backend reads every failure (an owner busy or handing over) as "", so
    treating "" as content would report the next read of unchanged text as a fresh copy.

    Between polls only the sha256 of the last content is kept, and, when a ``recent`` window is given,
    the last few short texts, in memory (never written down) for at most its age; nothing logs them.

    Each read runs on a short-lived daemon thread and is waited for at most ``paste_timeout_s``.
    Then it is abandoned: ``cancel`` kills the child pyperclip runs (xclip, say), which ends the
    read, and whatever it returns, possibly cut short, is thrown away; the next read gets twice
    the time (up to ``TIMEOUT_BACKOFF_MAX`` times the setting). No new read starts while an
    abandoned one is still running, so a backend that cannot be cancelled leaves at most one
    thread stuck, and being a daemon it never holds up the agent's exit.
    """

    def __init__(
        self,
        emit: Emit,
        *,
        interval_s: float = 0.5,
        max_bytes: int = MIB,
        paste: Paste | None = None,
        paste_timeout_s: float = 10.0,
        cancel: Callable[[], None] | None = None,
        unavailable_retry_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        selection: str = CLIPBOARD,
        recent: RecentCopies | None = None,
        handed_on: dict[str, dict[str, float]] | None = None,
        watch: Watch | None = None,
        owner: Owner | None = None,
        clearer: ClipboardClearer | None = None,
    ):
        """Create the source; ``start()`` begins watching.

        Args:
            emit: Receives each ``ClipboardWork``.
            interval_s: Pause between reads while a clipboard is available and polled (no notifications),
                or after a read that failed.
            max_bytes: Cap on the bytes handed on; ``sha256`` and ``original_size`` cover the full text.
            paste: Returns the clipboard text; ``system_paste`` (or ``system_paste_primary``) when None. Raising
                ``pyperclip.PyperclipException`` itself means "no clipboard here"; anything else,
                its subclasses included, is a failed read.
            paste_timeout_s: How long one read may take before it counts as failed and is abandoned
                (doubled after each such read, back to this after a success).
                Reading 100 MB through xclip takes about 1.5 s on an idle machine.
            cancel: Ends an abandoned read; called again on each poll while it still runs
                (when None, ``kill_paste_helpers`` for this selection).
            unavailable_retry_s: Pause between quiet retries while there is no clipboard mechanism.
            clock: Monotonic seconds, for spacing out failure logs.
            selection: ``CLIPBOARD`` or ``PRIMARY``: which selection this source polls.
            recent: The window of recent texts each change joins; the work carries those before it.
            handed_on: What each selection handed on lately (sha256 -> when), shared by the sources of one
                agent: text highlighted (PRIMARY) and then copied (CLIPBOARD) is one action, scanned once.
            watch: Subscribes to the selection's changes; ``watch_selection`` (XFixes) on Linux and the BSDs
                when None, ``no_notifications`` elsewhere.
            owner: Says which process owns the selection, asked once per new text (bounded by
                ``OWNER_TIMEOUT_S``); ``owner_process`` (X11) on Linux and the BSDs when None, ``no_owner`` elsewhere.
            clearer: With ``[clipboard] on_match = "clear"``: its notice is not an event, and a text it
                cleared lately is scanned again when the other selection hands it on.
        """
        super().__init__(name=f"{selection}-source")
        self._selection = selection
        self._recent = recent
        self._handed_on = handed_on
        self._emit = emit
        self._interval_s = interval_s
        self._max_bytes = max_bytes
        primary = selection == PRIMARY
        self._paste = paste or (system_paste_primary if primary else system_paste)
        self._paste_timeout_s = paste_timeout_s
        self._timeout_s = paste_timeout_s
        self._cancel = cancel or (lambda: kill_paste_helpers(primary))
        self._unavailable_retry_s = unavailable_retry_s
        self._clock = clock
        if watch is None:
            watch = no_notifications if sys.platform in ("win32", "darwin") else watch_selection
        self._watch = watch
        if owner is None:
            owner = no_owner if sys.platform in ("win32", "darwin") else owner_process
        self._owner = owner
        self._clearer = clearer
        self._watcher: SelectionWatcher | None = None
        self._watch_tried: float | None = None
        self._mechanism = f"polling every {interval_s * 1000:g} ms"
        self._baseline_taken = False
        self._last_sha: str | None = None  # of the last non-empty content
        self._current: _Read | None = None
        self._hung: _Read | None = None
        self._last: _Read | None = None  # the newest read started, for _abandon at stop
        self._health: tuple[str, str] = ("ok", "starting")
        self._reads = 0
        self._failures = 0
        self._not_taken = 0  # changes emitted while the work queue stayed full
        self._unlogged_failures = 0
        self._last_failure_log: float | None = None

    @property
    def reads(self) -> int:
        """Successful clipboard reads so far: shows that a poll has happened."""
        return self._reads

    @property
    def notified(self) -> bool:
        """Whether the source now learns of changes from the X server rather than by polling."""
        return self._watcher is not None

    @property
    def failures(self) -> int:
        """Polls that got no reading: a read failed, timed out or still hung ("no clipboard" aside)."""
        return self._failures

    def health(self) -> dict[str, str]:
        """``{"state": "ok" | "unavailable" | "degraded", "message": ...}``."""
        state, message = self._health
        if self._not_taken and state == "ok":
            state, message = "degraded", f"{message}; {self._not_taken} change(s) not scanned: the work queue was full"
        return {"state": state, "message": message}

    def run_loop(self) -> None:
        try:
            while not self.stopping:
                # Subscribed before reading: a change made while the read runs is notified, and read next.
                self._subscribe()
                text = self._read()
                if text is not None:
                    self._observe(text)
                    del text  # a huge clipboard must not stay alive through the pause
                if self._pause():
                    return
        finally:
            self._unsubscribe()
            self._abandon()

    def _abandon(self) -> None:
        """At stop, cancel a read still running until it ends, for at most ``ABANDON_S``.

        on_stop's one cancel can come just before the read's helper exists (xclip spawned a moment
        later), which would then outlive the source; a few more cancels close that gap.
        """
        read = self._last
        deadline = time.monotonic() + ABANDON_S
        while read is not None and not read.finished and time.monotonic() < deadline:
            self._cancel()
            read.done.wait(ABANDON_STEP_S)

    def _pause(self) -> bool:
        """Wait for the next read: a notification, or the polling interval; True when stopping."""
        state = self._health[0]
        if state == "unavailable":
            return self.wait(self._unavailable_retry_s)
        watcher = self._watcher
        # A read that failed is tried again after the interval: no notification would come for that change.
        if watcher is None or state != "ok":
            return self.wait(self._interval_s)
        try:
            watcher.wait(NOTIFIED_REREAD_S)
        except SelectionWatchLost as exc:
            log.info("%s notifications stopped: %s", self._selection, exc)
            self._unsubscribe()
            self._watch_tried = None  # the next read says whether the display is gone; subscribe again at once
        return self.stopping

    def _subscribe(self) -> None:
        """Subscribe to change notifications when not yet (at most once per ``unavailable_retry_s`` after a failure)."""
        if self._watcher is not None:
            return
        now = self._clock()
        if self._watch_tried is not None and now - self._watch_tried < self._unavailable_retry_s:
            return
        self._watch_tried = now
        try:
            self._watcher = self._watch(self._selection)
        except SelectionWatchUnavailable as exc:
            mechanism = f"polling every {self._interval_s * 1000:g} ms ({exc})"
            if mechanism != self._mechanism:
                log.info("%s: no change notifications; %s", self._selection, mechanism)
            self._mechanism = mechanism
            return
        self._mechanism = "xfixes notifications"
        if self.stopping:  # on_stop ran before the watcher existed and could not interrupt it
            self._unsubscribe()

    def _unsubscribe(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.close()

    def on_stop(self) -> None:
        watcher = self._watcher
        if watcher is not None:
            watcher.interrupt()
        read = self._current
        if read is not None:
            read.wake.set()
        if read is not None or self._hung is not None:
            self._cancel()  # nobody will collect its answer; leave no xclip behind

    def _read(self) -> str | None:
        """One bounded read; None when it failed (already accounted for) or the source is stopping."""
        if self._hung is not None:
            if not self._hung.finished:
                self._cancel()
                self._fail("a cancelled clipboard read is still hanging")
                return None
            self._hung = None  # cut short by cancel, or late: either way not a reading to trust
        read = self._current = self._last = _Read(self._paste)
        # stop() sets the stop flag before on_stop() wakes the read, so checking here closes the gap.
        if not self.stopping:
            read.wake.wait(self._timeout_s)
        self._current = None
        if self.stopping:
            return None
        if not read.finished:
            self._hung = read
            self._cancel()
            self._fail(f"a clipboard read took longer than {self._timeout_s:g}s and was cancelled")
            self._timeout_s = min(self._timeout_s * 2, self._paste_timeout_s * TIMEOUT_BACKOFF_MAX)
            return None
        # pyperclip's subclasses (a Windows call failing, a timeout) are passing trouble; the base class
        # alone is what it raises when this machine has no clipboard mechanism.
        if type(read.error) is pyperclip.PyperclipException:
            self._unavailable(str(read.error))
            return None
        if read.error is not None:
            # The type only: an exception's text could quote what was on the clipboard.
            self._fail(f"a clipboard read failed with {type(read.error).__name__}")
            return None
        self._timeout_s = self._paste_timeout_s
        return read.text

    def _observe(self, text: str) -> None:
        sha, size, head = fingerprint(text, self._max_bytes)
        self._reads += 1
        if self._health[0] == "unavailable":
            log.info("%s monitoring is on again", self._selection)
        clearing = "; matched text is cleared" if self._clearer is not None and self._clearer.mode == "clear" else ""
        self._health = ("ok", f"watching the {self._selection} selection: {self._mechanism}{clearing}")
        baseline = not self._baseline_taken
        self._baseline_taken = True
        if size == 0 or sha == self._last_sha:
            return
        self._last_sha = sha
        if baseline or (self._clearer is not None and sha == self._clearer.notice_sha256):
            return
        if self._handed_on_by_another(sha) and not (self._clearer is not None and self._clearer.recently_cleared(sha)):
            return
        earlier = self._recent.add(head) if self._recent is not None else b""
        work = ClipboardWork(
            data=head, sha256=sha, original_size=size, trigger=_TRIGGERS[self._selection], earlier=earlier,
            process=self._ask_owner(),
        )
        if not self._emit(work):
            self._not_taken += 1

    def _ask_owner(self) -> dict[str, Any] | None:
        """The selection owner's process, or None when unknown or not answered within ``OWNER_TIMEOUT_S``.

        Asked right after the read: a copy made in between (milliseconds) would be credited instead.
        """
        answer = call_within(lambda: self._owner(self._selection), OWNER_TIMEOUT_S, OWNER_THREAD_NAME)
        if isinstance(answer, BaseException):  # attribution is a nicety: the event goes out without it
            log.debug("the %s owner lookup failed: %s", self._selection, type(answer).__name__)
            return None
        return answer

    def _handed_on_by_another(self, sha: str) -> bool:
        """Whether another selection handed on this very text lately; records this one's either way.

        Each source writes only its own entry and looks up the others' (no iteration over a dict
        another thread changes), so no lock is needed.
        """
        if self._handed_on is None:
            return False
        now = self._clock()
        mine = self._handed_on.setdefault(self._selection, {})  # present already when shared by clipboard_sources
        for old in [s for s, at in mine.items() if now - at > HANDED_ON_S]:
            del mine[old]
        mine[sha] = now
        for selection in (CLIPBOARD, PRIMARY):
            at = self._handed_on.get(selection, {}).get(sha) if selection != self._selection else None
            if at is not None and now - at <= HANDED_ON_S:
                return True
        return False

    def _unavailable(self, why: str) -> None:
        if self._health[0] != "unavailable":
            log.warning(
                "%s monitoring is off: %s; retrying quietly every %gs", self._selection, why, self._unavailable_retry_s
            )
        self._health = ("unavailable", f"no clipboard: {why}")
        # What is on the clipboard when it comes back was not copied under our eyes.
        self._baseline_taken = False

    def _fail(self, why: str) -> None:
        self._failures += 1
        self._unlogged_failures += 1
        self._health = ("degraded", f"{why} ({self._failures} failed reads so far)")
        now = self._clock()
        if self._last_failure_log is None or now - self._last_failure_log >= FAILURE_LOG_EVERY_S:
            log.warning("%d clipboard read(s) failed since the last report; latest: %s", self._unlogged_failures, why)
            self._last_failure_log = now
            self._unlogged_failures = 0


def clipboard_sources(emit: Emit, settings: ClipboardSection, clearer: ClipboardClearer | None = None) -> dict[str, ClipboardSource]:
    """The sources ``[clipboard]`` asks for, by name: ``clipboard``, and ``primary`` where there is such a selection.

    ``clearer`` is the enforcement the pipeline calls for their matches (``[clipboard] on_match``).
    """
    def source(selection: str) -> ClipboardSource:
        recent = RecentCopies(
            max_count=settings.recent_count, max_bytes=settings.recent_max_bytes, max_age_s=settings.recent_seconds
        )
        return ClipboardSource(
            emit,
            interval_s=settings.interval_ms / 1000,
            max_bytes=max(settings.max_bytes, settings.max_scan_bytes),
            selection=selection,
            recent=recent,
            handed_on=handed_on,
            clearer=clearer,
        )

    handed_on: dict[str, dict[str, float]] = {CLIPBOARD: {}, PRIMARY: {}}
    sources = {CLIPBOARD: source(CLIPBOARD)}
    # Windows and macOS have one clipboard; PRIMARY is X11's (and Wayland's, through wl-paste).
    if settings.primary and sys.platform not in ("win32", "darwin"):
        sources[PRIMARY] = source(PRIMARY)
    return sources
