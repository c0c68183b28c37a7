"""The failed-login rules every way of logging in shares (the API and the UI call these, nothing else).

A stranger who knows a user's name must not be able to lock that user out by failing on
purpose, so nothing is refused per name alone. Refusals (429) are per (name, address), which
stops guessing one account from one place, and per address, which stops one place spraying
many names. Failures for a name from everywhere only slow its logins down, by a wait that
doubles up to a cap: the real user, from a fresh address, still gets in. Counting happens in
the database, so every collector behind a load balancer counts the same attempts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Connection, func, or_, select

from server.db.tables import login_attempts
from server.errors import RateLimited
from server.store import addresses, audit, denylist, login_alerts
from server.store import users as user_store
from server.store.users import User

_NAME_LENGTH = 128


@dataclass(frozen=True)
class LoginRules:
    per_name_and_address: int
    """Failures of one name from one address before that pair is refused; also where the
    name's slowdown starts."""
    per_address: int
    window: timedelta
    max_delay_s: float


def check(conn: Connection, *, name: str, address: str | None, now: datetime, rules: LoginRules) -> float:
    """Raise RateLimited when the pair or the address failed too often; otherwise the seconds to
    wait before checking the password (0 unless the name failed often from anywhere)."""
    name = name[:_NAME_LENGTH]
    same_name = login_attempts.c.user_name == name
    same_address: ColumnElement[bool] = login_attempts.c.address == address if address else login_attempts.c.address.is_(None)
    counts = conn.execute(
        select(
            func.count().filter(same_name & same_address),
            func.count().filter(same_address),
            func.count().filter(same_name),
        ).where(login_attempts.c.at >= now - rules.window, login_attempts.c.success.is_(False), or_(same_name, same_address))
    ).one()
    pair, from_address, for_name = counts
    if pair >= rules.per_name_and_address or (address and from_address >= rules.per_address):
        raise RateLimited("too many failed logins from this address; try again later")
    if for_name < rules.per_name_and_address or rules.max_delay_s <= 0:
        return 0.0
    return float(min(rules.max_delay_s, 2.0 ** min(for_name - rules.per_name_and_address, 16)))


def attempt(
    conn: Connection,
    *,
    name: str,
    password: str,
    address: str | None,
    country: str | None,
    now: datetime,
    rules: LoginRules,
    session_lifetime: timedelta,
    via: str,
    raising: login_alerts.Raising | None = None,
) -> tuple[User, str] | None:
    """One login inside the caller's write transaction: refused (RateLimited) as ``check`` says,
    else the password checked, the attempt recorded, and a success or a failure audited.

    A wrong password returns None rather than raising, so the caller commits the failure
    (which the limits count and the audit log shows) before answering 401.
    """
    check(conn, name=name, address=address, now=now, rules=rules)
    outcome = user_store.login(conn, name=name, password=password, address=address, country=country, now=now, session_lifetime=session_lifetime)
    if outcome is None:
        # The name is the caller's claim, not an identity: it is the target, never the actor.
        audit.append(conn, actor="anonymous", action="user.login_failed", target=name[:_NAME_LENGTH], details={"via": via}, address=address, now=now)
        if raising is not None:
            login_alerts.after_failure(conn, name=name[:_NAME_LENGTH], address=address, country=country, now=now, raising=raising)
        return None
    user, _token = outcome
    if address:
        addresses.record_user(conn, user_id=user.id, address=address, country=country, now=now)
    audit.append(conn, actor=user.name, action="user.login", details={"via": via}, address=address, now=now)
    if raising is not None:
        login_alerts.after_success(conn, name=user.name, address=address, country=country, now=now, raising=raising)
    return outcome


def refuse_denied(conn: Connection, *, name: str, address: str, country: str | None, vendor_id: int | None, now: datetime, via: str) -> None:
    """Record a login refused because its address is in a denied network (``denylist``): an attempt
    with reason ``denied_network``, the refusal's counter, and an audit entry."""
    conn.execute(
        login_attempts.insert().values(user_name=name[:_NAME_LENGTH], address=address, country=country, success=False, at=now, reason="denied_network")
    )
    denylist.record_refusal(conn, kind="login", address=address, vendor_id=vendor_id, now=now)
    details = {"via": via, "reason": "denied_network"}
    audit.append(conn, actor="anonymous", action="user.login_failed", target=name[:_NAME_LENGTH], details=details, address=address, now=now)
