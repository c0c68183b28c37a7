"""What one file's scan has found so far: matches merged across chunks, and problems."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from agent.marks.payload import CANARY, Found
from agent.scanning.budget import Budget
from agent.scanning.errors import LimitHit
from agent.scanning.externals import FileFacts
from agent.scanning.results import (
    FINGERPRINT,
    FINGERPRINT_NAMESPACE,
    MARK,
    MARKS_NAMESPACE,
    PROBLEM_PRECEDENCE,
    PROTECTED,
    PROTECTED_NAMESPACE,
    PROTECTED_RULE,
    WATERMARK_RULE,
    YARA,
    Match,
    ScanResult,
    Status,
)
from agent.scanning.rules import Ruleset

if TYPE_CHECKING:
    from agent.scanning.fpmatch import FingerprintHit

_MAX_REASONS = 5


class _Found:
    """One (namespace, rule, member) with everything its matches said."""

    __slots__ = ("namespace", "rule", "meta", "tags", "member", "offsets", "strings", "protected_path", "kind", "print_hit", "mark")

    def __init__(self, namespace: str, rule: str, meta: dict[str, Any], tags: list[str], member: str | None):
        self.namespace = namespace
        self.rule = rule
        self.meta = meta
        self.tags = tags
        self.member = member
        self.offsets: set[int] = set()
        self.strings: set[str] = set()
        self.protected_path: str | None = None
        self.kind = YARA
        self.print_hit: tuple[str, tuple[tuple[int, int], ...], tuple[tuple[int, int], ...], int, float, str] | None = None
        self.mark: dict[str, Any] | None = None
        """A mark match's ``carrier``, ``frames`` and ``payload`` or ``mark_id``."""

    def freeze(self, max_offsets: int) -> Match:
        info = Ruleset.rule_info(self.meta)
        return Match(
            rule=self.rule,
            namespace=self.namespace,
            severity=info.severity,
            category=info.category,
            description=info.description,
            tags=tuple(self.tags),
            member=self.member,
            offsets=tuple(sorted(self.offsets)[:max_offsets]),
            strings=tuple(sorted(self.strings)),
            protected_path=self.protected_path,
            **self._fingerprint_fields(),
        )

    def _fingerprint_fields(self) -> dict[str, Any]:
        if self.mark is not None:
            return {"kind": MARK, **self.mark}
        if self.print_hit is None:
            return {"kind": self.kind}
        source, lines, source_lines, _tokens, coverage, version = self.print_hit
        return {
            "kind": FINGERPRINT,
            "source": source,
            "lines": lines,
            "source_lines": source_lines,
            "coverage": coverage,
            "index_version": version,
        }


def _copied(found: _Found) -> _Found:
    twin = copy.copy(found)
    if found.mark is not None:
        twin.mark = dict(found.mark)
    return twin


