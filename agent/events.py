"""The event contract both ends share: channels, types, severities, the schema version, and who owns each field.

The agent's policy builds records from these names and the collector validates, stores,
filters and shows them by the same ones, so none of these lists is spelled out twice.
Ownership is the security rule of the contract: an agent reports what it observed; what the
collector knows (who sent the event, from where, when it arrived, what reviewers decided, and
which events the collector raised itself) is never taken from an agent's body. The record's
fields are described in docs/events.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, get_args

SCHEMA_VERSION = 1

Channel = Literal["file", "usb", "clipboard", "agent", "egress", "access"]
CHANNELS: tuple[Channel, ...] = get_args(Channel)
"""``agent`` holds agent-health events: the spool's drop reports and what the collector raises.
``access`` holds what the collector raises about its own reviewers and admins (unusual logins,
repeated failed logins): no agent and no vendor, so only unscoped accounts see them; agents may not use it.
``egress`` holds what left (or could leave) through the network from a program the agent saw start:
git pushes, new remotes, copies of a protected repository, uploads by scp/rsync/curl and the like."""

Severity = Literal["low", "medium", "high", "critical"]
SEVERITIES: tuple[Severity, ...] = get_args(Severity)
"""In rising order."""
SEVERITY_RANK: dict[str, int] = {name: rank for rank, name in enumerate(SEVERITIES, start=1)}
"""1 (low) to 4 (critical); an event without a severity ranks 0."""

# Types the agent's policy and spool make, with their channel.
FILE_WRITE = "file.write"
USB_WRITE = "usb.write"
USB_MOUNT = "usb.mount"
USB_UNMOUNT = "usb.unmount"
CLIPBOARD_COPY = "clipboard.copy"
SPOOL_DROPPED = "spool.dropped"
SOURCE_EVENTS_LOST = "source.events_lost"
USB_BLOCKED = "usb.blocked"
USB_READONLY = "usb.readonly"
QUARANTINE_RELEASED = "quarantine.released"
QUARANTINE_DELETED = "quarantine.deleted"
GIT_PUSH = "git.push"
GIT_REMOTE = "git.remote"
GIT_CLONE = "git.clone"
NET_UPLOAD = "net.upload"
EGRESS_TYPES = (GIT_PUSH, GIT_REMOTE, GIT_CLONE, NET_UPLOAD)
"""``git.push``: a push from a repository (``repository``) to ``destination``; ``git.remote``: a remote
added or re-pointed in a protected repository; ``git.clone``: a clone or copy of a protected repository
in a new place (same root commit); ``net.upload``: a file that matched, named by an upload tool's
arguments, on its way to ``destination``."""
AGENT_TYPES: dict[str, Channel] = {
    FILE_WRITE: "file",
    USB_WRITE: "usb",
    USB_MOUNT: "usb",
    USB_UNMOUNT: "usb",
    CLIPBOARD_COPY: "clipboard",
    SPOOL_DROPPED: "agent",
    SOURCE_EVENTS_LOST: "agent",
    USB_BLOCKED: "usb",
    USB_READONLY: "usb",
    QUARANTINE_RELEASED: "usb",
    QUARANTINE_DELETED: "usb",
    GIT_PUSH: "egress",
    GIT_REMOTE: "egress",
    GIT_CLONE: "egress",
    NET_UPLOAD: "egress",
}

# Types the collector raises about an agent. The whole ``agent.`` family is the collector's,
# today's members and any later one, so an older collector already refuses a newer one's names.
AGENT_OFFLINE = "agent.offline"
AGENT_ONLINE = "agent.online"
AGENT_UNEXPECTED_IP = "agent.unexpected_ip"
MARK_ELSEWHERE = "agent.mark_elsewhere"
"""An agent's event carried a mark minted for another seat (or vendor) than the agent's: a copy of
seat A's material on seat B's workstation. ``related_event`` names the event, ``marks`` the marks."""
ACCESS_UNUSUAL_LOGIN = "access.unusual_login"
"""A reviewer or admin logged in from a country or network (ASN) not seen for that account before."""
ACCESS_FAILED_LOGINS = "access.failed_logins"
"""Repeated failed logins for one account name or from one address."""
ACCESS_CHANNEL: Channel = "access"
COLLECTOR_TYPES: dict[str, Channel] = {
    AGENT_OFFLINE: "agent", AGENT_ONLINE: "agent", AGENT_UNEXPECTED_IP: "agent", MARK_ELSEWHERE: "agent",
    ACCESS_UNUSUAL_LOGIN: "access", ACCESS_FAILED_LOGINS: "access",
}  # fmt: skip
COLLECTOR_TYPE_PREFIX = ("agent.", "access.")
"""Every type under these prefixes is the collector's (a tuple, for ``str.startswith``)."""

Origin = Literal["agent", "collector"]

MatchKind = Literal["yara", "fingerprint", "protected", "mark"]
MATCH_KINDS: tuple[MatchKind, ...] = get_args(MatchKind)
"""How a match was found: a YARA rule, a fingerprint index (``rule`` is the index's name), a
byte-identical copy of a protected file, or a watermark or canary (agent/marks/). Agents before
fingerprints sent no ``kind``: read it as ``yara``."""
UNSTATED_MATCH_KIND: MatchKind = "yara"
FINGERPRINT_MATCH: MatchKind = "fingerprint"
MARK_MATCH: MatchKind = "mark"

