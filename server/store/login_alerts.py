"""Alerts about reviewers' and admins' logins: a new country or network for an account, and bursts of failures.

Both become ``access`` events (agent/events.py) that the collector raises itself, with no agent
and no vendor, so they reach the event list of admins and unscoped reviewers and the alert
outbox like any agent event. History is the ``login_attempts`` table, so it reaches back as far
as address retention keeps it (``network.ip_retention_days``), and every collector over one
database sees the same history.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, or_, select

from agent.events import ACCESS_CHANNEL, ACCESS_FAILED_LOGINS, ACCESS_UNUSUAL_LOGIN
from server.db.tables import events, login_attempts, users
from server.netaddr import Asn
from server.store import ingest

UNUSUAL_SEVERITY = "medium"
FAILED_SEVERITY = "high"
FAILED_LIMIT = 5
"""Failed logins for one account name, or from one address, within ``FAILED_WINDOW`` that raise an event."""
FAILED_WINDOW = timedelta(minutes=10)
HISTORY_ADDRESSES = 500
"""The most recent distinct addresses of an account whose networks count as seen (each is one cached lookup)."""


@dataclass(frozen=True)
class Raising:
    """What raising an event needs from the collector: the ASN lookup and the alert targets."""

    asn: Callable[[str | None], Asn | None]
    alert_targets: Sequence[str] = ()
    alert_min_rank: int = 5


def asn_details(asn: Asn | None) -> dict[str, str] | None:
    return {"name": asn.name, "network": asn.network} if asn else None


def after_success(
    conn: Connection, *, name: str, address: str | None, country: str | None, now: datetime, raising: Raising
) -> int | None:
    """Raise ``access.unusual_login`` when an account with earlier logins logs in from a country or
    a network (ASN) none of them came from; the first login ever has nothing to compare with.
    Returns the event's seq when an alert was queued. Call after this login's attempt row exists."""
    # This login's own attempt is the name's newest row; everything before it is history.
    current = conn.execute(select(func.max(login_attempts.c.id)).where(login_attempts.c.user_name == name)).scalar_one()
    earlier = (login_attempts.c.user_name == name, login_attempts.c.success.is_(True), login_attempts.c.id < current)
    if conn.execute(select(func.count()).select_from(login_attempts).where(*earlier)).scalar_one() == 0:
        return None
    new: list[str] = []
    if country is not None:
        seen_country = conn.execute(select(login_attempts.c.id).where(*earlier, login_attempts.c.country == country).limit(1)).first()
        if seen_country is None:
            new.append("country")
    asn = raising.asn(address)
    if asn is not None:
        recent = (
            select(login_attempts.c.address, func.max(login_attempts.c.at).label("last"))
            .where(*earlier, login_attempts.c.address.is_not(None))
            .group_by(login_attempts.c.address)
            .order_by(func.max(login_attempts.c.at).desc())
            .limit(HISTORY_ADDRESSES)
        )
        seen = {found.name for found in (raising.asn(row.address) for row in conn.execute(recent)) if found}
        if asn.name not in seen:
            new.append("asn")
    if not new:
        return None
    details = {"user": name, "address": address, "country": country, "asn": asn_details(asn), "new": new}
    return _raise(conn, ACCESS_UNUSUAL_LOGIN, details, UNUSUAL_SEVERITY, address, country, now, raising)


def after_failure(conn: Connection, *, name: str, address: str | None, country: str | None, now: datetime, raising: Raising) -> list[int]:
    """Raise ``access.failed_logins`` when the name, or the address, reached ``FAILED_LIMIT`` failures
    within ``FAILED_WINDOW``, once per window for each. Returns the seqs of alerts queued."""
    since = now - FAILED_WINDOW
    # A refused network is recorded in denied_calls already; only password guesses count here.
    guessed = or_(login_attempts.c.reason.is_(None), login_attempts.c.reason != "denied_network")
    failed = (login_attempts.c.success.is_(False), login_attempts.c.at >= since, guessed)
    queued: list[int] = []
    checks: list[tuple[str, Any, Any]] = [("name", login_attempts.c.user_name == name, events.c.user_name == name)]
    if address:
        checks.append(("address", login_attempts.c.address == address, events.c.source_ip == address))
    for by, attempts_of, events_of in checks:
        failures = conn.execute(select(func.count()).select_from(login_attempts).where(*failed, attempts_of)).scalar_one()
        if failures < FAILED_LIMIT:
            continue
        raised = conn.execute(
            select(events.c.seq)
            .where(events.c.channel == ACCESS_CHANNEL, events.c.type == ACCESS_FAILED_LOGINS, events.c.occurred_at >= since, events_of)
            .limit(1)
        ).first()
        if raised is not None:
            continue
        # Only names of accounts are shown: the others are often passwords typed into the name field,
        # and this event reaches reviewers and the SIEM. They are counted instead.
        tried = select(login_attempts.c.user_name).distinct().where(*failed, attempts_of)
        account = login_attempts.c.user_name.in_(select(users.c.name))
        names = conn.execute(tried.where(account).order_by(login_attempts.c.user_name).limit(20)).scalars().all()
        others = conn.execute(select(func.count()).select_from(tried.where(~account).subquery())).scalar_one()
        details: dict[str, Any] = {"by": by, "address": address, "country": country, "failures": failures, "window_s": int(FAILED_WINDOW.total_seconds())}
        if by == "name":
            details["user"] = name
        else:
            details["names"] = list(names)
            details["other_names"] = others
        seq = _raise(conn, ACCESS_FAILED_LOGINS, details, FAILED_SEVERITY, address if by == "address" else None, country if by == "address" else None, now, raising)
        if seq is not None:
            queued.append(seq)
    return queued


def _raise(
    conn: Connection, kind: str, details: dict[str, Any], severity: str, address: str | None, country: str | None, now: datetime, raising: Raising
) -> int | None:
    _, seq = ingest.raise_access_event(
        conn, kind=kind, details=details, now=now, severity=severity, address=address, country=country,
        alert_targets=raising.alert_targets, alert_min_rank=raising.alert_min_rank,
    )  # fmt: skip
    return seq
