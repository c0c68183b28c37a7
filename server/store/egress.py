"""Egress per vendor: the remotes and upload destinations its staff may use, and the verdict on each egress event.

A vendor's policy is a list of patterns (agent/egress/remotes.py: ``git.customer.com/**``,
``/srv/mirror/*``) and whether pushes and uploads to an allowed place are still reported.
The collector, not the agent, decides an egress event's severity from that policy when the
event arrives (``evaluate``): the agent's proposed severity is kept as its claim. Events to an
allowed place that the vendor does not want reported are not stored at all, yet acknowledged,
so the agent forgets them. Every change bumps ``version`` in the transaction of its audit entry.
Reading a policy takes the viewer's ``Scope`` (a vendor out of scope is not found); changes are
for admins, who see every vendor.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select

from agent.egress.remotes import remote_allowed, validate_pattern
from agent.events import (
    AGENT_CLAIMS,
    COLLECTOR_FIELDS,
    EGRESS_POLICY,
    GIT_CLONE,
    GIT_PUSH,
    GIT_REMOTE,
    NET_UPLOAD,
    SEVERITIES,
    worst_severity,
)
from server.db.tables import egress_policies
from server.errors import InvalidInput
from server.store import audit
from server.store import vendors as vendor_store
from server.store.scope import Scope
from server.store.sql import iso

CHANNEL = "egress"
MAX_PATTERNS = 500
"""Patterns per vendor: every egress event of the vendor is matched against each one."""


@dataclass(frozen=True)
class Policy:
    """What ``evaluate`` needs of a vendor's policy; the default allows nothing."""

    patterns: tuple[str, ...] = ()
    report_allowed: bool = False


@dataclass(frozen=True)
class Verdict:
    keep: bool
    """False: the event went to an allowed place and the vendor does not want those reported."""
    severity: str | None
    egress_policy: dict[str, Any]
    """``{"allowed": bool, "pattern": str | None}``, stored in the event as the collector's word."""


def _pattern(text: Any) -> str:
    if not isinstance(text, str):
        raise InvalidInput("a pattern must be text")
    try:
        text.encode("utf-8")  # a lone surrogate (JSON allows its escape) could not be stored
        return validate_pattern(text)
    except (ValueError, UnicodeEncodeError) as exc:
        named = repr(text[:100])
        raise InvalidInput(str(exc) if named in str(exc) else f"pattern {named}: {exc}") from None


def check_patterns(patterns: Iterable[Any]) -> list[str]:
    """``patterns`` validated and normalised, duplicates dropped (first kept), at most MAX_PATTERNS."""
    checked = list(dict.fromkeys(_pattern(p) for p in patterns))
    if len(checked) > MAX_PATTERNS:
        raise InvalidInput(f"a vendor allows at most {MAX_PATTERNS} remote patterns")
    return checked


def _public(vendor: str, row: Any) -> dict[str, Any]:
    if row is None:
        return {"vendor": vendor, "version": 0, "allowed_remotes": [], "report_allowed": False, "updated_at": None, "updated_by": None}
    return {
        "vendor": vendor,
        "version": row.version,
        "allowed_remotes": list(row.allowed_remotes),
        "report_allowed": bool(row.report_allowed),
        "updated_at": iso(row.updated_at),
        "updated_by": row.updated_by,
    }


def get_policy(conn: Connection, *, vendor: str, scope: Scope) -> dict[str, Any]:
    """The vendor's policy; one that was never set is version 0, allowing nothing (NotFound when
    the vendor is out of ``scope``)."""
    vendor_id = vendor_store.id_of(conn, vendor, scope)
    return _public(vendor, conn.execute(select(egress_policies).where(egress_policies.c.vendor == vendor_id)).first())


def set_policy(conn: Connection, *, vendor: str, allowed_remotes: Sequence[Any], report_allowed: bool, actor: str, address: str | None, now: datetime) -> dict[str, Any]:
    """Replace the vendor's allowed remotes and reporting choice (audited ``egress_policy.set``)."""
    checked = check_patterns(allowed_remotes)
    return _write(conn, vendor=vendor, patterns=checked, report_allowed=report_allowed, actor=actor, address=address, now=now, details={})


def change_policy(
    conn: Connection,
    *,
    vendor: str,
    add: Sequence[str] = (),
    remove: Sequence[str] = (),
    report_allowed: bool | None = None,
    actor: str,
    address: str | None,
    now: datetime,
) -> dict[str, Any]:
    """Add or remove patterns, or switch reporting of allowed egress (the CLI's steps; audited
    ``egress_policy.set`` naming what was added and removed). Removing a pattern the vendor does
    not have is refused, so a typo never passes for a revocation."""
    current = get_policy(conn, vendor=vendor, scope=Scope.everything())
    patterns = list(current["allowed_remotes"])
    gone = check_patterns(remove)
    missing = [p for p in gone if p not in patterns]
    if missing:
        raise InvalidInput(f"vendor {vendor!r} does not allow {', '.join(repr(p) for p in missing)}")
    added = [p for p in check_patterns(add) if p not in patterns]
    patterns = check_patterns([p for p in patterns if p not in gone] + added)
    report = current["report_allowed"] if report_allowed is None else report_allowed
    details = {"added": added, "removed": gone}
    return _write(conn, vendor=vendor, patterns=patterns, report_allowed=report, actor=actor, address=address, now=now, details=details)


