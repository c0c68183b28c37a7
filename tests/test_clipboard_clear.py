"""[clipboard] on_match = "clear" against a real X server: matched text replaced by a notice, nothing else touched."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from pathlib import Path

import pytest

from agent.scanning.results import ScanResult, Status
from agent.sources.clipboard import PRIMARY, ClipboardSource, no_notifications
from agent.sources.clipboard_clear import NOTICE, ClipboardClearer
from agent.sources.work import ClipboardWork, Work
from tests.agent_process import Agent, write_config
from tests.conftest import SECRET_WORD
from tests.test_clipboard import copy
from tests.waiting import wait_for

MATCH = ScanResult(path="clipboard", status=Status.MATCH)


def paste(selection: str = "clipboard") -> str:
    """What a user's paste gets, read the way another program would (xclip -o)."""
    done = subprocess.run(["xclip", "-o", "-selection", selection], capture_output=True, timeout=10)
    return done.stdout.decode("utf-8")


def select(text: str) -> None:
    """Put ``text`` on the PRIMARY selection, as highlighting it does."""
    subprocess.run(["xclip", "-selection", "primary"], input=text.encode(), check=True, stderr=subprocess.DEVNULL)


def work_for(text: str, trigger: str = "copy") -> ClipboardWork:
    data = text.encode()
    return ClipboardWork(data=data, sha256=hashlib.sha256(data).hexdigest(), original_size=len(data), trigger=trigger)


def test_clear_replaces_the_matched_text_in_its_selection(xvfb_display: str) -> None:
    text = f"token = {SECRET_WORD}"
    copy(text)
    select("highlighted, not copied")
    enforcement = ClipboardClearer("clear")(work_for(text), MATCH)
    assert enforcement == {"action": "clear", "mode": "enforce", "done": True, "detail": "the clipboard selection was replaced by a notice"}
    assert paste() == NOTICE
    assert paste("primary") == "highlighted, not copied"


def test_clear_replaces_a_highlighted_match_in_primary_only(xvfb_display: str) -> None:
    copy("copied earlier")
    select(f"highlighted {SECRET_WORD}")
    enforcement = ClipboardClearer("clear")(work_for(f"highlighted {SECRET_WORD}", trigger="select"), MATCH)
    assert enforcement is not None and enforcement["done"] is True
    assert paste("primary") == NOTICE
    assert paste() == "copied earlier"


def test_a_later_copy_is_never_touched(xvfb_display: str) -> None:
    copy(f"token = {SECRET_WORD}")
    copy("the user moved on to this")
    enforcement = ClipboardClearer("clear")(work_for(f"token = {SECRET_WORD}"), MATCH)
    assert enforcement is not None and enforcement["done"] is False and "changed" in enforcement["detail"]
    assert paste() == "the user moved on to this"


def test_audit_mode_says_what_it_would_do_and_changes_nothing(xvfb_display: str) -> None:
    copy(f"token = {SECRET_WORD}")
    enforcement = ClipboardClearer("audit")(work_for(f"token = {SECRET_WORD}"), MATCH)
    assert enforcement is not None
    assert (enforcement["action"], enforcement["mode"], enforcement["done"]) == ("clear", "audit", False)
    assert paste() == f"token = {SECRET_WORD}"


def test_a_match_across_recent_copies_has_no_one_text_to_clear(xvfb_display: str) -> None:
    copy("second half")
    enforcement = ClipboardClearer("clear")(work_for("first half second half", trigger="recent_copies"), MATCH)
    assert enforcement is not None and enforcement["done"] is False
    assert paste() == "second half"


def test_no_display_is_a_failed_clear_not_an_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    enforcement = ClipboardClearer("clear")(work_for("anything"), MATCH)
    assert enforcement is not None and enforcement["done"] is False
    assert "could not be read (PyperclipException)" in enforcement["detail"]


