"""Clipboard evasions (issue 14, item 9) against a real `dlp-agent run` on a real X server (Xvfb)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.sources.clipboard import _reads_primary
from agent.sources.recent import RecentCopies
from tests.agent_process import Agent, write_config
from tests.conftest import SECRET_WORD
from tests.waiting import wait_for

SPLIT_PACK = """
rule split_code : test
{
    meta:
        severity = "high"
        category = "source_code"
    strings:
        $head = "def transfer_funds(account, amount):"
        $tail = "ledger.commit(account, -amount)"
    condition:
        all of them
}
"""


def put(text: str, selection: str = "clipboard") -> None:
    """Own ``selection`` with ``text`` as a user's copy (or, for ``primary``, a mere highlight) does."""
    with tempfile.TemporaryFile() as data, tempfile.TemporaryFile() as stderr:
        data.write(text.encode("utf-8"))
        data.seek(0)
        done = subprocess.run(["xclip", "-selection", selection], stdin=data, stderr=stderr, timeout=60)
        assert done.returncode == 0


def put_served(text: str, selection: str) -> None:
    """Own ``selection`` with ``text`` until one program has read it, then give it up (xclip stays in the foreground)."""
    with tempfile.TemporaryFile() as data:
        data.write(text.encode("utf-8"))
        data.seek(0)
        done = subprocess.run(
            ["xclip", "-quiet", "-loops", "1", "-selection", selection],
            stdin=data, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=15,
        )
        assert done.returncode == 0


@pytest.fixture
def agent(xvfb_display: str, tmp_path: Path, rules_dir: Path) -> Iterator[Agent]:
    with run_agent(xvfb_display, tmp_path, rules_dir, interval_ms=100) as started:
        yield started


@contextlib.contextmanager
def run_agent(xvfb_display: str, tmp_path: Path, rules_dir: Path, *, interval_ms: int) -> Iterator[Agent]:
    (rules_dir / "split.yar").write_text(SPLIT_PACK)
    config = write_config(tmp_path, rules_dir)
    # Only keys older agents know: the same test runs against the code before the fix.
    config.write_text(
        config.read_text().replace("[clipboard]\nenabled = false", f"[clipboard]\nenabled = true\ninterval_ms = {interval_ms}")
    )
    assert os.environ["DISPLAY"] == xvfb_display  # the agent inherits it
    started = Agent(config)
    try:
        wait_for(lambda: started.status().get("sources", {}).get("clipboard", {}).get("state") == "ok", timeout=40, message="clipboard watched")
        time.sleep(0.5)  # past the baseline read of every selection
        yield started
    finally:
        started.stop()


def clipboard_events(agent: Agent) -> list[dict]:
    return [e for e in agent.events() if e["channel"] == "clipboard"]


def rules(event: dict) -> list[str]:
    return sorted(m["rule"] for m in event["matches"])


def test_text_only_highlighted_into_primary_is_scanned(agent: Agent) -> None:
    put(f"select and middle-click: {SECRET_WORD}\n", "primary")
    (event,) = wait_for(lambda: clipboard_events(agent), timeout=15, message="an event for the PRIMARY selection")
    assert rules(event) == ["secret_word"]
    assert event["trigger"] == "select"


def test_text_highlighted_then_copied_is_one_event(agent: Agent) -> None:
    text = f"selected, then Ctrl-C: {SECRET_WORD}\n"
    put(text, "primary")
    wait_for(lambda: clipboard_events(agent), timeout=15, message="an event for the highlight")
    put(text)
    put(f"another copy: {SECRET_WORD}\n", "primary")  # a later event shows the copy was polled meanwhile
    wait_for(lambda: len(clipboard_events(agent)) >= 2, timeout=15, message="an event for the next highlight")
    time.sleep(0.5)
    assert [e["trigger"] for e in clipboard_events(agent)] == ["select", "select"]


