"""Enrollment tokens (scoped to a vendor, limited uses, expiry) and turning one into an agent."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select

from server import credentials
from server.db.tables import agents, enrollment_tokens, vendors
from server.errors import Unauthorized
from server.store import vendors as vendor_store
from server.store.sql import iso


@dataclass(frozen=True)
class Enrolled:
    agent_id: str
    secret: str
    vendor: str

    @property
    def credential(self) -> str:
        """What the agent sends as ``Authorization: Bearer``."""
        return str(credentials.Token(credentials.AGENT_KIND, self.agent_id, self.secret))


def create_token(conn: Connection, *, vendor: str, uses: int, lifetime: timedelta, created_by: str, now: datetime) -> tuple[str, dict[str, Any]]:
    """A new enrollment token for ``vendor`` (created if new); returns (token, its public record)."""
    if uses < 1:
        raise ValueError("uses must be at least 1")
    vendor_id, _ = vendor_store.get_or_create(conn, name=vendor, now=now)
    token = credentials.new_token(credentials.ENROLL_KIND)
    conn.execute(
        enrollment_tokens.insert().values(
            id=token.id,
            vendor_id=vendor_id,
            secret_hash=credentials.hash_secret(token.secret),
            max_uses=uses,
            uses=0,
            expires_at=now + lifetime,
            created_by=created_by,
            created_at=now,
            revoked=False,
        )
    )
    return str(token), {"id": token.id, "vendor": vendor, "uses": uses, "expires_at": iso(now + lifetime)}


def enroll(
    conn: Connection,
    *,
    token: str,
    hostname: str,
    os_name: str,
    machine_id: str,
    agent_version: str,
    address: str | None,
    now: datetime,
) -> Enrolled:
    """Spend one use of ``token`` and register a new agent under the token's vendor."""
    parsed = credentials.parse_token(token, credentials.ENROLL_KIND)
    if parsed is None:
        raise Unauthorized("malformed enrollment token")
    row = conn.execute(select(enrollment_tokens.c.secret_hash).where(enrollment_tokens.c.id == parsed.id)).first()
    if row is None or not credentials.secret_matches(parsed.secret, row.secret_hash):
        raise Unauthorized("unknown enrollment token")
    # One conditional UPDATE spends a use, so two collectors cannot both take a token's last use.
    spent = conn.execute(
        enrollment_tokens.update()
        .where(
            enrollment_tokens.c.id == parsed.id,
            enrollment_tokens.c.uses < enrollment_tokens.c.max_uses,
            enrollment_tokens.c.expires_at > now,
            enrollment_tokens.c.revoked.is_(False),
        )
        .values(uses=enrollment_tokens.c.uses + 1)
        .returning(enrollment_tokens.c.vendor_id)
    ).first()
    if spent is None:
        raise Unauthorized("enrollment token expired, revoked or used up")
    vendor = conn.execute(select(vendors.c.name).where(vendors.c.id == spent.vendor_id)).scalar_one()
    agent_token = credentials.new_token(credentials.AGENT_KIND)
    conn.execute(
        agents.insert().values(
            id=agent_token.id,
            vendor_id=spent.vendor_id,
            secret_hash=credentials.hash_secret(agent_token.secret),
            hostname=hostname,
            os=os_name,
            machine_id=machine_id,
            agent_version=agent_version,
            spool_depth=0,
            dropped=0,
            status="online",
            enrolled_at=now,
            last_seen_at=now,
            last_ip=address,
        )
    )
    return Enrolled(agent_token.id, agent_token.secret, vendor)
