"""X selection-owner notifications (XFixes): block until the CLIPBOARD or PRIMARY selection changes hands."""

from __future__ import annotations

import os
import select
import threading
from typing import Any

_ATOMS = {"clipboard": "CLIPBOARD", "primary": "PRIMARY"}


class SelectionWatchUnavailable(Exception):
    """No notifications here: python-xlib missing, no X display, or a server without XFixes."""


class SelectionWatchLost(Exception):
    """The connection to the X server broke while waiting (the server went away)."""


class SelectionWatcher:
    """One X connection told by XFixes of every owner change of one selection.

    Only the thread that waits may call ``wait`` and ``close``; ``interrupt`` may come from any thread.
    """

    def __init__(self, display: Any, selection: str):
        from Xlib import error
        from Xlib.ext import xfixes

        self._lost = error.ConnectionClosedError
        self._notification = xfixes.SelectionNotify
        self._display = display
        self._selection = selection
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)  # a full pipe already says "wake up"
        # Held by interrupt and close: a write must never reach a descriptor number reused after close.
        self._pipe_lock = threading.Lock()
        self._closed = False

    def wait(self, timeout_s: float) -> bool:
        """Block until the selection changed owner (True), ``timeout_s`` passed or ``interrupt`` was called (False).

        Every notification queued so far is consumed: one read afterwards covers them all, and one
        arriving during that read makes the next ``wait`` return at once.

        Raises:
            SelectionWatchLost: the X server closed the connection.
        """
        try:
            if self._drain():
                return True
            readable, _, _ = select.select([self._display.fileno(), self._wake_r], [], [], timeout_s)
            if self._wake_r in readable:
                os.read(self._wake_r, 4096)
            return self._drain()
        except (self._lost, OSError) as exc:
            raise SelectionWatchLost(f"the X connection was lost ({type(exc).__name__})") from exc

    def _drain(self) -> bool:
        """Take every event already received or waiting on the socket (never blocks); whether any was ours."""
        changed = False
        while self._display.pending_events():
            event = self._display.next_event()
            changed = changed or isinstance(event, self._notification)
        return changed

    def interrupt(self) -> None:
        """Make a ``wait`` in progress (or the next one) return False at once."""
        with self._pipe_lock:
            if self._closed:
                return
            try:
                os.write(self._wake_w, b"\0")
            except BlockingIOError:
                pass

    def close(self) -> None:
        """Close the X connection and the wake-up pipe; harmless twice."""
        with self._pipe_lock:
            if self._closed:
                return
            self._closed = True
            os.close(self._wake_r)
            os.close(self._wake_w)
        try:
            self._display.close()
        except Exception:  # noqa: BLE001 - a connection already broken has nothing left to close
            pass

    def __repr__(self) -> str:
        return f"SelectionWatcher({self._selection!r})"


def watch_selection(selection: str, display_name: str | None = None) -> SelectionWatcher:
    """Connect to the X display (``$DISPLAY`` by default) and subscribe to owner changes of ``selection``.

    Args:
        selection: ``"clipboard"`` or ``"primary"``.
        display_name: The X display; ``$DISPLAY`` when None.

    Raises:
        SelectionWatchUnavailable: python-xlib is not installed, no display answers, or it has no XFixes.
    """
    name = display_name if display_name is not None else os.environ.get("DISPLAY")
    if not name:
        raise SelectionWatchUnavailable("no X display: DISPLAY is not set")
    if os.environ.get("WAYLAND_DISPLAY"):
        # The selections reached through DISPLAY under Wayland are XWayland's, not what native programs copy.
        raise SelectionWatchUnavailable("a Wayland session: XFixes would see only X programs' copies")
    try:
        from Xlib import display as xdisplay
        from Xlib.ext import xfixes
    except ImportError as exc:
        raise SelectionWatchUnavailable(f"python-xlib is not installed ({exc})") from exc
    try:
        display = xdisplay.Display(name)
    except Exception as exc:  # noqa: BLE001 - python-xlib raises many types here, all meaning "no connection"
        raise SelectionWatchUnavailable(f"cannot connect to the X display {name} ({type(exc).__name__})") from exc
    try:
        if not display.has_extension("XFIXES"):
            raise SelectionWatchUnavailable(f"the X display {name} has no XFixes extension")
        display.xfixes_query_version()  # XFixes answers no other request before this one
        # Every copy (and, for PRIMARY, every highlight) makes its program the owner; an owner that goes
        # away (window destroyed, client gone) leaves the selection empty. Each is one notification.
        mask = (
            xfixes.XFixesSetSelectionOwnerNotifyMask
            | xfixes.XFixesSelectionWindowDestroyNotifyMask
            | xfixes.XFixesSelectionClientCloseNotifyMask
        )
        atom = display.get_atom(_ATOMS[selection])
        display.xfixes_select_selection_input(display.screen().root, atom, mask)
        # A round trip: the subscription is in force once it returns, so a change after this call is notified.
        display.sync()
    except SelectionWatchUnavailable:
        display.close()
        raise
    except Exception as exc:  # noqa: BLE001 - any X error here means notifications cannot be had
        display.close()
        raise SelectionWatchUnavailable(f"XFixes selection notifications failed ({type(exc).__name__})") from exc
    return SelectionWatcher(display, selection)