def test_code_after_4_5_mb_of_filler_is_found(agent: Agent) -> None:
    filler = "lorem ipsum dolor sit amet, consectetur adipiscing elit\n" * (4_500_000 // 56)
    put(filler + f"{SECRET_WORD}\n")
    (event,) = wait_for(lambda: clipboard_events(agent), timeout=60, message="an event for the large copy")
    assert rules(event) == ["secret_word"]
    assert event["truncated"] is False
    assert event["size"] > 4_500_000


def test_code_copied_five_lines_at_a_time_is_seen_whole_once(agent: Agent) -> None:
    lines = [f"    step_{i}(account)\n" for i in range(20)]
    lines[2] = "def transfer_funds(account, amount):\n"
    lines[13] = "    ledger.commit(account, -amount)\n"
    for start in range(0, 20, 5):
        put("".join(lines[start : start + 5]))
        time.sleep(0.6)  # several polls: each copy is seen on its own
    (event,) = wait_for(lambda: clipboard_events(agent), timeout=15, message="an event for the copies together")
    assert event["trigger"] == "recent_copies"
    assert rules(event) == ["split_code"]
    # A copy that matches alone is its own event, and the concatenation does not raise it again.
    put(f"{SECRET_WORD}\n")
    wait_for(lambda: len(clipboard_events(agent)) >= 2, timeout=15, message="the single copy's event")
    put("harmless\n")
    time.sleep(1.5)
    events = clipboard_events(agent)
    assert sorted((e["trigger"], *rules(e)) for e in events) == [("copy", "secret_word"), ("recent_copies", "split_code")]


def test_200_quick_copies_and_highlights_each_matching_one_an_event(xvfb_display: str, tmp_path: Path, rules_dir: Path) -> None:
    # Polling once a minute: only the X server's notifications can keep up. X keeps no history of a
    # selection, so a text replaced before anyone read it is seen by nobody; each copy here is given
    # up as soon as one reader (the agent) has had it, and the next follows at once.
    with run_agent(xvfb_display, tmp_path, rules_dir, interval_ms=60_000) as agent:
        sources = agent.status()["sources"]
        assert "xfixes notifications" in sources["clipboard"]["message"]
        assert "xfixes notifications" in sources["primary"]["message"]
        texts = [
            (f"copy {i}: {SECRET_WORD if i % 5 == 0 else 'nothing to see'} #{i}\n", "primary" if i % 2 else "clipboard")
            for i in range(200)
        ]
        for text, selection in texts:
            put_served(text, selection)
        matching = {hashlib.sha256(t.encode()).hexdigest(): s for t, s in texts if SECRET_WORD in t}
        wait_for(lambda: len(clipboard_events(agent)) >= len(matching), timeout=60, message="an event per matching copy")
        time.sleep(1.0)  # anything extra (a double) would show up here
        events = clipboard_events(agent)
        triggers = {"clipboard": "copy", "primary": "select"}
        assert sorted((e["sha256"], e["trigger"]) for e in events) == sorted((h, triggers[s]) for h, s in matching.items())


def test_the_recent_window_is_bounded_by_count_bytes_and_age() -> None:
    now = [0.0]
    recent = RecentCopies(max_count=3, max_bytes=10, max_age_s=60, clock=lambda: now[0])
    assert recent.add(b"a") == b""
    assert recent.add(b"bb") == b"a"
    assert recent.add(b"cc") == b"abb"
    assert recent.add(b"dd") == b"abbcc"  # a fourth: the first leaves
    assert recent.add(b"eeee") == b"bbccdd"  # over 10 bytes: the oldest leave
    assert recent.add(b"x" * 11) == b"ccddeeee"  # larger than the window: scanned alone, not kept
    now[0] = 61
    assert recent.add(b"f") == b""  # too old
    assert RecentCopies(max_count=0).add(b"a") == RecentCopies(max_count=0).add(b"b") == b""


@pytest.mark.parametrize(
    ("argv", "primary"),
    [
        (["xclip", "-selection", "c", "-o"], False),
        (["xclip", "-selection", "p", "-o"], True),
        (["xsel", "-b", "-o"], False),
        (["xsel", "-p", "-o"], True),
        (["wl-paste", "-n", "-t", "text"], False),
        (["wl-paste", "-n", "-t", "text", "-p"], True),
    ],
)
def test_cancelling_one_selections_read_leaves_the_others_helper_alone(argv: list[str], primary: bool) -> None:
    assert _reads_primary(argv) is primary