def test_the_notice_is_no_event_and_a_cleared_text_handed_on_is_scanned_again(xvfb_display: str) -> None:
    clearer = ClipboardClearer("clear")
    emitted: dict[str, list[ClipboardWork]] = {"clipboard": [], "primary": []}
    handed_on: dict[str, dict[str, float]] = {"clipboard": {}, "primary": {}}
    sources = []
    for selection in emitted:
        def take(work: Work, selection: str = selection) -> bool:
            assert isinstance(work, ClipboardWork)
            emitted[selection].append(work)
            return True

        source = ClipboardSource(
            take, interval_s=0.05, selection=selection, watch=no_notifications, handed_on=handed_on, clearer=clearer
        )
        source.start()
        sources.append(source)
    try:
        wait_for(lambda: all(s.reads >= 1 for s in sources), message="baseline reads")
        text = f"highlighted {SECRET_WORD}"
        select(text)
        wait_for(lambda: emitted[PRIMARY], message="the highlight's work")
        assert clearer(emitted[PRIMARY][0], MATCH)["done"] is True  # type: ignore[index]
        # The same text then copied: the CLIPBOARD source would skip it as handed on, but it was cleared.
        copy(text)
        wait_for(lambda: emitted["clipboard"], message="the copy's work")
        copy(NOTICE)  # as the clearer does: read by both sources, an event for neither
        seen = [s.reads for s in sources]
        wait_for(lambda: all(s.reads >= n + 2 for s, n in zip(sources, seen, strict=True)), message="two more reads")
        assert [w.data for w in emitted["clipboard"]] == [text.encode()]
        assert [w.data for w in emitted[PRIMARY]] == [text.encode()]
    finally:
        for source in sources:
            source.stop()


def _ok(health: dict) -> dict | None:
    return health if health.get("state") == "ok" else None


def processed(agent: Agent) -> int | None:
    """The agent's count of scanned work items, from its pipeline's health in ``status``."""
    message = agent.status().get("sources", {}).get("pipeline", {}).get("message", "")
    count = message.split(" item(s) processed")[0]
    return int(count) if count.isdigit() else None


def test_the_agent_clears_a_matching_copy_and_leaves_others(tmp_path: Path, rules_dir: Path, xvfb_display: str) -> None:
    config = write_config(tmp_path, rules_dir)
    config.write_text(
        config.read_text().replace(
            "[clipboard]\nenabled = false", "[clipboard]\nenabled = true\ninterval_ms = 100\nprimary = false\non_match = \"clear\""
        )
    )
    agent = Agent(config)  # DISPLAY is inherited from the fixture
    try:
        clipboard = wait_for(lambda: _ok(agent.status().get("sources", {}).get("clipboard", {})), timeout=15)
        assert clipboard["message"].endswith("; matched text is cleared")  # an admin can see the mode in status
        copy(f"token = {SECRET_WORD}")
        wait_for(lambda: paste() == NOTICE, timeout=15, message="the matched copy replaced by the notice")
        wait_for(lambda: processed(agent) == 1, timeout=15, message="the match scanned")
        copy("a later, harmless copy")
        # The notice written before this copy was not handed on: this copy is the second item.
        wait_for(lambda: processed(agent) == 2, timeout=15, message="the later copy scanned")
        assert paste() == "a later, harmless copy"
        (event,) = agent.events()  # the notice the agent wrote is no event
        assert event["type"] == "clipboard.copy" and event["matches"][0]["rule"] == "secret_word"
        assert event["enforcement"] == {
            "action": "clear", "mode": "enforce", "done": True, "detail": "the clipboard selection was replaced by a notice",
        }
        assert event["process"]["exe"] == os.path.realpath("/usr/bin/xclip")
        assert event["user"] == event["process"]["user"]  # who copied, not who runs the agent
    finally:
        agent.stop(signal.SIGKILL)


def test_a_notice_that_did_not_take_is_not_done(xvfb_display: str) -> None:
    copy(f"token = {SECRET_WORD}")
    # A writer that reports success but leaves the selection alone, as a killed helper would.
    enforcement = ClipboardClearer("clear", write=lambda text, selection: None)(work_for(f"token = {SECRET_WORD}"), MATCH)
    assert enforcement is not None and enforcement["done"] is False and "did not stay" in enforcement["detail"]
    assert paste() == f"token = {SECRET_WORD}"
