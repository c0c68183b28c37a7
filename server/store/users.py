"""Reviewers and admins: accounts, API tokens for scripts, login sessions (limits: ``logins``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select

from server import credentials
from server.db.tables import api_tokens, login_attempts, users
from server.errors import Conflict, NotFound, Unauthorized
from server.store.sql import iso

ROLES = ("admin", "reviewer")
# A token's last use is written at most this often, so a busy script is not a write per call.
_LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def create(conn: Connection, *, name: str, role: str, now: datetime, password: str | None = None) -> tuple[User, str, str]:
    """A new user with a generated password and a first API token: (user, password, token)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if conn.execute(select(users.c.id).where(users.c.name == name)).first():
        raise Conflict(f"user {name!r} already exists")
    password = password or credentials.new_password()
    result = conn.execute(users.insert().values(name=name, role=role, password_hash=credentials.hash_password(password), disabled=False, created_at=now))
    key = result.inserted_primary_key
    assert key is not None, "an INSERT of one row has its key"
    user = User(key[0], name, role)
    token = issue_token(conn, user=user, kind="api", now=now)
    return user, password, token


def issue_token(conn: Connection, *, user: User, kind: str, now: datetime, lifetime: timedelta | None = None) -> str:
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
        )
    )
    return str(token)


def authenticate_token(conn: Connection, *, value: str | None, now: datetime) -> User:
    token = credentials.parse_token(value, credentials.USER_KIND)
    if token is None:
        raise Unauthorized("missing or malformed API token")
    row = conn.execute(
        select(api_tokens, users.c.name, users.c.role, users.c.disabled)
        .join(users, users.c.id == api_tokens.c.user_id)
        .where(api_tokens.c.id == token.id)
    ).first()
    if row is None or not credentials.secret_matches(token.secret, row.secret_hash):
        raise Unauthorized("invalid API token")
    if row.revoked or row.disabled or (row.expires_at is not None and row.expires_at <= now):
        raise Unauthorized("API token expired or revoked")
    if row.last_used_at is None or now - row.last_used_at > _LAST_USED_RESOLUTION:
        conn.execute(api_tokens.update().where(api_tokens.c.id == token.id).values(last_used_at=now))
    return User(row.user_id, row.name, row.role)


def revoke_token(conn: Connection, *, value: str | None) -> None:
    token = credentials.parse_token(value, credentials.USER_KIND)
    if token is not None:
        conn.execute(api_tokens.update().where(api_tokens.c.id == token.id).values(revoked=True))


def login(conn: Connection, *, name: str, password: str, address: str | None, now: datetime, session_lifetime: timedelta) -> tuple[User, str] | None:
    """Check a password and open a session; every attempt is recorded with its address.

    A failure returns None rather than raising, so the caller commits the failed attempt
    (which ``logins`` counts) before answering 401. Call it through ``logins.attempt``.
    """
    row = conn.execute(select(users).where(users.c.name == name)).first()
    if row is None:
        credentials.dummy_password_check(password)
        ok = False
    else:
        ok = credentials.password_matches(password, row.password_hash) and not row.disabled
    conn.execute(login_attempts.insert().values(user_name=name[:128], address=address, success=ok, at=now))
    if not ok or row is None:
        return None
    user = User(row.id, row.name, row.role)
    return user, issue_token(conn, user=user, kind="session", now=now, lifetime=session_lifetime)


def get(conn: Connection, *, name: str) -> User:
    row = conn.execute(select(users.c.id, users.c.name, users.c.role).where(users.c.name == name)).first()
    if row is None:
        raise NotFound(f"no user {name!r}")
    return User(row.id, row.name, row.role)


def list_all(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(select(users.c.name, users.c.role, users.c.disabled, users.c.created_at).order_by(users.c.name))
    return [{"name": r.name, "role": r.role, "disabled": r.disabled, "created_at": iso(r.created_at)} for r in rows]
