"""Clipboard source against a real X server (Xvfb) read through pyperclip and xclip."""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from agent.sources.clipboard import (
    MIB,
    READ_THREAD_NAME,
    ClipboardSource,
    fingerprint,
    no_notifications,
    system_paste,
)
from agent.sources.work import ClipboardWork, Work
from agent.sources.xselection import SelectionWatcher, SelectionWatchUnavailable, watch_selection
from tests.waiting import wait_for
from tests.xvfb import require_x_tools, unused_display

LOGGER = "agent.sources.clipboard"
StartSource = Callable[..., tuple[ClipboardSource, list[ClipboardWork]]]


def copy(text: str, display: str | None = None) -> None:
    """Put ``text`` on the CLIPBOARD selection the way a user's copy does (xclip keeps owning it)."""
    env = None if display is None else dict(os.environ, DISPLAY=display)
    # A file, not a pipe: xclip forks a child that keeps owning the selection (and its stderr) until
    # the next copy, and it says "connection broken" when Xvfb goes at teardown.
    with tempfile.TemporaryFile() as stderr:
        done = subprocess.run(["xclip", "-selection", "clipboard"], input=text.encode("utf-8"), env=env, stderr=stderr)
        if done.returncode != 0:
            stderr.seek(0)
            raise AssertionError(f"xclip failed with {done.returncode}: {stderr.read().decode(errors='replace')}")


def settle(source: ClipboardSource) -> None:
    """Wait until a whole read has started and finished after this call."""
    seen = source.reads
    wait_for(lambda: source.reads >= seen + 2, message="two more clipboard reads")


def warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def start_source() -> Iterator[StartSource]:
    started: list[ClipboardSource] = []

    def start(**kwargs) -> tuple[ClipboardSource, list[ClipboardWork]]:
        emitted: list[ClipboardWork] = []
        kwargs.setdefault("interval_s", 0.05)
        # These tests pace themselves by polled reads (settle); the notified path has its own tests.
        kwargs.setdefault("watch", no_notifications)

        def take(work: Work) -> bool:
            assert isinstance(work, ClipboardWork)
            emitted.append(work)
            return True

        source = ClipboardSource(take, **kwargs)
        source.start()
        started.append(source)
        return source, emitted

    yield start
    for source in started:
        source.stop()
        assert not source.is_alive(), "clipboard source did not stop"
    # stop() abandons a read in flight; it must still end, not leak into the next test.
    wait_for(lambda: not reads_in_flight(), message="clipboard reads to finish")


def reads_in_flight() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == READ_THREAD_NAME]


def test_a_copy_emits_one_work_item_with_hash_and_size(xvfb_display: str, start_source: StartSource) -> None:
    source, emitted = start_source()
    wait_for(lambda: source.reads >= 1, message="baseline read")
    text = "def secret():\n    return 'ZEBRAFISH' # façade ✓\n"
    copy(text)
    wait_for(lambda: emitted, message="a ClipboardWork")
    settle(source)
    (work,) = emitted
    full = text.encode("utf-8")
    assert work.data == full
    assert work.sha256 == sha(full)
    assert work.original_size == len(full)
    assert not work.truncated
    assert source.health()["state"] == "ok"


def test_the_same_text_again_is_not_an_event_but_a_change_is(xvfb_display: str, start_source: StartSource) -> None:
    source, emitted = start_source()
    wait_for(lambda: source.reads >= 1, message="baseline read")
    copy("first text")
    wait_for(lambda: len(emitted) == 1, message="first event")
    copy("first text")
    settle(source)
    assert len(emitted) == 1
    copy("second text")
    wait_for(lambda: len(emitted) == 2, message="second event")
    settle(source)
    assert [w.data for w in emitted] == [b"first text", b"second text"]


def test_an_empty_clipboard_is_no_event_and_does_not_reset_what_was_seen(
    xvfb_display: str, start_source: StartSource
) -> None:
    source, emitted = start_source()
    wait_for(lambda: source.reads >= 1, message="baseline read")
    copy("same text")
    wait_for(lambda: len(emitted) == 1, message="first event")
    copy("")
    settle(source)
    copy("same text")
    settle(source)
    assert len(emitted) == 1
    copy("other text")
    wait_for(lambda: len(emitted) == 2, message="the event for a real change")
    assert emitted[1].data == b"other text"


def test_what_was_on_the_clipboard_at_start_up_is_a_baseline_only(
    xvfb_display: str, start_source: StartSource
) -> None:
    copy("copied before the agent started")
    source, emitted = start_source()
    settle(source)
    assert emitted == []
    copy("copied while watched")
    wait_for(lambda: emitted, message="an event for the new copy")
    settle(source)
    assert [w.data for w in emitted] == [b"copied while watched"]