MATCH_FIELDS = frozenset(
    {
        "kind", "rule", "namespace", "severity", "category", "description", "tags", "member", "offsets", "strings",
        "snippet", "protected_path", "source", "lines", "source_lines", "coverage", "index_version",
        "carrier", "payload", "frames", "mark_id",
    }
)  # fmt: skip
"""What one entry of an event's ``matches`` carries, all of it the agent's observation. A fingerprint
match adds ``source`` (the corpus file), ``lines`` and ``source_lines`` (pairwise line ranges in the
scanned text and in that file), ``coverage`` and ``index_version``: line numbers, never code. A mark
match adds ``carrier`` (agent/marks/payload.py CARRIERS), ``frames`` (how many agreed) and either
``payload`` (hex: a watermark read from the content, which the collector resolves and then drops) or
``mark_id`` (a canary rule of the vendor's bundle named its mark)."""

AGENT_FIELDS = frozenset(
    {
        "schema", "id", "type", "channel", "occurred_at", "detected_at", "host", "user", "agent_version",
        "ruleset_version", "path", "trigger", "size", "sha256", "status", "reason", "severity", "matches",
        "device", "truncated", "dropped", "first_dropped_at", "process", "enforcement",
        "destination", "repository", "refs", "transfer",
    }
)  # fmt: skip
"""What an agent reports. ``host`` is only the agent's claim: events show the enrolled hostname.
``process`` (the program that wrote the file or owns the clipboard selection, with its parents) and
``enforcement`` (what the agent did about it) are the agent's observation like the rest. The egress
channel adds ``destination`` (DESTINATION_FIELDS), ``repository`` (REPOSITORY_FIELDS), ``refs`` (what a
push named) and ``transfer`` (TRANSFER_FIELDS)."""

DESTINATION_FIELDS = ("tool", "transport", "host", "port", "path", "url", "remote")
"""Where an egress event's data went: the program (``git``, ``scp``, ``rsync``, ``curl``...), the
transport (``https``, ``ssh``, ``file``, ``local``, ``rsync``, ``sftp``, ``rclone``...), host (None for
local and file transports), port, path, the URL with any user name, password or token removed, and the
git remote's name where one was used. agent/egress/remotes.py makes it and matches allowlists on it."""

REPOSITORY_FIELDS = (
    "path", "head", "branch", "root_commits", "protected", "reasons", "protected_folder", "copy_of",
    "scan_status", "scanned_files", "scanned_bytes", "matched_files",
)  # fmt: skip
"""A git repository in an egress event: its top folder, HEAD commit and branch, root commits, and whether
it holds the customer's code (``protected``) with ``reasons`` among REPOSITORY_REASONS; ``copy_of``
names the protected repository a copy shares its root commit with; the HEAD scan's extent."""
REPOSITORY_REASONS = ("folder", "root_commit", "protected_file", "signature", "fingerprint")

TRANSFER_FIELDS = ("files_named", "files_scanned", "files_matched", "bytes_scanned", "truncated")
"""An upload's extent: the files its arguments named (folders walked), scanned and matched."""

PROCESS_FIELDS = ("pid", "exe", "cmdline", "uid", "user", "ppid")
"""One process in an event's ``process`` (and in each of its ``parents``), from agent/procinfo.py."""

EnforcementAction = Literal["allow", "read-only", "block", "clear", "quarantine", "release", "delete"]
ENFORCEMENT_ACTIONS: tuple[EnforcementAction, ...] = get_args(EnforcementAction)
"""What an event's ``enforcement.action`` says the agent did (``mode: enforce``) or would have done
(``mode: audit``): a device allowed, remounted read-only or blocked; clipboard text cleared; a file
quarantined; a quarantined file released or deleted on the collector's command."""
EnforcementMode = Literal["enforce", "audit"]
ENFORCEMENT_MODES: tuple[EnforcementMode, ...] = get_args(EnforcementMode)

COLLECTOR_FIELDS = frozenset(
    {
        "seq", "agent_id", "vendor", "received_at", "source_ip", "source_country", "triage", "comments",
        "related", "origin", "claimed_host", "agent_claims",
        # names of the collector's own columns, so a body cannot pose as them in any output either
        "triage_status", "assignee", "vendor_id", "severity_rank", "destination_host", "egress_policy",
        "marks",
    }
)  # fmt: skip
"""What only the collector may set. An agent's values under these names are never shown as the
collector's: the review API moves them under ``agent_claims``."""

EGRESS_POLICY = "egress_policy"
"""Collector-owned on egress events: ``{"allowed": bool, "pattern": str|None}``, the vendor's allowed
remotes applied to the event's destination at ingest (the collector also sets the severity then)."""

MARKS = "marks"
"""Collector-owned: the registered marks an event's mark matches resolved to,
``[{"mark_id", "vendor", "seat", "kind", "minted_at", "carriers", "elsewhere"}]`` (``elsewhere``: the
mark was minted for another seat or vendor than the reporting agent's)."""

CLAIMED_HOST = "claimed_host"
AGENT_CLAIMS = "agent_claims"


def collector_raised(event_type: str) -> bool:
    """True for a type only the collector may raise (refused when an agent submits it)."""
    return event_type.startswith(COLLECTOR_TYPE_PREFIX)


def worst_severity(severities: Iterable[str | None]) -> Severity | None:
    """The highest of ``severities`` in SEVERITIES order, or None when there is none."""
    ranks = [SEVERITY_RANK[s] for s in severities if s in SEVERITY_RANK]
    return SEVERITIES[max(ranks) - 1] if ranks else None


def match_kind(match: Mapping[str, Any]) -> str:
    """The ``kind`` of a match as shown: ``yara`` when the agent stated none (agents before fingerprints)."""
    kind = match.get("kind")
    return kind if isinstance(kind, str) and kind else UNSTATED_MATCH_KIND
