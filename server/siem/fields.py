"""Reading the fields of an untrusted event dict the same way in every output format."""

from __future__ import annotations

from typing import Any

from agent.events import DESTINATION_FIELDS, EGRESS_POLICY, FINGERPRINT_MATCH, match_kind


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


PROCESS_LEVELS = 9
"""The process and at most 8 parents (server/api/schemas.py ``MAX_PARENTS``) are shown; older rows may hold more."""
_PAST = {
    "allow": "allowed", "read-only": "made read-only", "block": "blocked", "clear": "cleared",
    "quarantine": "quarantined", "release": "released", "delete": "deleted",
}  # fmt: skip


def _number(value: Any) -> str | None:
    """An integer field as text; anything else (agents are untrusted) as None rather than as a number."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else None


def exe_name(exe: Any) -> str | None:
    """An executable's base name (``/usr/bin/cp`` -> ``cp``, ``C:\\Tools\\x.exe`` -> ``x.exe``); None when unknown."""
    path = text(exe)
    return (path.replace("\\", "/").rsplit("/", 1)[-1] or None) if path else None


def process_facts(value: Any) -> dict[str, str | None] | None:
    """One process of an event (its ``process`` or one of its parents) as text: ``name`` is the
    executable's base name; None when ``value`` is not an object."""
    if not isinstance(value, dict):
        return None
    exe = text(value.get("exe"))
    return {
        "name": exe_name(exe),
        "exe": exe,
        "pid": _number(value.get("pid")),
        "cmdline": text(value.get("cmdline")),
        "uid": _number(value.get("uid")),
        "user": text(value.get("user")),
        "ppid": _number(value.get("ppid")),
    }


def process_chain(event: dict[str, Any]) -> list[dict[str, str | None]]:
    """The event's process then its parents, nearest first, as ``process_facts``; empty when unknown."""
    process = event.get("process")
    first = process_facts(process)
    if first is None:
        return []
    parents = process.get("parents") if isinstance(process, dict) else None
    chain = [first, *(p for p in map(process_facts, parents if isinstance(parents, list) else []) if p is not None)]
    return chain[:PROCESS_LEVELS]


def enforcement_facts(event: dict[str, Any]) -> dict[str, str | None] | None:
    """The event's ``enforcement`` as text: ``action``, ``outcome`` (``done``, ``not done`` or ``audit``),
    ``summary`` (what a reviewer reads: "cleared", "would have cleared", "tried to clear: not done")
    and ``detail``; None when the event has none."""
    enforcement = event.get("enforcement")
    if not isinstance(enforcement, dict):
        return None
    action = text(enforcement.get("action"))
    audit = enforcement.get("mode") == "audit"
    done = enforcement.get("done") is True
    past = _PAST.get(action or "", action or "acted")
    if audit:
        outcome, summary = "audit", f"would have {past} (audit mode)"
    elif done:
        outcome, summary = "done", past
    else:
        outcome, summary = "not done", f"tried: {action or 'an action'}, not done"
    return {"action": action, "outcome": outcome, "summary": summary, "detail": text(enforcement.get("detail"))}


def destination_facts(event: dict[str, Any]) -> dict[str, str | None] | None:
    """An egress event's ``destination`` (agent/events.py DESTINATION_FIELDS) as text, the host
    lower-cased as the collector filters it; None when the event has none."""
    destination = event.get("destination")
    if not isinstance(destination, dict):
        return None
    facts = {name: text(destination.get(name)) for name in DESTINATION_FIELDS}
    facts["port"] = _number(destination.get("port"))
    host = facts["host"]
    facts["host"] = host.lower() if host else None
    return facts


def repository_facts(event: dict[str, Any]) -> dict[str, str | None] | None:
    """An egress event's ``repository``: ``path``, ``protected`` (``true``/``false``, None when not
    said), ``branch``, ``head`` as text; None when the event has none."""
    repository = event.get("repository")
    if not isinstance(repository, dict):
        return None
    protected = repository.get("protected")
    return {
        "path": text(repository.get("path")),
        "protected": ("true" if protected else "false") if isinstance(protected, bool) else None,
        "branch": text(repository.get("branch")),
        "head": text(repository.get("head")),
    }


def refs_list(event: dict[str, Any]) -> list[str]:
    """What a push named (its ``refs``) as text; empty when the event has none."""
    refs = event.get("refs")
    return [text(ref) or "" for ref in refs] if isinstance(refs, list) else []


def egress_verdict(event: dict[str, Any]) -> dict[str, str | None] | None:
    """The collector's ``egress_policy`` verdict: ``allowed`` (``true``/``false``), ``pattern`` and
    ``summary`` (what a reviewer reads); None on events without one."""
    policy = event.get(EGRESS_POLICY)
    if not isinstance(policy, dict):
        return None
    allowed = policy.get("allowed") is True
    pattern = text(policy.get("pattern"))
    summary = f"allowed by {pattern}" if allowed and pattern else "not on the allowed list"
    return {"allowed": "true" if allowed else "false", "pattern": pattern, "summary": summary}
