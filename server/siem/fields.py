"""Reading the fields of an untrusted event dict the same way in every output format."""

from __future__ import annotations

from typing import Any

from agent.events import FINGERPRINT_MATCH, match_kind


def text(value: Any) -> str | None:
    """``value`` as text, or None when it is missing.

    Agents are untrusted, so a field meant to be a string may arrive as a number
    or a list; it is shown as text rather than dropped, since a reviewer would
    rather see odd data than none.
    """
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def match_dicts(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The event's matches that are objects (an agent's junk in ``matches`` is skipped)."""
    matches = event.get("matches")
    return [m for m in matches if isinstance(m, dict)] if isinstance(matches, list) else []


def rules_and_kinds(event: dict[str, Any]) -> dict[str, str]:
    """Distinct rule names of the event's matches in first-seen order, each with the kind of its first match."""
    rules: dict[str, str] = {}
    for match in match_dicts(event):
        name = match.get("rule")
        if isinstance(name, str) and name and name not in rules:
            rules[name] = match_kind(match)
    return rules


def rule_names(event: dict[str, Any]) -> list[str]:
    """Distinct rule names of the event's matches, in first-seen order.

    One rule often matches several members of an archive; the SIEM wants to know
    which rules fired, not how often. A fingerprint match's rule is its index's name.
    """
    return list(rules_and_kinds(event))


def rule_kinds(event: dict[str, Any]) -> list[str]:
    """The kind (``yara``, ``fingerprint``, ``protected``) of each of ``rule_names``, in the same order."""
    return list(rules_and_kinds(event).values())


def fingerprint_sources(event: dict[str, Any]) -> list[str]:
    """Distinct corpus files the event's fingerprint matches point at, in first-seen order."""
    sources = (m.get("source") for m in match_dicts(event) if match_kind(m) == FINGERPRINT_MATCH)
    return list(dict.fromkeys(text(s) or "" for s in sources if s is not None and s != ""))


def device_label(event: dict[str, Any]) -> str | None:
    """The event's removable device as "vendor model serial", skipping unknown parts."""
    device = event.get("device")
    if not isinstance(device, dict):
        return None
    parts = (text(device.get(key)) for key in ("vendor", "model", "serial"))
    label = " ".join(p for p in parts if p)
    return label or None


def triage_status(event: dict[str, Any]) -> str | None:
    """The reviewer's triage status of the event, when it has one."""
    triage = event.get("triage")
    return text(triage.get("status")) if isinstance(triage, dict) else None
