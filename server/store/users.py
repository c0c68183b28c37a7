"""Reviewers and admins: accounts, API tokens for scripts, login sessions (limits: ``logins``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select

from server import credentials
from server.db.tables import api_tokens, login_attempts, users, vendors
from server.errors import Conflict, NotFound, Unauthorized
from server.store.scope import Scope
from server.store.sql import iso

ROLES = ("admin", "reviewer", "vendor_lead")
SCOPED_ROLES = ("reviewer", "vendor_lead")
"""Roles that may be limited to some vendors; a vendor lead always is, to exactly one."""
# A token's last use is written at most this often, so a busy script is not a write per call.
_LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str
    vendor_ids: tuple[int, ...] | None = None
    """The vendors this account may see (reviewers and vendor leads); None: every vendor."""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_vendor_lead(self) -> bool:
        return self.role == "vendor_lead"

    @property
    def scope(self) -> Scope:
        """What this account may read (server/store/scope.py)."""
        if self.is_admin or self.vendor_ids is None:
            return Scope.everything()
        return Scope.vendors(self.vendor_ids, pseudonymize=self.is_vendor_lead)


def check_role(role: str, vendor_ids: tuple[int, ...] | None) -> None:
    """Refuse a role and vendor scope that do not fit together (ValueError says why)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if role == "admin" and vendor_ids is not None:
        raise ValueError("an admin sees every vendor; scope a reviewer instead")
    if role == "vendor_lead" and (vendor_ids is None or len(vendor_ids) != 1):
        raise ValueError("a vendor lead belongs to exactly one vendor (--vendor NAME)")
    if role == "reviewer" and vendor_ids is not None and not vendor_ids:
        raise ValueError("a scoped reviewer needs at least one vendor")


def _vendor_ids(value: Any) -> tuple[int, ...] | None:
    return None if value is None else tuple(int(v) for v in value)


def create(
    conn: Connection, *, name: str, role: str, now: datetime, password: str | None = None, vendor_ids: tuple[int, ...] | None = None
) -> tuple[User, str, str]:
    """A new user with a generated password and a first API token: (user, password, token).

    ``vendor_ids`` limits a reviewer (or, required, a vendor lead) to those vendors.
    """
    check_role(role, vendor_ids)
    if conn.execute(select(users.c.id).where(users.c.name == name)).first():
        raise Conflict(f"user {name!r} already exists")
    password = password or credentials.new_password()
    result = conn.execute(
        users.insert().values(
            name=name, role=role, vendor_ids=None if vendor_ids is None else sorted(vendor_ids),
            password_hash=credentials.hash_password(password), disabled=False, created_at=now,
        )
    )  # fmt: skip
    key = result.inserted_primary_key
    assert key is not None, "an INSERT of one row has its key"
    user = User(key[0], name, role, vendor_ids)
    token = issue_token(conn, user=user, kind="api", now=now)
    return user, password, token


def issue_token(
    conn: Connection, *, user: User, kind: str, now: datetime, lifetime: timedelta | None = None, address: str | None = None, country: str | None = None
) -> str:
    """A new token; a session's row keeps where its login came from (server/store/sessions.py lists them)."""
    token = credentials.new_token(credentials.USER_KIND)
    conn.execute(
        api_tokens.insert().values(
            id=token.id,
            user_id=user.id,
            kind=kind,
            secret_hash=credentials.hash_secret(token.secret),
            created_at=now,
            expires_at=now + lifetime if lifetime else None,
            revoked=False,
            address=address,
            country=country,
        )
    )
    return str(token)


def authenticate_token(conn: Connection, *, value: str | None, now: datetime) -> User:
    token = credentials.parse_token(value, credentials.USER_KIND)
    if token is None:
        raise Unauthorized("missing or malformed API token")
    row = conn.execute(
        select(api_tokens, users.c.name, users.c.role, users.c.vendor_ids, users.c.disabled)
        .join(users, users.c.id == api_tokens.c.user_id)
        .where(api_tokens.c.id == token.id)
    ).first()
    if row is None or not credentials.secret_matches(token.secret, row.secret_hash):
        raise Unauthorized("invalid API token")
    if row.revoked or row.disabled or (row.expires_at is not None and row.expires_at <= now):
        raise Unauthorized("API token expired or revoked")
    if row.last_used_at is None or now - row.last_used_at > _LAST_USED_RESOLUTION:
        conn.execute(api_tokens.update().where(api_tokens.c.id == token.id).values(last_used_at=now))
    return User(row.user_id, row.name, row.role, _vendor_ids(row.vendor_ids))


def revoke_token(conn: Connection, *, value: str | None, now: datetime | None = None) -> None:
    """Revoke a token; ``now`` (a logout) also records when its session ended."""
    token = credentials.parse_token(value, credentials.USER_KIND)
    if token is not None:
        ended = {"ended_at": now} if now is not None else {}
        conn.execute(api_tokens.update().where(api_tokens.c.id == token.id, api_tokens.c.ended_at.is_(None)).values(revoked=True, **ended))


def login(
    conn: Connection, *, name: str, password: str, address: str | None, now: datetime, session_lifetime: timedelta, country: str | None = None
) -> tuple[User, str] | None:
    """Check a password and open a session; every attempt is recorded with its address and country,
    and the session's token row keeps them too (the session log).

    A failure returns None rather than raising, so the caller commits the failed attempt
    (which ``logins`` counts) before answering 401. Call it through ``logins.attempt``.
    """
    row = conn.execute(select(users).where(users.c.name == name)).first()
    if row is None:
        credentials.dummy_password_check(password)
        matches = False
    else:
        matches = credentials.password_matches(password, row.password_hash)
    ok = matches and row is not None and not row.disabled
    reason = None if ok else "disabled" if matches else "password"
    conn.execute(login_attempts.insert().values(user_name=name[:128], address=address, country=country, success=ok, at=now, reason=reason))
    if not ok or row is None:
        return None
    user = User(row.id, row.name, row.role, _vendor_ids(row.vendor_ids))
    return user, issue_token(conn, user=user, kind="session", now=now, lifetime=session_lifetime, address=address, country=country)


def vendor_ids_of(conn: Connection, *, name: str) -> tuple[int, ...] | None:
    """The vendors an account name is limited to (None: every vendor, or no such account)."""
    value = conn.execute(select(users.c.vendor_ids).where(users.c.name == name[:128])).scalar_one_or_none()
    return _vendor_ids(value)


def get(conn: Connection, *, name: str) -> User:
    row = conn.execute(select(users.c.id, users.c.name, users.c.role, users.c.vendor_ids).where(users.c.name == name)).first()
    if row is None:
        raise NotFound(f"no user {name!r}")
    return User(row.id, row.name, row.role, _vendor_ids(row.vendor_ids))


def list_all(conn: Connection) -> list[dict[str, Any]]:
    """Every account with the names of the vendors it is limited to (``vendors`` None: every vendor)."""
    names = dict(conn.execute(select(vendors.c.id, vendors.c.name)).tuples().all())
    rows = conn.execute(select(users.c.name, users.c.role, users.c.vendor_ids, users.c.disabled, users.c.created_at).order_by(users.c.name))
    return [
        {
            "name": r.name, "role": r.role, "disabled": r.disabled, "created_at": iso(r.created_at),
            "vendors": None if r.vendor_ids is None else sorted(names.get(int(v), str(v)) for v in r.vendor_ids),
        }
        for r in rows
    ]  # fmt: skip
