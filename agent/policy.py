"""Policy: a pure decision from (what happened, what the scan found) to an event record or nothing.

No I/O here: the pipeline gathers facts, this module only decides, so every rule
of "what becomes an event" is testable with plain values. The record's shape is
documented in docs/events.md.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any

from agent import events
from agent.redact import snippet
from agent.scanning.results import ScanResult, Status
from agent.sources.work import ClipboardWork, DeviceChange, EgressWork, FileWork, QuarantineReport, SourceProblem, Work

if TYPE_CHECKING:
    from agent.egress.scan import RepositoryScan, UploadScan

# Statuses that are events even without a match: content we could not inspect is itself a signal.
_UNINSPECTED_ON_FILE = {Status.ENCRYPTED, Status.TOO_LARGE, Status.TIMEOUT}
_UNINSPECTED_ON_USB = _UNINSPECTED_ON_FILE | {Status.UNREADABLE, Status.SKIPPED}

UNINSPECTED_SEVERITY: events.Severity = "medium"
"""The severity of an event for content that could not be inspected and matched nothing
(docs/events.md). Content that hides what it holds (``ScanResult.uninspected``: encrypted,
an unsupported container, nesting past the limit) is such an event on every channel."""


@dataclasses.dataclass(frozen=True)
class Context:
    """Facts the same for every event of this agent run."""

    host: str
    agent_version: str
    ruleset_version: str | None
    report_clean: bool = False
    clipboard_snippets: bool = False
    egress_report_all: bool = False
    """``[egress] report = "all"``: pushes and new remotes of repositories without the customer's code are events too."""
    upload_max_events: int = 20


@dataclasses.dataclass(frozen=True)
class Decision:
    """An event to spool; ``matched`` decides how the spool's size cap treats it."""

    event: dict[str, Any]
    matched: bool


def decide(work: Work, result: ScanResult | None, context: Context, *, user: str | None, now: float) -> Decision | None:
    """The event for ``work`` (scanned into ``result``), or None when it is routine noise."""
    if isinstance(work, DeviceChange):
        change = _base(work.type, work.observed_at, now, context, user) | {"device": work.device.to_dict(), "enforcement": work.enforcement}
        # A volume device control acted on is kept like a match under the spool's size cap.
        return Decision(change, work.enforcement is not None)
    if isinstance(work, SourceProblem):  # lost sight of writes: kept like a match under the spool's cap
        device = work.device.to_dict() if work.device else None
        return Decision(_base(work.type, work.observed_at, now, context, user) | {"path": work.path, "reason": work.message, "device": device}, True)
    if isinstance(work, QuarantineReport):  # what the collector asked about a quarantined file: kept like a match
        report = {"path": work.path, "size": work.size, "sha256": work.sha256, "enforcement": work.enforcement}
        return Decision(_base(work.type, work.observed_at, now, context, user) | report, True)
    assert result is not None, "only device changes and reports come without a scan"
    matched = result.status is Status.MATCH
    if isinstance(work, ClipboardWork):
        if not matched and not result.uninspected:
            return None
        event = _base(events.CLIPBOARD_COPY, work.observed_at, now, context, user)
        event.update(size=work.original_size, sha256=work.sha256, truncated=work.truncated, trigger=work.trigger, process=work.process)
        event = _with_scan(event, result, include_file=False)
        if context.clipboard_snippets:
            for match in event["matches"]:
                if match["offsets"]:
                    match["snippet"] = snippet(work.data, match["offsets"][0])
        return Decision(event, matched)
    assert isinstance(work, FileWork)
    uninspected = _UNINSPECTED_ON_USB if work.channel == "usb" else _UNINSPECTED_ON_FILE
    if not matched and not result.uninspected and result.status not in uninspected and not context.report_clean:
        return None
    event = _base(events.USB_WRITE if work.channel == "usb" else events.FILE_WRITE, work.observed_at, now, context, user)
    event.update(path=work.path, trigger=work.reason, device=work.device.to_dict() if work.device else None, process=work.process)
    event = _with_scan(event, result, include_file=True)
    if work.reason == "removed" and result.status is Status.UNREADABLE:
        event["reason"] = "volume removed while writing"
    return Decision(event, matched)


EGRESS_SEVERITY: dict[str, events.Severity] = {events.GIT_REMOTE: "medium", events.GIT_CLONE: "medium"}
"""The agent's proposal for egress events without content of their own; a push of the customer's
code and a matching upload are ``high``. The collector sets the final severity from the vendor's
allowed remotes (docs/events.md)."""


def decide_egress(
    work: EgressWork, repo: RepositoryScan | None, upload: UploadScan | None, context: Context, *, user: str | None, now: float
) -> list[Decision]:
    """The events for an egress item: none for a repository without the customer's code (unless
    ``egress_report_all``), one per matching file of an upload (up to ``upload_max_events``)."""
    if work.type == events.NET_UPLOAD:
        if upload is None:
            return []
        decisions = []
        for result in upload.matched[: context.upload_max_events]:
            event = _egress_base(work, context, user, now)
            event = _with_scan(event, result, include_file=True)
            event.update(path=result.path, transfer=upload.transfer, severity=events.worst_severity([event["severity"], "high"]))
            decisions.append(Decision(event, True))
        return decisions
    facts = dict(repo.facts) if repo is not None else dict(work.repository_facts or {})
    matches = [m.to_dict() for m in repo.matches] if repo is not None else []
    protected = bool(facts.get("protected")) or bool(matches)
    if not protected and work.type != events.GIT_CLONE and not context.egress_report_all:
        return []
    event = _egress_base(work, context, user, now)
    event.update(
        path=work.repository, matches=matches, status=Status.MATCH.value if matches else None,
        repository={k: facts.get(k) for k in events.REPOSITORY_FIELDS} | {"protected": protected},
        severity=EGRESS_SEVERITY.get(work.type, "high" if protected else "low"),
    )  # fmt: skip
    if work.type == events.GIT_PUSH:
        event["refs"] = list(work.refs)
    return [Decision(event, True)]


def _egress_base(work: EgressWork, context: Context, user: str | None, now: float) -> dict[str, Any]:
    return _base(work.type, work.observed_at, now, context, user) | {"destination": work.destination, "process": work.process}


def _base(kind: str, observed_at: float, now: float, context: Context, user: str | None) -> dict[str, Any]:
    return {
        "schema": events.SCHEMA_VERSION,
        "id": str(uuid.uuid4()),
        "type": kind,
        "channel": events.AGENT_TYPES[kind],
        "occurred_at": _iso(observed_at),
        "detected_at": _iso(now),
        "host": context.host,
        "user": user,
        "agent_version": context.agent_version,
        "ruleset_version": context.ruleset_version,
        "path": None,
        "size": None,
        "sha256": None,
        "status": None,
        "reason": None,
        "severity": None,
        "matches": [],
        "device": None,
        "process": None,
        "enforcement": None,
    }


def _with_scan(event: dict[str, Any], result: ScanResult, *, include_file: bool) -> dict[str, Any]:
    matches = [m.to_dict() for m in result.matches]
    severity = events.worst_severity(m["severity"] for m in matches)
    if severity is None and result.status not in (Status.MATCH, Status.CLEAN):
        severity = UNINSPECTED_SEVERITY
    event.update(status=result.status.value, reason=result.reason, matches=matches, severity=severity)
    if include_file:
        event.update(size=result.size, sha256=result.sha256)
    return event


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
