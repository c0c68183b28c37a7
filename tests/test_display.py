"""agent/display.py: which characters become ``<U+XXXX>`` marks, for terminals, pages and log lines."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from agent.display import BIDI_CONTROLS, LAYOUT, TerminalFormatter, echo, visible

BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def test_every_bidi_control_and_terminal_control_is_marked() -> None:
    assert set(BIDI) == BIDI_CONTROLS
    assert visible("invoice\u202egpj.exe") == "invoice<U+202E>gpj.exe"
    assert visible(BIDI) == "".join(f"<U+{ord(c):04X}>" for c in BIDI)
    hidden = [chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))] + ["\u2028", "\u2029", "\udc80"]
    assert visible("".join(hidden)) == "".join(f"<U+{ord(c):04X}>" for c in hidden)


def test_invisible_format_characters_are_marked_so_a_name_cannot_hide_one() -> None:
    invisible = "\u00ad\u200b\u200c\u200d\u2060\u2061\u2062\u2063\u2064\u206a\u206f\ufeff"
    assert visible(f"invoice{invisible}.exe") == "invoice" + "".join(f"<U+{ord(c):04X}>" for c in invisible) + ".exe"


@pytest.mark.parametrize("text", ["plain", "café/naïve ü", "שלום عربي", "日本語", "\U0001f600", "<U+202E> typed by hand", ""])
def test_printable_text_of_any_script_is_left_alone(text: str) -> None:
    assert visible(text) == text


def test_layout_keeps_tab_and_line_breaks_only() -> None:
    assert visible("a\tb\r\nc\x1b\u202e", keep=LAYOUT) == "a\tb\r\nc<U+001B><U+202E>"
    assert visible("a\u202e", mark=lambda c: f"&lt;{ord(c):X}&gt;") == "a&lt;202E&gt;"


def test_echo_prints_each_argument_as_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    echo("host ws\n-1\r", "second\x9b2J")
    echo("err\x07", file=sys.stderr)
    captured = capsys.readouterr()
    assert captured.out == "host ws<U+000A>-1<U+000D>\nsecond<U+009B>2J\n" and captured.err == "err<U+0007>\n"


def test_log_lines_cannot_drive_the_terminal_or_add_a_line() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TerminalFormatter("%(levelname)s: %(message)s"))
    logger = logging.getLogger("test_display")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("scanned %s", "/tmp/x\x1b[2J\nERROR: forged")
        try:
            raise ValueError("bad \x1b]0;title\x07")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "WARNING: scanned /tmp/x<U+001B>[2J<U+000A>ERROR: forged"
    assert lines[1] == "ERROR: failed" and lines[-1] == "ValueError: bad <U+001B>]0;title<U+0007>"
