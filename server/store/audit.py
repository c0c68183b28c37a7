"""The append-only audit log of reviewer and admin actions, hash-chained so a gap shows.

Each entry's hash covers the previous entry's hash and the entry's own content, and the
``audit_head`` row holds the newest hash: deleting or editing any entry, or cutting off the
newest ones, breaks the chain that ``verify`` walks. Appenders first update the head row,
which takes the row lock on PostgreSQL and the write lock on SQLite, so concurrent collectors
extend the chain one at a time. The caller's address is recorded beside the entry but is not
chained, because address retention must be able to erase it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from server.db.tables import audit_checkpoints, audit_head, audit_log
from server.store.sql import insert, iso

GENESIS = "0" * 64


def _entry_hash(prev_hash: str, *, seq: int, at: datetime, actor: str, action: str, target: str, details: str) -> str:
    content = json.dumps([seq, iso(at), actor, action, target, details], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256((prev_hash + content).encode("utf-8")).hexdigest()


def append(
    conn: Connection,
    *,
    actor: str,
    action: str,
    target: str = "",
    details: dict[str, Any] | None = None,
    address: str | None = None,
    now: datetime,
) -> int:
    """Add one entry inside the caller's transaction, so the action and its record commit together."""
    # Truncate to what the chain hashes: iso() keeps milliseconds, so must the stored time.
    at = now.replace(microsecond=now.microsecond // 1000 * 1000)
    head = conn.execute(
        audit_head.update().where(audit_head.c.id == 1).values(seq=audit_head.c.seq + 1).returning(audit_head.c.seq, audit_head.c.hash)
    ).one()
    encoded = json.dumps(details or {}, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    digest = _entry_hash(head.hash, seq=head.seq, at=at, actor=actor, action=action, target=target, details=encoded)
    conn.execute(
        audit_log.insert().values(
            seq=head.seq, at=at, actor=actor, action=action, target=target, details=encoded, address=address, prev_hash=head.hash, hash=digest
        )
    )
    conn.execute(audit_head.update().where(audit_head.c.id == 1).values(hash=digest))
    return head.seq


@dataclass(frozen=True)
class ChainCheck:
    ok: bool
    entries: int
    problem: str | None = None
    """The first break found, e.g. "entry 17 is missing"."""


def verify(conn: Connection, *, since: int = 1, prev_hash: str | None = None) -> ChainCheck:
    """Walk the chain from entry ``since`` (default: the first) to the head.

    From a later entry, that entry's stored ``prev_hash`` is taken as the start: the check then
    proves that nothing from there to the head was altered, removed or inserted, at a cost that
    grows with that span rather than with the collector's whole history (a case's evidence file
    checks from the case's first entry). ``prev_hash``, when given, is what entry ``since`` must
    follow (a checkpoint's hash). ``entries`` counts the entries walked.
    """
    since = max(1, since)
    expected_seq, count = since, 0
    if prev_hash is None and since == 1:
        prev_hash = GENESIS
    elif prev_hash is None:
        start = conn.execute(select(audit_log.c.prev_hash).where(audit_log.c.seq == since)).scalar()
        if start is None:
            return ChainCheck(False, 0, f"entry {since} is missing")
        prev_hash = start
    # yield_per on the statement: on the connection it would stay set for the caller's later statements.
    rows = conn.execute(select(audit_log).where(audit_log.c.seq >= since).order_by(audit_log.c.seq).execution_options(yield_per=1000))
    for row in rows:
        if row.seq != expected_seq:
            return ChainCheck(False, count, f"entry {expected_seq} is missing" if row.seq > expected_seq else f"entry {row.seq} repeats")
        if row.prev_hash != prev_hash:
            return ChainCheck(False, count, f"entry {row.seq} does not follow entry {row.seq - 1}")
        digest = _entry_hash(prev_hash, seq=row.seq, at=row.at, actor=row.actor, action=row.action, target=row.target, details=row.details)
        if digest != row.hash:
            return ChainCheck(False, count, f"entry {row.seq} was altered")
        prev_hash, expected_seq, count = digest, expected_seq + 1, count + 1
    head = conn.execute(select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)).one()
    if head.seq != expected_seq - 1 or head.hash != prev_hash:
        return ChainCheck(False, count, f"the newest entries after {expected_seq - 1} were removed")
    return ChainCheck(True, count)


def checkpoint(conn: Connection) -> tuple[ChainCheck, int, str] | tuple[ChainCheck, None, None]:
    """Walk the whole chain: (check, seq, hash) of its last entry when intact, to be recorded with
    ``record_checkpoint`` (run this in a read transaction: the walk takes a second per 35,000 entries)."""
    check = verify(conn)
    if not check.ok or not check.entries:
        return check, None, None
    digest = conn.execute(select(audit_log.c.hash).where(audit_log.c.seq == check.entries)).scalar_one()
    return check, check.entries, digest


def record_checkpoint(conn: Connection, *, seq: int, digest: str, now: datetime) -> None:
    conn.execute(insert(conn, audit_checkpoints).values(seq=seq, hash=digest, verified_at=now).on_conflict_do_nothing(index_elements=[audit_checkpoints.c.seq]))


@dataclass(frozen=True)
class SpanCheck:
    check: ChainCheck
    checkpoint: dict[str, Any] | None
    """The checkpoint the walk started from (``seq``, ``verified_at``), None when it started at ``since``."""


def verify_span(conn: Connection, *, since: int) -> SpanCheck:
    """Check the chain from entry ``since`` to the head, starting at the newest checkpoint at or after it.

    Entries from ``since`` up to that checkpoint were found intact by a full walk when it was
    recorded, and the checkpoint's entry must still carry the hash recorded then; the rest is walked
    now. So a check costs what was appended since the last checkpoint, not the whole history.
    """
    mark = conn.execute(select(audit_checkpoints).where(audit_checkpoints.c.seq >= since).order_by(audit_checkpoints.c.seq.desc()).limit(1)).first()
    if mark is None:
        return SpanCheck(verify(conn, since=since), None)
    stored = conn.execute(select(audit_log.c.hash).where(audit_log.c.seq == mark.seq)).scalar()
    shown = {"seq": mark.seq, "verified_at": iso(mark.verified_at)}
    if stored != mark.hash:
        return SpanCheck(ChainCheck(False, 0, f"entry {mark.seq} changed after it was verified"), shown)
    head = conn.execute(select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)).one()
    if head.seq == mark.seq:
        intact = head.hash == mark.hash
        return SpanCheck(ChainCheck(intact, 0, None if intact else f"the newest entries after {mark.seq} were removed"), shown)
    return SpanCheck(verify(conn, since=mark.seq + 1, prev_hash=mark.hash), shown)


def list_entries(conn: Connection, *, limit: int, before: int | None = None) -> list[dict[str, Any]]:
    query = select(audit_log).order_by(audit_log.c.seq.desc()).limit(limit)
    if before is not None:
        query = query.where(audit_log.c.seq < before)
    return [
        {
            "seq": row.seq,
            "at": iso(row.at),
            "actor": row.actor,
            "action": row.action,
            "target": row.target,
            "details": json.loads(row.details),
            "address": row.address,
            "hash": row.hash,
        }
        for row in conn.execute(query)
    ]
