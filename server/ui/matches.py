"""How pages show an event's matches: the kind of each, and a fingerprint match's line ranges side by side.

Matches are the agent's words. Ingest types them now (server/api/schemas.py ``MatchIn``), but rows
stored before fingerprints were typed may hold anything under these names, so nothing here
computes on a value it has not checked: what is not a line range is shown as text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.events import FINGERPRINT_MATCH, match_kind
from server.siem.fields import match_dicts, rules_and_kinds

RANGES_SHOWN = 200


@dataclass(frozen=True)
class RangePair:
    """One matched stretch: its lines in the scanned text and in the corpus file."""

    scanned: str
    corpus: str


@dataclass(frozen=True)
class FingerprintView:
    """A fingerprint match as its card on the event page shows it."""

    anchor: str
    index: str
    source: str | None
    index_version: str | None
    severity: Any
    category: Any
    member: Any
    coverage: str | None
    scanned_lines: int | None
    pairs: tuple[RangePair, ...]
    more: int
    """Ranges left out of ``pairs`` (a page shows at most RANGES_SHOWN)."""


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def rule_labels(matches: Any) -> list[tuple[str, str]]:
    """Distinct ``(rule, kind)`` of the matches in first-seen order, for the event list."""
    return list(rules_and_kinds({"matches": matches}).items())


def _line_range(value: Any) -> tuple[int, int] | None:
    if isinstance(value, list) and len(value) == 2 and all(isinstance(n, int) and not isinstance(n, bool) for n in value):
        return value[0], value[1]
    return None


def range_text(value: Any) -> str:
    """``[12, 31]`` as ``12–31`` (``12`` for one line); anything else as compact JSON text."""
    found = _line_range(value)
    if found is None:
        return json.dumps(value, ensure_ascii=False)
    start, end = found
    return str(start) if start == end else f"{start}–{end}"


def coverage_text(value: Any) -> str | None:
    """A share of 0..1 as a whole percentage, never rounded to a misleading 0% or 100%."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
        return None if value is None else json.dumps(value, ensure_ascii=False)
    if 0 < value < 0.01:
        return "under 1%"
    if 0.99 < value < 1:
        return "over 99%"
    return f"{value:.0%}"


def _line_count(ranges: Sequence[Any]) -> int | None:
    """Lines of the scanned text the ranges cover, or None when one of them is not a range."""
    total = 0
    for value in ranges:
        pair = _line_range(value)
        if pair is None or pair[0] > pair[1]:
            return None
        total += pair[1] - pair[0] + 1
    return total


def fingerprint_views(matches: Any) -> list[FingerprintView]:
    """The event's fingerprint matches, each with its ranges paired up (``lines[i]`` with ``source_lines[i]``)."""
    views = []
    for number, match in enumerate(m for m in match_dicts({"matches": matches}) if match_kind(m) == FINGERPRINT_MATCH):
        scanned, corpus = _list(match.get("lines")), _list(match.get("source_lines"))
        count = max(len(scanned), len(corpus))
        pairs = tuple(
            RangePair(
                scanned=range_text(scanned[i]) if i < len(scanned) else "—",
                corpus=range_text(corpus[i]) if i < len(corpus) else "—",
            )
            for i in range(min(count, RANGES_SHOWN))
        )
        source = match.get("source")
        version = match.get("index_version")
        views.append(
            FingerprintView(
                anchor=f"fingerprint-{number + 1}",
                index=str(match.get("rule") or ""),
                source=None if source is None else str(source),
                index_version=None if version is None else str(version),
                severity=match.get("severity"),
                category=match.get("category"),
                member=match.get("member"),
                coverage=coverage_text(match.get("coverage")),
                scanned_lines=_line_count(scanned),
                pairs=pairs,
                more=count - len(pairs),
            )
        )
    return views
