"""Text from agents and from disk made safe to show: invisible controls become visible ``<U+XXXX>`` marks.

A file name, host name or label is attacker-chosen. Bidi controls (U+202E and friends) make
``invoice\\u202egpj.exe`` read as ``invoiceexe.jpg`` in a browser or a spreadsheet, and C0/C1
controls (ESC, CSI U+009B, BEL, CR, backspace) drive an admin's terminal. Shown as ``<U+202E>``
they are neither: the reader sees that the name holds a control and which one. ``<`` and ``>``
cannot occur in Windows file names, so a mark there is never the name's own text.

The agent's CLI, the collector's CLI, its review UI and its exports all call ``visible``;
it lives in agent/ because agent/ may import nothing from the collector.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TextIO

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]

# Unicode's explicit directional formatting characters (UAX #9): marks, embeddings, overrides, isolates.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

# C0 and C1 controls and DEL; the bidi controls; U+2028/U+2029, which break lines in some readers;
# invisible format characters (soft hyphen, zero-width space and joiners, word joiner and invisible
# operators, BOM), which hide inside a name that looks like another; lone surrogates (undecodable
# bytes of a file name), which no UTF-8 output can carry.
_HIDDEN = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\u2028\u2029\ud800-\udfff]"
)

# For text shown in a terminal, one line per record: nothing is kept.
TERMINAL = ""
# For text laid out by a browser or kept inside a quoted CSV cell: tab and line breaks are layout, not tricks.
LAYOUT = "\t\n\r"


def unicode_mark(char: str) -> str:
    """The visible stand-in for one hidden character: ``<U+202E>``."""
    return f"<U+{ord(char):04X}>"


def visible(value: str, *, keep: str = TERMINAL, mark: Callable[[str], str] = unicode_mark) -> str:
    """``value`` with every control, bidi control and lone surrogate shown as ``<U+XXXX>``.

    Args:
        value: text that came from an agent, a file or a file's name.
        keep: hidden characters to leave as they are (``LAYOUT`` keeps tab, LF and CR).
        mark: the stand-in for one character; HTML, already escaped, needs ``&lt;U+202E&gt;``.
    """
    return _HIDDEN.sub(lambda m: m.group() if m.group() in keep else mark(m.group()), value)


def echo(*lines: str, file: TextIO | None = None) -> None:
    """Print each of ``lines`` as one line (to standard output unless ``file``), hidden characters marked.

    A value inside a line (a path, a host name) can then neither drive the terminal
    (ESC, CSI) nor forge a line of its own (CR, LF); a caller's own multi-line text
    is passed split, one argument per line.
    """
    for line in lines:
        print(visible(line), file=file)


class TerminalFormatter(logging.Formatter):
    """Log lines as ``echo`` prints text: a logged path or host name cannot drive the terminal or add a line.

    Every handler the agent installs (stderr for ``dlp-agent``, the Windows service's file) uses it.
    A traceback keeps its own line breaks, but one inside an exception's message (which may quote
    a file name) is marked like any other control, so no value can start a line of its own.
    """

    def format(self, record: logging.LogRecord) -> str:
        # Not logging.Formatter.format: it reuses ``record.exc_text`` as another handler's
        # formatter left it, unescaped.
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        text = self.formatMessage(record)
        if record.exc_info and record.exc_info[0] is not None:
            text += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            text += "\n" + "\n".join(visible(line) for line in record.exc_text.split("\n"))
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return text

    def formatMessage(self, record: logging.LogRecord) -> str:
        return visible(super().formatMessage(record))

    def formatException(self, ei: ExcInfo) -> str:
        _, exc, tb = ei
        if exc is None:
            return ""
        return "".join(_traceback_lines(traceback.TracebackException(type(exc), exc, tb))).rstrip("\n")

    def formatStack(self, stack_info: str) -> str:
        return "\n".join(visible(line) for line in super().formatStack(stack_info).split("\n"))


# What TracebackException.format() yields between the parts of a chain: the layout, kept as it is.
_TRACEBACK_LAYOUT = frozenset({
    "Traceback (most recent call last):\n",
    "\nThe above exception was the direct cause of the following exception:\n\n",
    "\nDuring handling of the above exception, another exception occurred:\n\n",
})


def _traceback_lines(exception: traceback.TracebackException) -> Iterator[str]:
    """``exception.format()`` with hidden characters marked: a frame's own line breaks are kept, while in
    the exception's message (and notes) every line break but the last is marked."""
    for part in exception.format():
        if part in _TRACEBACK_LAYOUT:
            yield part
        elif part.startswith("  File ") or part.startswith("  [Previous line repeated"):
            yield "".join(visible(line) + "\n" for line in part.rstrip("\n").split("\n"))
        else:
            yield visible(part.removesuffix("\n")) + "\n"