@pytest.mark.parametrize(
    "megabytes", [20, pytest.param(100, marks=pytest.mark.slow)], ids=lambda mb: f"{mb}MB"
)
def test_a_large_clipboard_is_capped_but_hashed_and_sized_in_full(
    xvfb_display: str, start_source: StartSource, megabytes: int
) -> None:
    source, emitted = start_source(max_bytes=MIB)
    wait_for(lambda: source.reads >= 1, message="baseline read")
    line = "SELECT * FROM customers WHERE région = 'nord'; -- ünïcode line\n"
    text = line * (megabytes * MIB // len(line.encode("utf-8")))
    copy(text)
    wait_for(lambda: emitted, timeout=120, message="the large clipboard's event")
    (work,) = emitted
    full = text.encode("utf-8")
    assert work.original_size == len(full) > megabytes * MIB - len(line.encode("utf-8"))
    assert work.sha256 == sha(full)
    assert work.data == full[:MIB]
    assert work.truncated


def test_hashing_a_huge_text_never_holds_a_full_encoded_copy() -> None:
    text = "é" * (50 * MIB)  # 100 MiB as UTF-8
    tracemalloc.start()
    try:
        digest, size, head = fingerprint(text, MIB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == 100 * MIB
    assert digest == sha(text.encode("utf-8"))
    assert head == text.encode("utf-8")[:MIB]
    assert peak < 8 * MIB, f"peak {peak / MIB:.1f} MiB"


@pytest.mark.parametrize("display", ["unset", "nonexistent"])
def test_without_a_display_the_source_warns_once_and_keeps_running(
    display: str, start_source: StartSource, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if display == "unset":
        monkeypatch.delenv("DISPLAY", raising=False)
    else:
        require_x_tools()  # with xclip there, pyperclip reads a dead display as "" rather than failing
        monkeypatch.setenv("DISPLAY", unused_display())
    caplog.set_level(logging.INFO, logger=LOGGER)
    calls: list[int] = []

    def counting_paste() -> str:
        calls.append(1)
        return system_paste()

    source, emitted = start_source(paste=counting_paste, unavailable_retry_s=0.05)
    wait_for(lambda: len(calls) >= 5, message="several retries")
    assert source.is_alive()
    health = source.health()
    assert health["state"] == "unavailable"
    assert "DISPLAY" in health["message"] or "display" in health["message"]
    (warning,) = warnings(caplog)
    assert "clipboard monitoring is off" in warning.getMessage()
    assert emitted == []
    assert source.failures == 0


def test_a_display_that_comes_later_or_comes_back_starts_with_a_fresh_baseline(
    xvfb_display: str, start_source: StartSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DISPLAY")
    source, emitted = start_source(unavailable_retry_s=0.05)
    wait_for(lambda: source.health()["state"] == "unavailable", message="no clipboard at start")
    copy("copied before the agent could see", display=xvfb_display)
    monkeypatch.setenv("DISPLAY", xvfb_display)
    wait_for(lambda: source.health()["state"] == "ok", message="the display to be picked up")
    settle(source)
    copy("copied while watched")
    wait_for(lambda: emitted, message="an event once the display is there")

    monkeypatch.delenv("DISPLAY")
    wait_for(lambda: source.health()["state"] == "unavailable", message="the display to be gone")
    copy("copied while the agent was blind", display=xvfb_display)
    monkeypatch.setenv("DISPLAY", xvfb_display)
    wait_for(lambda: source.health()["state"] == "ok", message="the display to come back")
    settle(source)
    copy("copied while watched again")
    wait_for(lambda: len(emitted) == 2, message="an event after the display came back")
    assert [w.data for w in emitted] == [b"copied while watched", b"copied while watched again"]


def test_failed_reads_degrade_health_and_are_logged_at_most_once_a_minute(
    start_source: StartSource, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    now = [1000.0]
    broken = threading.Event()
    broken.set()

    def paste() -> str:
        if broken.is_set():
            raise OSError("xclip went away")
        return "fine"

    source, emitted = start_source(paste=paste, clock=lambda: now[0])
    wait_for(lambda: source.failures >= 5, message="several failed reads")
    assert source.health()["state"] == "degraded"
    assert len(warnings(caplog)) == 1
    now[0] += 60
    seen = source.failures
    wait_for(lambda: source.failures >= seen + 2, message="failures after a minute")
    assert len(warnings(caplog)) == 2
    assert "OSError" in warnings(caplog)[1].getMessage()
    assert "xclip went away" not in caplog.text, "exception text could quote the clipboard"
    broken.clear()
    wait_for(lambda: source.health()["state"] == "ok", message="recovery")
    assert source.is_alive()
    assert emitted == [], "the first good read is a baseline"


def test_a_read_that_cannot_be_cancelled_is_abandoned_and_not_piled_up(start_source: StartSource) -> None:
    release = threading.Event()
    calls: list[int] = []
    cancels: list[int] = []

    def paste() -> str:
        calls.append(1)
        release.wait()
        return "late"

    source, emitted = start_source(paste=paste, paste_timeout_s=0.05, cancel=lambda: cancels.append(1))
    wait_for(lambda: source.failures >= 5, message="reads counted as hanging")
    assert source.health()["state"] == "degraded"
    assert len(calls) == 1, "no second read while the first one hangs"
    assert len(cancels) >= 5, "each poll tries to end the hung read again"
    release.set()
    wait_for(lambda: source.health()["state"] == "ok", message="reads to work again")
    settle(source)
    assert len(calls) >= 2
    assert emitted == [], "the late result is dropped and the next read is the baseline"


def test_a_hung_paste_helper_is_killed_and_reading_resumes(tmp_path: Path, start_source: StartSource) -> None:
    # A real child process that hangs, named like the helper pyperclip runs.
    fake_xclip = tmp_path / "xclip"
    fake_xclip.symlink_to(shutil.which("sleep"))
    texts = iter(["baseline", "hangs"])

    def paste() -> str:
        text = next(texts, "copied after the hang")
        if text == "hangs":
            subprocess.run([str(fake_xclip), "3600"])
        return text

    source, emitted = start_source(paste=paste, paste_timeout_s=0.2)
    wait_for(lambda: emitted, message="an event once the hung helper is killed")
    assert [w.data for w in emitted] == [b"copied after the hang"]
    assert source.failures >= 1
    assert not [c for c in psutil.Process().children() if c.name() == "xclip"]


def test_each_cancelled_read_gives_the_next_one_more_time_until_a_read_succeeds(
    start_source: StartSource, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    hang = threading.Event()
    hang.set()
    gates: list[threading.Event] = []

    def paste() -> str:
        if hang.is_set():
            gate = threading.Event()
            gates.append(gate)
            gate.wait()
        return "text"

    def cancel() -> None:
        for gate in gates:
            gate.set()

    def limits() -> list[float]:
        found = (re.search(r"took longer than ([0-9.]+)s", r.getMessage()) for r in warnings(caplog))
        return [float(m.group(1)) for m in found if m]

    minutes = itertools.count(step=60.0)  # every failure a minute after the last, so each is logged
    source, _ = start_source(paste=paste, cancel=cancel, paste_timeout_s=0.05, clock=lambda: next(minutes))
    wait_for(lambda: len(limits()) >= 6, message="six cancelled reads")
    assert limits()[:6] == [0.05, 0.1, 0.2, 0.4, 0.4, 0.4]
    hang.clear()
    wait_for(lambda: source.health()["state"] == "ok", message="a read that succeeds")
    seen = len(limits())
    hang.set()
    wait_for(lambda: len(limits()) > seen, message="the next cancelled read")
    assert limits()[seen] == 0.05


def test_stop_returns_promptly_while_a_read_hangs(start_source: StartSource) -> None:
    release = threading.Event()
    started = threading.Event()

    def paste() -> str:
        started.set()
        release.wait()
        return ""

    source, _ = start_source(paste=paste, paste_timeout_s=3600)
    try:
        wait_for(started.is_set, message="the read to start")
        source.stop()
        assert not source.is_alive()
    finally:
        release.set()


def test_a_read_whose_helper_starts_after_the_stops_cancel_is_still_ended(start_source: StartSource) -> None:
    started = threading.Event()
    gates: list[threading.Event] = []

    def paste() -> str:
        started.set()
        time.sleep(0.1)  # the helper (xclip) comes to exist only after stop()'s first cancel
        gate = threading.Event()
        gates.append(gate)
        gate.wait(30)
        return ""

    def cancel() -> None:
        for gate in gates:
            gate.set()

    source, _ = start_source(paste=paste, cancel=cancel, paste_timeout_s=3600)
    wait_for(started.is_set, message="the read to start")
    source.stop()
    assert not source.is_alive()
    assert gates and all(gate.is_set() for gate in gates), "the late helper was cancelled"


def copy_served(text: str, selection: str = "clipboard", timeout: float = 15.0) -> None:
    """Own ``selection`` with ``text`` until one program has read it, then give it up (xclip -loops 1)."""
    with tempfile.TemporaryFile() as data:
        data.write(text.encode("utf-8"))
        data.seek(0)
        # -quiet keeps xclip in the foreground, so its exit says the text was handed to a reader.
        done = subprocess.run(
            ["xclip", "-quiet", "-loops", "1", "-selection", selection],
            stdin=data, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout,
        )
        assert done.returncode == 0


def test_with_xfixes_a_copy_is_read_once_and_nothing_is_polled(xvfb_display: str, start_source: StartSource) -> None:
    source, emitted = start_source(watch=watch_selection, interval_s=3600)
    wait_for(lambda: source.reads >= 1, message="baseline read")
    assert source.health() == {"state": "ok", "message": "watching the clipboard selection: xfixes notifications"}
    assert source.notified
    copy("noticed without polling")
    wait_for(lambda: emitted, message="an event for the copy")
    reads = source.reads
    time.sleep(1.0)
    assert source.reads == reads, "no reads without a change"
    assert [w.data for w in emitted] == [b"noticed without polling"]
    started = time.monotonic()
    source.stop()
    assert not source.is_alive()
    # Polling once an hour, a stop that did not wake the wait would take that hour; this bound
    # separates the two, not a speed.
    assert time.monotonic() - started < 60.0, "stop() wakes the wait for notifications"


@pytest.mark.parametrize("selection", ["clipboard", "primary"])
def test_200_quick_copies_are_each_read_once_by_notification(
    xvfb_display: str, start_source: StartSource, selection: str
) -> None:
    # A copy replaced before any program read it cannot be seen by anyone (X keeps one owner and no
    # history), so each copy gives up the selection as soon as one reader has had it, and the next
    # follows at once. Polling once an hour, the source sees them only through notifications.
    source, emitted = start_source(watch=watch_selection, interval_s=3600, selection=selection)
    wait_for(lambda: source.reads >= 1, message="baseline read")
    texts = [f"copy {i}: {'def leak(): return SECRET' if i % 7 == 0 else 'harmless'} {i * 7919}\n" for i in range(200)]
    for text in texts:
        copy_served(text, selection)
    wait_for(lambda: len(emitted) >= len(texts), message="one work item per copy")
    assert [w.data.decode() for w in emitted] == texts


def test_a_change_notified_while_a_read_runs_is_read_afterwards(xvfb_display: str, start_source: StartSource) -> None:
    reading_first = threading.Event()
    release = threading.Event()

    def slow_paste() -> str:
        text = system_paste()
        if text == "first" and not release.is_set():
            reading_first.set()
            release.wait(10)
        return text

    source, emitted = start_source(watch=watch_selection, interval_s=3600, paste=slow_paste)
    wait_for(lambda: source.reads >= 1, message="baseline read")
    copy("first")
    wait_for(reading_first.is_set, message="the read of the first copy")
    copy("second")  # its notification arrives while "first" is still being read
    wait_for(lambda: subprocess.run(["xclip", "-selection", "clipboard", "-o"], capture_output=True).stdout == b"second")
    release.set()
    wait_for(lambda: len(emitted) >= 2, message="the second copy read after the first read ended")
    assert [w.data for w in emitted] == [b"first", b"second"]


def test_without_xfixes_the_source_polls_and_says_so(xvfb_display: str, start_source: StartSource) -> None:
    def no_xfixes(selection: str) -> SelectionWatcher:
        raise SelectionWatchUnavailable("the X display has no XFixes extension")

    source, emitted = start_source(watch=no_xfixes, interval_s=0.05)
    wait_for(lambda: source.reads >= 1, message="baseline read")
    assert not source.notified
    assert source.health() == {
        "state": "ok",
        "message": "watching the clipboard selection: polling every 50 ms (the X display has no XFixes extension)",
    }
    copy("seen by polling")
    wait_for(lambda: emitted, message="an event from polling")
    settle(source)
    assert [w.data for w in emitted] == [b"seen by polling"]


def test_notifications_need_a_display_with_xfixes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    with pytest.raises(SelectionWatchUnavailable, match="DISPLAY is not set"):
        watch_selection("clipboard")
    with pytest.raises(SelectionWatchUnavailable, match="cannot connect"):
        watch_selection("primary", unused_display())


def test_without_a_display_the_default_source_polls_and_says_so(
    start_source: StartSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    source, emitted = start_source(watch=watch_selection, paste=lambda: "text", interval_s=0.05)
    wait_for(lambda: source.reads >= 3, message="polled reads")
    assert source.health() == {
        "state": "ok",
        "message": "watching the clipboard selection: polling every 50 ms (no X display: DISPLAY is not set)",
    }
    assert emitted == []


def test_an_x_server_that_goes_away_is_noticed_while_waiting(xvfb_display: str, start_source: StartSource) -> None:
    source, _ = start_source(watch=watch_selection, interval_s=3600, unavailable_retry_s=0.05)
    wait_for(lambda: source.reads >= 1, message="baseline read")
    assert source.notified
    (server,) = [p for p in psutil.Process().children() if p.name() == "Xvfb" and xvfb_display in p.cmdline()]
    server.terminate()
    server.wait(10)
    wait_for(lambda: source.health()["state"] == "unavailable", message="the lost display to be reported")
    assert not source.notified
