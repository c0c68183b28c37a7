"""Reading the fields of an untrusted event dict the same way in every output format."""

from __future__ import annotations

from typing import Any


def text(value: Any) -> str | None:
    """``value`` as text, or None when it is missing.

    Agents are untrusted, so a field meant to be a string may arrive as a number
    or a list; it is shown as text rather than dropped, since a reviewer would
    rather see odd data than none.
    """
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def rule_names(event: dict[str, Any]) -> list[str]:
    """Distinct rule names of the event's matches, in first-seen order.

    One rule often matches several members of an archive; the SIEM wants to know
    which rules fired, not how often.
    """
    matches = event.get("matches")
    if not isinstance(matches, list):
        return []
    names = (m.get("rule") for m in matches if isinstance(m, dict))
    return list(dict.fromkeys(n for n in names if isinstance(n, str) and n))


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
