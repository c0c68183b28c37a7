"""The alert outbox: deliveries owed to the webhook and syslog targets, claimed with leases.

Ingest only inserts rows here (in its own transaction), so a slow or dead SIEM never slows
an agent down. Forwarders in any number of collector processes claim due rows with a lease
through one conditional UPDATE per row, so each delivery is attempted by one process at a time;
a process that dies mid-send leaves a lease that simply expires.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select

from server.db.tables import alert_outbox
from server.store import review

_MAX_BACKOFF = timedelta(hours=1)


def claim(conn: Connection, *, now: datetime, lease: timedelta, limit: int) -> list[tuple[int, str, dict[str, Any]]]:
    """Up to ``limit`` due deliveries as (outbox id, target, event), leased to the caller."""
    due = and_(
        alert_outbox.c.delivered_at.is_(None),
        alert_outbox.c.failed.is_(False),
        alert_outbox.c.next_attempt_at <= now,
        or_(alert_outbox.c.lease_until.is_(None), alert_outbox.c.lease_until < now),
    )
    candidates = conn.execute(select(alert_outbox.c.id).where(due).order_by(alert_outbox.c.id).limit(limit)).scalars().all()
    claimed: list[tuple[int, str, dict[str, Any]]] = []
    for outbox_id in candidates:
        row = conn.execute(
            alert_outbox.update()
            .where(alert_outbox.c.id == outbox_id, due)
            .values(lease_until=now + lease)
            .returning(alert_outbox.c.target, alert_outbox.c.event_seq)
        ).first()
        if row is None:
            continue
        event = review.by_seq(conn, seq=row.event_seq)
        if event is not None:
            claimed.append((outbox_id, row.target, event))
    return claimed


def delivered(conn: Connection, *, outbox_id: int, now: datetime) -> None:
    conn.execute(alert_outbox.update().where(alert_outbox.c.id == outbox_id).values(delivered_at=now, lease_until=None, last_error=None))


def attempt_failed(conn: Connection, *, outbox_id: int, error: str, now: datetime, max_attempts: int) -> bool:
    """Record a failed try and schedule the next with exponential backoff; True when it gave up."""
    attempts = conn.execute(select(alert_outbox.c.attempts).where(alert_outbox.c.id == outbox_id)).scalar_one() + 1
    delay = min(timedelta(seconds=5 * 2 ** min(attempts - 1, 20)), _MAX_BACKOFF)
    gave_up = attempts >= max_attempts
    conn.execute(
        alert_outbox.update()
        .where(alert_outbox.c.id == outbox_id)
        .values(attempts=attempts, next_attempt_at=now + delay, lease_until=None, last_error=error[:1000], failed=gave_up)
    )
    return gave_up


def backlog(conn: Connection) -> dict[str, int]:
    pending = conn.execute(
        select(func.count()).select_from(alert_outbox).where(alert_outbox.c.delivered_at.is_(None), alert_outbox.c.failed.is_(False))
    ).scalar_one()
    failed = conn.execute(select(func.count()).select_from(alert_outbox).where(alert_outbox.c.failed.is_(True))).scalar_one()
    return {"pending": pending, "failed": failed}