class Job:
    """Accumulates the findings of one top-level file, archive members included."""

    def __init__(
        self, budget: Budget, *, max_offsets: int, rules: Any = None, fingerprints: tuple[Any, ...] = (), facts: FileFacts | None = None
    ):
        self.budget = budget
        self.facts = facts
        """The file's external variables (externals.py); None when the rules read none."""
        self._externals: dict[str, dict[str, str]] = {}
        self.rules = rules
        self.fingerprints = fingerprints
        """The fingerprint indexes, fixed for the whole file like ``rules``."""
        """The compiled rules this file is scanned with, fixed for the whole file even if the
        scanner's ruleset is swapped meanwhile (a published bundle arriving mid-scan)."""
        self.max_offsets = max_offsets
        self._found: dict[tuple[str, str, str | None], _Found] = {}
        self.problems: list[LimitHit] = []

    def externals(self, member: str | None, data: bytes | bytearray | memoryview) -> dict[str, str] | None:
        """The external variables for the file (``member`` None) or a member, fixed at the first call
        (the first chunk's bytes give the type)."""
        facts = self.facts
        if facts is None:
            return None
        if member is None:
            return facts.values(None, data)
        known = self._externals.get(member)
        if known is None:
            known = self._externals[member] = facts.values(member, data)
        return known

    def add_yara(self, hit: Any, member: str | None, base: int) -> None:
        """Record a yara-python match; ``base`` shifts offsets of a chunk into file offsets."""
        key = (hit.namespace, hit.rule, member)
        found = self._found.get(key)
        if found is None:
            found = self._found[key] = _Found(hit.namespace, hit.rule, hit.meta, list(hit.tags), member)
            mark_id = hit.meta.get("mark")
            if isinstance(mark_id, str) and mark_id:
                # A canary rule of the vendor's bundle (server/canaries.py): it names its mark.
                found.mark = {"carrier": CANARY, "frames": 1, "mark_id": mark_id}
        limit = self.max_offsets
        for string in hit.strings:
            found.strings.add(string.identifier)
            for instance in string.instances:
                if len(found.offsets) >= limit * 4:
                    break  # enough evidence; do not let a repetitive file grow this set
                found.offsets.add(base + instance.offset)

    def add_protected(self, original: str, member: str | None) -> None:
        found = _Found(
            PROTECTED_NAMESPACE,
            PROTECTED_RULE,
            {"severity": "high", "category": "protected_copy", "description": "byte-identical copy of a protected file"},
            [],
            member,
        )
        found.protected_path = original
        found.kind = PROTECTED
        self._found[(PROTECTED_NAMESPACE, PROTECTED_RULE, member)] = found

    def add_fingerprint(self, hit: FingerprintHit, member: str | None) -> None:
        """Record a corpus file the content copies; windows of one large file keep the best-covered one."""
        index = hit.index
        key = (FINGERPRINT_NAMESPACE, f"{index.name}\0{hit.source}", member)
        found = self._found.get(key)
        if found is not None and found.print_hit is not None and found.print_hit[3] >= hit.tokens:
            return
        meta = {"severity": index.severity, "category": index.category, "description": f"copies {hit.source}"}
        found = _Found(FINGERPRINT_NAMESPACE, index.name, meta, [], member)
        found.print_hit = (hit.source, hit.lines, hit.source_lines, hit.tokens, hit.coverage, index.version)
        self._found[key] = found

    def add_mark(self, found: Found, member: str | None) -> None:
        """Record a watermark read from the content. Windows and slices of one large file overlap, so
        a frame may be read twice: ``frames`` keeps the most any one read found, never a sum."""
        key = (MARKS_NAMESPACE, f"{found.carrier}\0{found.payload.hex()}", member)
        known = self._found.get(key)
        if known is not None and known.mark is not None:
            known.mark["frames"] = max(known.mark["frames"], found.frames)
            return
        meta = {"severity": "low", "category": "watermark", "description": f"a registered copy's watermark ({found.carrier.replace('_', ' ')})"}
        entry = self._found[key] = _Found(MARKS_NAMESPACE, WATERMARK_RULE, meta, [], member)
        entry.mark = {"carrier": found.carrier, "frames": found.frames, "payload": found.payload.hex()}

    def problem(self, hit: LimitHit) -> None:
        self.problems.append(hit)

    @property
    def cacheable(self) -> bool:
        """Timeouts depend on the machine's load, not on the content: never cache them."""
        return all(p.status != Status.TIMEOUT for p in self.problems)

    def copy(self) -> Job:
        """An independent copy (the cache hands these out to many threads)."""
        # Its attributes as they are, without copy.copy's generic protocol (a few us on every file the
        # cache stores); the findings and problems are then copied in their turn.
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__)
        twin._found = {k: _copied(v) for k, v in self._found.items()}
        twin.problems = list(self.problems)
        return twin

    def result(self, path: str, *, sha256: str | None, size: int | None, cached: bool = False) -> ScanResult:
        if not self._found and not self.problems:
            return ScanResult(path, Status.CLEAN, sha256, size, (), None, cached, False)  # most files
        matches = tuple(f.freeze(self.max_offsets) for f in self._found.values())
        status = Status.MATCH if matches else self._problem_status()
        return ScanResult(
            path=path,
            status=status,
            sha256=sha256,
            size=size,
            matches=matches,
            reason=self._reason(),
            cached=cached,
            uninspected=any(p.uninspected for p in self.problems),
        )

    def _problem_status(self) -> Status:
        seen = {Status(p.status) for p in self.problems}
        for status in PROBLEM_PRECEDENCE:
            if status in seen:
                return status
        return Status.CLEAN

    def _reason(self) -> str | None:
        reasons = list(dict.fromkeys(p.reason for p in self.problems))
        if not reasons:
            return None
        extra = len(reasons) - _MAX_REASONS
        text = "; ".join(reasons[:_MAX_REASONS])
        return f"{text}; and {extra} more" if extra > 0 else text
