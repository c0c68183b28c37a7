"""What a scan reports: a status per file and the rules that matched where."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from agent.events import MATCH_KINDS


class Status(str, enum.Enum):
    """The outcome of scanning one file. Anything but ``clean`` deserves a look."""

    MATCH = "match"
    CLEAN = "clean"
    TOO_LARGE = "too_large"
    TIMEOUT = "timeout"
    ENCRYPTED = "encrypted"
    UNREADABLE = "unreadable"
    SKIPPED = "skipped"


# When a file hit several limits and nothing matched, the first of these it hit
# in this order names it: the most actionable explanation for a reviewer first.
PROBLEM_PRECEDENCE = (
    Status.ENCRYPTED,
    Status.TOO_LARGE,
    Status.TIMEOUT,
    Status.UNREADABLE,
    Status.SKIPPED,
)

PROTECTED_NAMESPACE = "protected"
PROTECTED_RULE = "protected_file_copy"
FINGERPRINT_NAMESPACE = "fingerprint"
MARKS_NAMESPACE = "marks"
WATERMARK_RULE = "watermark"

# What found a match (the event contract's MATCH_KINDS): a YARA rule, a fingerprint index
# (fpmatch.py) or the protected-file hashes.
YARA, FINGERPRINT, PROTECTED, MARK = MATCH_KINDS


@dataclasses.dataclass(frozen=True)
class Match:
    """One rule (or fingerprint index) that fired on one piece of content (the file or an archive member).

    A fingerprint match names the index in ``rule``, the corpus file it copies in
    ``source``, the matched line ranges on both sides (pairwise) and the share of the
    text's tokens matched. Line numbers only: no code text.

    A mark match (agent/marks/) names how it was carried and either the watermark's payload (hex,
    which only the collector can tie to a seat) or, for a canary rule of the bundle, its ``mark_id``.
    """

    rule: str
    namespace: str
    severity: str
    category: str
    description: str = ""
    tags: tuple[str, ...] = ()
    member: str | None = None
    offsets: tuple[int, ...] = ()
    strings: tuple[str, ...] = ()
    protected_path: str | None = None
    kind: str = YARA
    source: str | None = None
    lines: tuple[tuple[int, int], ...] = ()
    source_lines: tuple[tuple[int, int], ...] = ()
    coverage: float | None = None
    index_version: str | None = None
    carrier: str | None = None
    payload: str | None = None
    frames: int | None = None
    mark_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape documented in docs/scan.md."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "rule": self.rule,
            "namespace": self.namespace,
            "severity": self.severity,
            "category": self.category,
            "description": self.description,
            "tags": list(self.tags),
            "member": self.member,
            "offsets": list(self.offsets),
            "strings": list(self.strings),
        }
        if self.protected_path is not None:
            out["protected_path"] = self.protected_path
        if self.kind == FINGERPRINT:
            out["source"] = self.source
            out["lines"] = [list(r) for r in self.lines]
            out["source_lines"] = [list(r) for r in self.source_lines]
            out["coverage"] = self.coverage
            out["index_version"] = self.index_version
        if self.kind == MARK:
            out["carrier"] = self.carrier
            out["frames"] = self.frames
            if self.payload is not None:
                out["payload"] = self.payload
            if self.mark_id is not None:
                out["mark_id"] = self.mark_id
        return out

    def relocated(self, prefix: str | None) -> Match:
        """The same match with ``prefix!`` put before its member (nested archives)."""
        if prefix is None:
            return self
        member = prefix if self.member is None else f"{prefix}!{self.member}"
        return dataclasses.replace(self, member=member)


@dataclasses.dataclass(frozen=True)
class ScanResult:
    """The outcome for one path."""

    path: str
    status: Status
    sha256: str | None = None
    size: int | None = None
    matches: tuple[Match, ...] = ()
    reason: str | None = None
    cached: bool = False
    uninspected: bool = False
    """Part of the content could not be opened in a way that can hide it on purpose
    (encrypted, an unsupported container, nested too deep); see ``LimitHit.uninspected``."""

    @property
    def matched(self) -> bool:
        return self.status is Status.MATCH

    def to_dict(self) -> dict[str, Any]:
        """One line of ``dlp-agent scan --json``."""
        return {
            "path": self.path,
            "status": self.status.value,
            "sha256": self.sha256,
            "size": self.size,
            "matches": [m.to_dict() for m in self.matches],
            "reason": self.reason,
        }

    @classmethod
    def problem(cls, path: str, status: Status, reason: str, *, size: int | None = None) -> ScanResult:
        """A result for a path whose content could not be scanned at all."""
        return cls(path=path, status=status, size=size, reason=reason)
