"""The session log: every login session of reviewers and admins with where it came from and how it ended.

A session is its token row (``api_tokens`` of kind ``session``): the login writes the address and
country there, a logout writes ``ended_at``; otherwise the session ends when it expires (or was
revoked, for example by disabling the account). The ASN is looked up when the log is shown, so
no column holds it and the ASN data is loaded only by those who ask for it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select

from server.db.tables import api_tokens, users
from server.netaddr import Asn
from server.store.sql import iso

STATES = ("active", "logout", "expired", "revoked")
"""How a session stands: still usable, ended by logging out, run out, or revoked otherwise."""
MAX_PAGE = 200
MAX_OFFSET = 100_000


def page(
    conn: Connection,
    *,
    now: datetime,
    asn: Callable[[str | None], Asn | None],
    user: str | None = None,
    address: str | None = None,
    country: str | None = None,
    state: str | None = None,
    since: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> dict[str, Any]:
    """Sessions newest first, with ``total`` for the filters; ``address`` matches a prefix (``203.0.113.``)."""
    if state is not None and state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}")
    if since is not None:
        since = _in_utc(since, "since")
    limit, offset = max(1, min(limit, MAX_PAGE)), max(0, min(offset, MAX_OFFSET))
    conditions = [api_tokens.c.kind == "session"]
    if user:
        conditions.append(users.c.name == user)
    if address:
        escaped = address.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conditions.append(api_tokens.c.address.like(f"{escaped}%", escape="\\"))
    if country:
        conditions.append(api_tokens.c.country == country.upper())
    if since is not None:
        conditions.append(api_tokens.c.created_at >= since)
    if state is not None:
        conditions.append(_state_condition(state, now))
    base = select(api_tokens, users.c.name, users.c.role).join(users, users.c.id == api_tokens.c.user_id).where(*conditions)
    total = conn.execute(select(func.count()).select_from(base.subquery())).scalar_one()
    rows = conn.execute(base.order_by(api_tokens.c.created_at.desc(), api_tokens.c.id).limit(limit).offset(offset)).all()
    return {"items": [_public(row, now, asn) for row in rows], "total": total, "limit": limit, "offset": offset}


def _in_utc(value: datetime, name: str) -> datetime:
    """``value`` in UTC; ValueError (a 422) for a time without a zone, or one that leaves datetime's range in UTC."""
    if value.tzinfo is None:
        raise ValueError(f"{name} needs a time zone, e.g. 2026-11-24T09:00:00Z")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{name} is outside the years 1 to 9999 once converted to UTC") from None


def _state_condition(state: str, now: datetime) -> Any:
    expired = and_(api_tokens.c.expires_at.is_not(None), api_tokens.c.expires_at <= now)
    if state == "logout":
        return api_tokens.c.ended_at.is_not(None)
    if state == "revoked":
        return and_(api_tokens.c.ended_at.is_(None), api_tokens.c.revoked.is_(True))
    if state == "expired":
        return and_(api_tokens.c.ended_at.is_(None), api_tokens.c.revoked.is_(False), expired)
    return and_(api_tokens.c.revoked.is_(False), or_(api_tokens.c.expires_at.is_(None), api_tokens.c.expires_at > now))


def _public(row: Any, now: datetime, asn: Callable[[str | None], Asn | None]) -> dict[str, Any]:
    if row.ended_at is not None:
        state, ended = "logout", row.ended_at
    elif row.revoked:
        state, ended = "revoked", None
    elif row.expires_at is not None and row.expires_at <= now:
        state, ended = "expired", row.expires_at
    else:
        state, ended = "active", None
    network = asn(row.address)
    return {
        "user": row.name, "role": row.role, "address": row.address, "country": row.country,
        "asn": {"name": network.name, "network": network.network} if network else None,
        "started_at": iso(row.created_at), "ended_at": iso(ended), "state": state,
        "expires_at": iso(row.expires_at), "last_used_at": iso(row.last_used_at),
    }  # fmt: skip
