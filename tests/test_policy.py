"""The policy: which scans become events, and what an event record holds."""

from __future__ import annotations

import pytest

from agent.policy import Context, decide
from agent.scanning.results import Match, ScanResult, Status
from agent.sources.work import ClipboardWork, Device, DeviceChange, FileWork

CTX = Context(host="ws-17", agent_version="0.1.0", ruleset_version="abc123")
MATCH = Match(rule="private_key_pem", namespace="credentials", severity="critical", category="secret", offsets=(4,))
STICK = Device(mountpoint="/media/STICK", fstype="exfat", vendor="SanDisk", serial="4C53")


def result(status: Status, *, matches=()) -> ScanResult:
    return ScanResult(path="/x", status=status, sha256="ab" * 32, size=10, matches=tuple(matches))


def test_match_on_file_is_an_event_with_everything_a_reviewer_needs() -> None:
    decision = decide(FileWork(path="/home/v/out/key.pem", observed_at=1_700_000_000), result(Status.MATCH, matches=[MATCH]), CTX, user="v", now=1_700_000_001)
    assert decision is not None and decision.matched
    event = decision.event
    assert event["type"] == "file.write" and event["channel"] == "file"
    assert (event["path"], event["sha256"], event["size"], event["user"], event["host"]) == ("/home/v/out/key.pem", "ab" * 32, 10, "v", "ws-17")
    assert event["severity"] == "critical" and event["matches"][0]["rule"] == "private_key_pem"
    assert event["occurred_at"] == "2023-11-14T22:13:20.000Z"
    assert event["ruleset_version"] == "abc123" and len(event["id"]) == 36


def test_clean_routine_write_is_not_an_event_unless_configured() -> None:
    work = FileWork(path="/home/v/notes.txt")
    assert decide(work, result(Status.CLEAN), CTX, user="v", now=0) is None
    loud = Context(host="h", agent_version="1", ruleset_version=None, report_clean=True)
    decision = decide(work, result(Status.CLEAN), loud, user="v", now=0)
    assert decision is not None and not decision.matched and decision.event["status"] == "clean"


@pytest.mark.parametrize("status", [Status.ENCRYPTED, Status.TOO_LARGE, Status.TIMEOUT])
def test_uninspected_content_is_an_event(status: Status) -> None:
    decision = decide(FileWork(path="/a.zip"), result(status), CTX, user="v", now=0)
    assert decision is not None and not decision.matched and decision.event["status"] == status.value


def test_usb_write_carries_the_device_and_reports_unreadable_too() -> None:
    work = FileWork(path="/media/STICK/a.bin", channel="usb", device=STICK)
    decision = decide(work, result(Status.UNREADABLE), CTX, user="v", now=0)
    assert decision is not None
    assert decision.event["type"] == "usb.write" and decision.event["device"]["serial"] == "4C53"
    assert decide(FileWork(path="/tmp/gone"), result(Status.UNREADABLE), CTX, user="v", now=0) is None


def test_clipboard_event_never_holds_the_text() -> None:
    text = b"-----BEGIN RSA PRIVATE KEY----- secret material"
    work = ClipboardWork(data=text, sha256="cd" * 32, original_size=len(text) + 100)
    decision = decide(work, result(Status.MATCH, matches=[MATCH]), CTX, user="v", now=0)
    assert decision is not None
    event = decision.event
    assert event["channel"] == "clipboard" and event["truncated"] and event["size"] == len(text) + 100
    assert event["path"] is None and b"secret material" not in repr(event).encode()
    assert decide(work, result(Status.CLEAN), CTX, user="v", now=0) is None


def test_device_changes_are_events() -> None:
    decision = decide(DeviceChange(type="usb.mount", device=STICK), None, CTX, user=None, now=0)
    assert decision is not None and decision.event["type"] == "usb.mount" and decision.event["device"]["vendor"] == "SanDisk"


def test_clipboard_snippets_only_when_configured_and_redacted() -> None:
    text = b"note: aws_secret = 'wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY' end"
    offset = text.index(b"aws_secret")
    match = Match(rule="aws", namespace="credentials", severity="critical", category="secret", offsets=(offset,))
    work = ClipboardWork(data=text, sha256="ef" * 32, original_size=len(text))
    plain = decide(work, result(Status.MATCH, matches=[match]), CTX, user="v", now=0)
    assert plain is not None and "snippet" not in plain.event["matches"][0]
    ctx = Context(host="h", agent_version="1", ruleset_version=None, clipboard_snippets=True)
    decision = decide(work, result(Status.MATCH, matches=[match]), ctx, user="v", now=0)
    assert decision is not None
    shown = decision.event["matches"][0]["snippet"]
    assert shown == "n***: a********* = 'w***************************"


def test_content_that_hides_itself_is_an_event_on_every_channel_with_medium_severity() -> None:
    hidden = ScanResult(path="/x", status=Status.SKIPPED, sha256="ab" * 32, size=10, reason="deep.zip: archives nested deeper than 4", uninspected=True)
    for work in (FileWork(path="/home/v/deep.zip"), FileWork(path="/media/STICK/deep.zip", channel="usb", device=STICK)):
        decision = decide(work, hidden, CTX, user="v", now=0)
        assert decision is not None and not decision.matched
        assert (decision.event["status"], decision.event["severity"]) == ("skipped", "medium")
    clip = decide(ClipboardWork(data=b"PK...", sha256="ab" * 32, original_size=5), hidden, CTX, user="v", now=0)
    assert clip is not None and clip.event["severity"] == "medium" and not clip.matched


def test_uninspected_without_matches_gets_the_policy_severity_and_a_plain_skip_no_event() -> None:
    decision = decide(FileWork(path="/a.zip"), result(Status.ENCRYPTED), CTX, user="v", now=0)
    assert decision is not None and decision.event["severity"] == "medium"
    assert decide(FileWork(path="/home/v/pipe"), result(Status.SKIPPED), CTX, user="v", now=0) is None


def _egress_push(facts: dict, matches: tuple = ()) -> tuple:
    from agent.egress.scan import RepositoryScan
    from agent.sources.work import EgressWork

    work = EgressWork(type="git.push", destination={"host": "evil.example"}, process=None, repository="/r", refs=("main",))
    return work, RepositoryScan({"path": "/r", **facts}, matches)


def test_a_push_of_a_repository_without_the_customers_code_is_no_event_unless_all_are_reported():
    import dataclasses as dc

    from agent.policy import decide_egress

    work, repo = _egress_push({"protected": False, "reasons": []})
    context = Context(host="h", agent_version="1", ruleset_version="v")
    assert decide_egress(work, repo, None, context, user="jdoe", now=0) == []
    (everything,) = decide_egress(work, repo, None, dc.replace(context, egress_report_all=True), user="jdoe", now=0)
    assert (everything.event["severity"], everything.event["repository"]["protected"]) == ("low", False)


def test_a_push_whose_head_matched_is_high_even_outside_the_protected_folders():
    from agent.policy import decide_egress
    from agent.scanning.results import Match

    match = Match(rule="customer_marker", namespace="customer", severity="medium", category="source_code", member="lib/a.py")
    work, repo = _egress_push({"protected": False, "reasons": []}, (match,))
    (decision,) = decide_egress(work, repo, None, Context(host="h", agent_version="1", ruleset_version="v"), user="jdoe", now=0)
    event = decision.event
    assert (event["type"], event["channel"], event["severity"], event["status"]) == ("git.push", "egress", "high", "match")
    assert event["repository"]["protected"] is True and event["refs"] == ["main"]
    assert event["matches"][0]["member"] == "lib/a.py"
