"""``[clipboard] on_match = "clear"``: matched text is replaced in its selection by a short notice.

The pipeline calls the clearer on a scanner thread for clipboard work whose event has a match; it
returns the event's ``enforcement``. Only the text that matched is ever replaced: the selection is
read again first and left alone when it holds anything else (the user copied something since), so
a later copy is never touched. The notice it writes is known to the sources, which read it like any
change and let it pass without an event.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any

import pyperclip

from agent.scanning.results import ScanResult
from agent.sources.clipboard import CLIPBOARD, PRIMARY, call_within, read_selection, takes_primary
from agent.sources.work import ClipboardWork, Work

NOTICE = "[Removed by data-loss prevention: this text matched a protected rule]"
NOTICE_SHA256 = hashlib.sha256(NOTICE.encode()).hexdigest()
SELECTIONS = {"copy": CLIPBOARD, "select": PRIMARY}
"""The selection each trigger reads; ``recent_copies`` (several texts scanned together) has none."""
CLEARED_MEMORY_S = 30.0
"""How long a cleared text stays known to the sources: the same text copied again into the other
selection soon after (highlighted, cleared, then Ctrl-C) is scanned and cleared too, not skipped."""
ACTION_TIMEOUT_S = 5.0
CLEAR_THREAD_NAME = "clipboard-clear"

Read = Callable[[str], str]
Write = Callable[[str, str], None]


def write_selection(text: str, selection: str) -> None:
    """Put ``text`` on ``selection`` through pyperclip (xclip, xsel or wl-copy on Linux; the OS call elsewhere).

    Raises:
        pyperclip.PyperclipException: no clipboard mechanism, or one without a PRIMARY selection.
    """
    copy, _ = pyperclip.determine_clipboard()
    if selection == CLIPBOARD:
        copy(text)
    elif takes_primary(copy):
        copy(text, primary=True)
    else:
        raise pyperclip.PyperclipException("this clipboard mechanism has no PRIMARY selection")


def _read(selection: str) -> str:
    return read_selection(primary=selection == PRIMARY)


class ClipboardClearer:
    """The clipboard part of the pipeline's enforcement hook; ``mode`` is ``[clipboard] on_match``."""

    def __init__(
        self,
        mode: str,
        *,
        read: Read = _read,
        write: Write = write_selection,
        timeout_s: float = ACTION_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.mode = mode
        self.notice_sha256 = NOTICE_SHA256
        self._read = read
        self._write = write
        self._timeout_s = timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cleared: dict[str, float] = {}

    def recently_cleared(self, sha256: str) -> bool:
        """Whether text of this sha256 was cleared from a selection lately (any thread may ask)."""
        with self._lock:
            at = self._cleared.get(sha256)
        return at is not None and self._clock() - at <= CLEARED_MEMORY_S

    def __call__(self, work: Work, result: ScanResult) -> dict[str, Any] | None:
        """The ``enforcement`` of a clipboard match (None for other work); never raises."""
        if not isinstance(work, ClipboardWork):
            return None
        if self.mode != "clear":
            return _outcome("audit", False, "audit mode: the text was left on the clipboard")
        selection = SELECTIONS.get(work.trigger)
        if selection is None:
            return _outcome("enforce", False, "matched only with earlier copies taken together: no one text to clear")
        current = self._bounded(lambda: self._read(selection))
        if isinstance(current, BaseException):
            return _outcome("enforce", False, f"the {selection} selection could not be read ({type(current).__name__})")
        if hashlib.sha256(current.encode("utf-8", "surrogatepass")).hexdigest() != work.sha256:
            return _outcome("enforce", False, f"the {selection} selection changed before it could be cleared; left as it is")
        with self._lock:
            now = self._clock()
            self._cleared = {sha: at for sha, at in self._cleared.items() if now - at <= CLEARED_MEMORY_S}
            self._cleared[work.sha256] = now
        written = self._bounded(lambda: self._write(NOTICE, selection))
        if isinstance(written, BaseException):
            return _outcome("enforce", False, f"the {selection} selection could not be written ({type(written).__name__})")
        # Read back, so "done" is what a paste now gets, not what a helper process said it did.
        now_holds = self._bounded(lambda: self._read(selection))
        if now_holds != NOTICE:
            return _outcome("enforce", False, f"the notice did not stay on the {selection} selection")
        return _outcome("enforce", True, f"the {selection} selection was replaced by a notice")

    def _bounded(self, call: Callable[[], Any]) -> Any:
        # The event says what failed by the exception's type only: its text could quote the clipboard.
        return call_within(call, self._timeout_s, CLEAR_THREAD_NAME)


def _outcome(mode: str, done: bool, detail: str) -> dict[str, Any]:
    return {"action": "clear", "mode": mode, "done": done, "detail": detail}