def _write(
    conn: Connection,
    *,
    vendor: str,
    patterns: list[str],
    report_allowed: bool,
    actor: str,
    address: str | None,
    now: datetime,
    details: dict[str, Any],
) -> dict[str, Any]:
    vendor_id = vendor_store.id_of(conn, vendor)
    values = {"allowed_remotes": patterns, "report_allowed": report_allowed, "updated_at": now, "updated_by": actor}
    version = conn.execute(
        egress_policies.update().where(egress_policies.c.vendor == vendor_id).values(version=egress_policies.c.version + 1, **values).returning(egress_policies.c.version)
    ).scalar_one_or_none()
    if version is None:
        version = 1
        conn.execute(egress_policies.insert().values(vendor=vendor_id, version=1, **values))
    entry = {"allowed_remotes": patterns, "report_allowed": report_allowed, "version": version, **details}
    audit.append(conn, actor=actor, action="egress_policy.set", target=vendor, details=entry, address=address, now=now)
    return get_policy(conn, vendor=vendor, scope=Scope.everything())


_POLICY = select(egress_policies.c.allowed_remotes, egress_policies.c.report_allowed).where(egress_policies.c.vendor == bindparam("vendor_id"))
"""Built once: ingest runs it for every batch that holds egress events."""


def policy_for(conn: Connection, *, vendor_id: int) -> Policy:
    """The vendor's policy as ``evaluate`` uses it (by the vendors row id an agent's credential gives)."""
    row = conn.execute(_POLICY, {"vendor_id": vendor_id}).first()
    return Policy() if row is None else Policy(tuple(row.allowed_remotes), bool(row.report_allowed))


def _at_least(severity: str | None, floor: str) -> str:
    return worst_severity([severity, floor]) or floor


def evaluate(policy: Policy, record: Mapping[str, Any]) -> Verdict:
    """The collector's verdict on one egress record: whether to keep it, its severity, and why.

    Not allowed: a push is ``high`` when its repository is protected or its HEAD scan matched,
    else ``low``; a new remote and a clone ``medium``; an upload its worst match's severity but at
    least ``high``. Allowed and reported: ``low``. A type this collector does not know keeps the
    severity the agent proposed.
    """
    destination = record.get("destination")
    pattern = remote_allowed(destination, policy.patterns) if isinstance(destination, Mapping) and policy.patterns else None
    allowed = pattern is not None
    verdict = {"allowed": allowed, "pattern": pattern}
    if allowed:
        return Verdict(policy.report_allowed, "low", verdict)
    kind = record.get("type")
    matches = [m for m in record.get("matches") or () if isinstance(m, Mapping)]
    severity: str | None
    if kind == GIT_PUSH:
        repository = record.get("repository")
        protected = isinstance(repository, Mapping) and repository.get("protected") is True
        severity = "high" if protected or matches else "low"
    elif kind in (GIT_REMOTE, GIT_CLONE):
        severity = "medium"
    elif kind == NET_UPLOAD:
        severity = _at_least(worst_severity(m.get("severity") for m in matches), "high")
    else:
        proposed = record.get("severity")
        severity = proposed if proposed in SEVERITIES else None
    return Verdict(True, severity, verdict)


def judged_body(record: dict[str, Any], verdict: Verdict) -> dict[str, Any]:
    """The record as stored: the collector's severity and ``egress_policy``; whatever the agent sent
    under collector-owned names, and a severity of its own that differs, kept under ``agent_claims``
    (server/store/review.py shows an egress row's ``egress_policy`` and ``agent_claims`` as the collector's)."""
    body = dict(record)
    claims = {name: body.pop(name) for name in sorted(COLLECTOR_FIELDS & body.keys())}
    proposed = body.get("severity")
    if proposed is not None and proposed != verdict.severity:
        claims["severity"] = proposed
    body["severity"] = verdict.severity
    body[EGRESS_POLICY] = verdict.egress_policy
    if claims:
        body[AGENT_CLAIMS] = claims
    return body


Entry = tuple[dict[str, Any], datetime, str | None]
"""One record of a batch as ingest holds it: its column values, when it occurred, its encoded body."""


def apply(conn: Connection, *, vendor_id: int, entries: dict[str, Entry]) -> tuple[dict[str, Entry], list[str]]:
    """Judge the batch's egress records (the vendor's policy read once): the entries to store,
    egress ones rewritten with the collector's verdict, and the ids of those left unstored."""
    policy = policy_for(conn, vendor_id=vendor_id)
    kept: dict[str, Entry] = {}
    suppressed: list[str] = []
    for event_id, (record, occurred_at, body) in entries.items():
        if record["channel"] != CHANNEL:
            kept[event_id] = (record, occurred_at, body)
            continue
        full = json.loads(body) if body is not None else record
        verdict = evaluate(policy, full)
        if not verdict.keep:
            suppressed.append(event_id)
            continue
        judged = judged_body(full, verdict)
        kept[event_id] = ({**record, "severity": verdict.severity}, occurred_at, json.dumps(judged, ensure_ascii=False, separators=(",", ":")))
    return kept, suppressed
