"""Lint for rule packs: what compiles but would mislead reviewers or slow every agent down.

- missing or invalid ``severity`` / ``category`` meta (reports would fall back to defaults);
- the same rule name in two packs (events name rules, and reviewers filter by name);
- strings libyara itself warns about (``.*``-style regexes, strings without a usable atom),
  plus regexes with unbounded repetition that the compiler lets through;
- text strings too short to be specific to the customer's content.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import yara

from agent.events import SEVERITIES

MIN_TEXT_STRING = 6
MIN_HEX_BYTES = 4
RULE_HEADER = re.compile(r"^[ \t]*(?:(?:private|global)\s+)*rule\s+(\w+)", re.M)
TEXT_STRING = re.compile(r'^[ \t]*(\$\w*)\s*=\s*"((?:[^"\\]|\\.)*)"([^\n]*)$', re.M)
HEX_STRING = re.compile(r"^[ \t]*(\$\w*)\s*=\s*\{([^}]*)\}", re.M)
REGEX_STRING = re.compile(r"^[ \t]*(\$\w*)\s*=\s*/((?:[^/\\\n]|\\.)*)/", re.M)
# Any character (``.``) or a negated class, repeated without bound: libyara tries every length.
UNBOUNDED = re.compile(r"(?:(?<!\\)\.|\[\^(?:[^\]\\]|\\.)*\])(?:[*+]|\{\d*,\})")
# libyara's warnings read "line N: ..." for sources and "<file>(N): ..." for files.
LINE_PREFIX = re.compile(r"^(?:line (\d+)|.*?\((\d+)\)): (.*)$", re.S)


@dataclass(frozen=True)
class Finding:
    line: int | None
    message: str


def lint_source(source: str, rules: yara.Rules, warnings: Sequence[str] = ()) -> list[Finding]:
    """Findings for one compiled pack whose text is ``source``; ``warnings`` are libyara's from its
    compile (``Ruleset.warnings``: compacted or cached rules no longer carry them)."""
    findings = [_warning(w) for w in [*warnings, *(getattr(rules, "warnings", None) or [])]]
    for rule in rules:
        line = _line_of_rule(source, rule.identifier)
        severity, category = rule.meta.get("severity"), rule.meta.get("category")
        if severity is None:
            findings.append(Finding(line, f"rule {rule.identifier} has no severity meta ({', '.join(SEVERITIES)})"))
        elif severity not in SEVERITIES:
            findings.append(Finding(line, f"rule {rule.identifier}: severity {severity!r} is not one of {', '.join(SEVERITIES)}"))
        if not category:
            findings.append(Finding(line, f"rule {rule.identifier} has no category meta"))
    for match in TEXT_STRING.finditer(source):
        name, literal, modifiers = match.groups()
        length = len(_unescape(literal))
        if length < MIN_TEXT_STRING and "fullword" not in modifiers:
            findings.append(Finding(_line_at(source, match.start()), f"string {name} ({length} characters) is too short to be specific; use {MIN_TEXT_STRING}+ or fullword"))
    for match in HEX_STRING.finditer(source):
        name, body = match.groups()
        fixed = len(re.findall(r"[0-9A-Fa-f]{2}", re.sub(r"\[[^\]]*\]|\([^)]*\)|\?\?|[0-9A-Fa-f]\?|\?[0-9A-Fa-f]", " ", body)))
        if fixed < MIN_HEX_BYTES:
            findings.append(Finding(_line_at(source, match.start()), f"hex string {name} has {fixed} fixed byte(s); {MIN_HEX_BYTES}+ are needed to be specific"))
    for match in REGEX_STRING.finditer(source):
        name, pattern = match.groups()
        if UNBOUNDED.search(pattern):
            findings.append(Finding(_line_at(source, match.start()), f"regex {name} repeats any character without a bound (.*, [^x]+, .{{n,}}); bound it, e.g. {{1,64}}: it is slow in libyara"))
    return _unique(findings)


def duplicate_rule_names(packs: dict[str, str]) -> dict[str, list[str]]:
    """Rule name -> the packs defining it, for names defined in more than one pack."""
    seen: dict[str, list[str]] = {}
    for pack, source in sorted(packs.items()):
        for name in RULE_HEADER.findall(source):
            seen.setdefault(name, []).append(pack)
    return {name: where for name, where in seen.items() if len(where) > 1}


def _warning(text: str) -> Finding:
    match = LINE_PREFIX.match(text)
    if match:
        return Finding(int(match.group(1) or match.group(2)), f"libyara: {match.group(3)}")
    return Finding(None, f"libyara: {text}")


def _unescape(literal: str) -> str:
    return re.sub(r"\\x[0-9A-Fa-f]{2}|\\.", "_", literal)


def _line_at(source: str, offset: int) -> int:
    return source.count("\n", 0, offset) + 1


def _line_of_rule(source: str, identifier: str) -> int | None:
    found = re.search(rf"^[ \t]*(?:(?:private|global)\s+)*rule\s+{re.escape(identifier)}\b", source, re.M)
    return source.count("\n", 0, found.start()) + 1 if found else None


def _unique(findings: list[Finding]) -> list[Finding]:
    seen: set[tuple[int | None, str]] = set()
    out = []
    for finding in findings:
        key = (finding.line, finding.message)
        if key not in seen:
            seen.add(key)
            out.append(finding)
    return out
