"""The spool: the agent's durable SQLite outbox between policy and shipper.

An event ``put`` here survives the process being killed (WAL, each put its own
committed transaction). The shipper leases batches, posts them and acks them by
lease id; a lease that expires (a crashed shipper) makes its events leasable again.

The size cap counts the JSON bodies of the events in the spool, not the size of
the file: SQLite adds page, index and WAL overhead, and the file never shrinks
(freed pages are reused). When the cap is reached the oldest routine events go
first; matched events are never deleted to make room, so a spool full of matches
refuses new events. Every drop is counted and reported as a ``spool.dropped`` event.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import pathlib
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Self

from agent import events as contract
from agent.private import create_private_file, make_private_dir, tighten_file

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000
_SIDE_FILES = ("-wal", "-shm", "-journal")


class SpoolError(Exception):
    """The spool could not be opened, read or written."""


class SpoolFull(SpoolError):
    """SQLite reported the disk (or the database) full; retry later."""


@dataclasses.dataclass(frozen=True)
class Lease:
    """Events handed to the shipper until it acks or releases ``id``."""

    id: str
    events: list[dict[str, Any]]


def _create_tables(db: sqlite3.Connection) -> None:
    statements = (
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            created_at REAL NOT NULL,
            matched INTEGER NOT NULL,
            body TEXT NOT NULL,
            size INTEGER NOT NULL,
            lease_id TEXT,
            lease_expires REAL
        )""",
        "CREATE INDEX events_routine ON events(seq) WHERE matched = 0",
        "CREATE INDEX events_lease ON events(lease_id)",
        "CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        # The spool's own bookkeeping (byte total, drop counter, pending drop event), kept apart
        # from `state` so nothing another module records can clobber it.
        "CREATE TABLE spool_meta (key TEXT PRIMARY KEY, value NOT NULL)",
        "INSERT INTO spool_meta VALUES ('bytes', 0), ('dropped_total', 0)",
        # Triggers keep the byte total exact inside every transaction, so the cap check
        # of each put does not sum the whole table.
        """CREATE TRIGGER events_bytes_insert AFTER INSERT ON events BEGIN
            UPDATE spool_meta SET value = value + NEW.size WHERE key = 'bytes'; END""",
        """CREATE TRIGGER events_bytes_delete AFTER DELETE ON events BEGIN
            UPDATE spool_meta SET value = value - OLD.size WHERE key = 'bytes'; END""",
        """CREATE TRIGGER events_bytes_update AFTER UPDATE OF size ON events BEGIN
            UPDATE spool_meta SET value = value + NEW.size - OLD.size WHERE key = 'bytes'; END""",
    )
    for statement in statements:
        db.execute(statement)


# Schema upgrade steps, applied in order at open; step N brings the schema to version N.
# Append a function to change the schema; never edit or reorder a released step.
UPGRADES: list[Callable[[sqlite3.Connection], None]] = [_create_tables]


class SpoolReader:
    """Read access to a spool; what ``Spool.open_readonly`` returns to status readers."""

    def __init__(self, path: str, db: sqlite3.Connection):
        self.path = path
        self._db: sqlite3.Connection | None = db
        self._lock = threading.Lock()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; harmless when already closed."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def depth(self) -> int:
        with self._transaction(write=False) as db:
            return db.execute("SELECT COUNT(*) FROM events").fetchone()[0]

    def bytes_used(self) -> int:
        with self._transaction(write=False) as db:
            return _meta(db, "bytes")

    def dropped_total(self) -> int:
        with self._transaction(write=False) as db:
            return _meta(db, "dropped_total")

    def stats(self) -> dict[str, Any]:
        """Depth, bytes, dropped_total, matched count and oldest created_at (epoch seconds or None)."""
        with self._transaction(write=False) as db:
            depth, matched, oldest = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(matched), 0), MIN(created_at) FROM events"
            ).fetchone()
            return {
                "depth": depth,
                "bytes": _meta(db, "bytes"),
                "dropped_total": _meta(db, "dropped_total"),
                "oldest_created_at": oldest,
                "matched": matched,
            }

    def peek(self, limit: int = 100) -> list[dict[str, Any]]:
        """The oldest ``limit`` events, leased or not, without touching them (for status and tests)."""
        with self._transaction(write=False) as db:
            rows = db.execute("SELECT body FROM events ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [json.loads(body) for (body,) in rows]

    def get_state(self, key: str, default: Any = None) -> Any:
        with self._transaction(write=False) as db:
            row = db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def all_state(self) -> dict[str, Any]:
        with self._transaction(write=False) as db:
            rows = db.execute("SELECT key, value FROM state ORDER BY key").fetchall()
        return {key: json.loads(value) for key, value in rows}

    @contextlib.contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction under the lock: committed on success, rolled back on any error.

        Writers take the write lock up front (``BEGIN IMMEDIATE``) so a transaction never
        fails half-way trying to upgrade a read lock; readers get one consistent snapshot.
        """
        with self._lock:
            if self._db is None:
                raise SpoolError(f"spool {self.path} is closed")
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield db
                    db.execute("COMMIT")
                except BaseException:
                    # SQLite rolls back by itself on some errors (SQLITE_FULL among them).
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise _translate(self.path, exc) from exc

    def _schema_version(self, db: sqlite3.Connection) -> int:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").fetchone():
            return 0
        version = db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
        if version > len(UPGRADES):
            raise SpoolError(
                f"spool {self.path} has schema version {version}, newer than this agent knows "
                f"({len(UPGRADES)}); upgrade the agent or move the file away"
            )
        return version


class Spool(SpoolReader):
    """The writable spool, shared by scanner threads (put) and the shipper thread (lease/ack).

    Args:
        path: the SQLite file, created when missing.
        max_bytes: cap on the summed JSON body sizes of spooled events (not the file size).
        clock: epoch seconds; lease expiry and timestamps use it.
    """

    def __init__(self, path: str, *, max_bytes: int, clock: Callable[[], float] = time.time):
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        _prepare_private(path)
        super().__init__(path, _connect(path, readonly=False))
        self._max_bytes = max_bytes
        self._clock = clock
        try:
            with self._transaction() as db:
                self._upgrade(db)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def open_readonly(path: str) -> SpoolReader:
        """Open an existing spool for reading while the daemon may be writing it."""
        if not os.path.exists(path):
            raise SpoolError(f"no spool at {path}")
        reader = SpoolReader(path, _connect(path, readonly=True))
        try:
            with reader._transaction(write=False) as db:
                if reader._schema_version(db) == 0:
                    raise SpoolError(f"{path} is not an agent spool")
        except BaseException:
            reader.close()
            raise
        return reader

    def put(self, event: dict[str, Any], *, matched: bool) -> bool:
        """Store ``event`` (keyed by its ``"id"``) unless the size cap refuses it.

        Returns:
            True when stored or already in the spool, False when dropped by the cap.

        Raises:
            ValueError: the event has no string ``"id"``, or holds a NaN or infinity.
            TypeError: the event holds a value JSON cannot encode.
            SpoolFull: the disk is full; nothing was changed.
        """
        event_id = event.get("id")
        if not isinstance(event_id, str) or not event_id:
            raise ValueError("a spooled event needs a non-empty string 'id'")
        body = json.dumps(event, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        size = len(body.encode("utf-8"))
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM events WHERE id = ?", (event_id,)).fetchone():
                return True
            now = self._clock()
            victims = self._plan_room(db, size, now)
            if victims is None:
                self._record_drops(db, 1, now)
                return False
            if victims:
                db.executemany("DELETE FROM events WHERE seq = ?", [(seq,) for seq in victims])
                self._record_drops(db, len(victims), now)
            db.execute(
                "INSERT INTO events (id, created_at, matched, body, size) VALUES (?, ?, ?, ?, ?)",
                (event_id, now, int(matched), body, size),
            )
            return True

    def lease(self, limit: int, *, lease_seconds: float) -> Lease:
        """Lease up to ``limit`` of the oldest events not under an unexpired lease."""
        if limit <= 0:
            raise ValueError("limit must be positive")
        lease_id = uuid.uuid4().hex
        with self._transaction() as db:
            now = self._clock()
            rows = db.execute(
                "SELECT seq, body FROM events WHERE lease_id IS NULL OR lease_expires <= ? ORDER BY seq LIMIT ?",
                (now, limit),
            ).fetchall()
            db.executemany(
                "UPDATE events SET lease_id = ?, lease_expires = ? WHERE seq = ?",
                [(lease_id, now + lease_seconds, seq) for seq, _ in rows],
            )
            # A drop event that may have reached the collector is never rewritten: later drops start a new one.
            db.execute(
                "DELETE FROM spool_meta WHERE key = 'pending_drop' AND value IN (SELECT id FROM events WHERE lease_id = ?)",
                (lease_id,),
            )
        return Lease(lease_id, [json.loads(body) for _, body in rows])

    def ack(self, lease_id: str) -> int:
        """Delete the events still held by ``lease_id``; returns how many."""
        with self._transaction() as db:
            return db.execute("DELETE FROM events WHERE lease_id = ?", (lease_id,)).rowcount

    def release(self, lease_id: str) -> int:
        """Make the events still held by ``lease_id`` leasable again; returns how many."""
        with self._transaction() as db:
            return db.execute(
                "UPDATE events SET lease_id = NULL, lease_expires = NULL WHERE lease_id = ?", (lease_id,)
            ).rowcount

    def release_all(self) -> int:
        """End every lease: at start-up, leases can only be left over from a killed process."""
        with self._transaction() as db:
            return db.execute("UPDATE events SET lease_id = NULL, lease_expires = NULL WHERE lease_id IS NOT NULL").rowcount

    def set_state(self, key: str, value: Any) -> None:
        encoded = json.dumps(value, allow_nan=False)
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, encoded))

    def _upgrade(self, db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
        current = self._schema_version(db)
        for version, step in enumerate(UPGRADES[current:], start=current + 1):
            step(db)
            db.execute("INSERT INTO schema_version VALUES (?, ?)", (version, self._clock()))
            log.info("spool %s upgraded to schema version %d", self.path, version)

    def _plan_room(self, db: sqlite3.Connection, size: int, now: float) -> list[int] | None:
        """Seqs of the oldest routine events to delete so ``size`` more bytes fit, or None if nothing can.

        Deciding before deleting means a refused event never costs the events already held.
        """
        if size > self._max_bytes:
            return None
        excess = _meta(db, "bytes") + size - self._max_bytes
        victims: list[int] = []
        if excess <= 0:
            return victims
        freed = 0
        with contextlib.closing(
            db.execute(
                "SELECT seq, size FROM events WHERE matched = 0 AND (lease_id IS NULL OR lease_expires <= ?) ORDER BY seq",
                (now,),
            )
        ) as rows:
            for seq, victim_size in rows:
                victims.append(seq)
                freed += victim_size
                if freed >= excess:
                    return victims
        return None

    def _record_drops(self, db: sqlite3.Connection, count: int, now: float) -> None:
        """Count ``count`` dropped events and report them in the pending ``spool.dropped`` event."""
        db.execute("UPDATE spool_meta SET value = value + ? WHERE key = 'dropped_total'", (count,))
        pending = db.execute(
            "SELECT e.id, e.body FROM spool_meta m JOIN events e ON e.id = m.value WHERE m.key = 'pending_drop'"
        ).fetchone()
        if pending:
            drop_id, body = pending
            report = json.loads(body)
            report.update(dropped=report["dropped"] + count, occurred_at=_iso(now))
            encoded = json.dumps(report, separators=(",", ":"))
            db.execute("UPDATE events SET body = ?, size = ? WHERE id = ?", (encoded, len(encoded.encode()), drop_id))
            return
        drop_id = str(uuid.uuid4())
        report = {
            "id": drop_id,
            "schema": contract.SCHEMA_VERSION,
            "type": contract.SPOOL_DROPPED,
            "channel": contract.AGENT_TYPES[contract.SPOOL_DROPPED],
            "occurred_at": _iso(now),
            "first_dropped_at": _iso(now),
            "dropped": count,
        }
        encoded = json.dumps(report, separators=(",", ":"))
        # Inserted as matched: the report of a loss is never itself lost to the cap.
        db.execute(
            "INSERT INTO events (id, created_at, matched, body, size) VALUES (?, ?, 1, ?, ?)",
            (drop_id, now, encoded, len(encoded.encode())),
        )
        db.execute("INSERT OR REPLACE INTO spool_meta VALUES ('pending_drop', ?)", (drop_id,))


def _prepare_private(path: str) -> None:
    """The spool is 0600 in a directory created 0700, whatever the umask, before SQLite opens it.

    SQLite creates the WAL and shared-memory files with the database file's mode, so a database
    created 0600 here keeps its side files private too.
    """
    try:
        make_private_dir(os.path.dirname(os.path.abspath(path)))
        create_private_file(path)
        for suffix in _SIDE_FILES:  # left by an older agent under a looser umask
            tighten_file(path + suffix)
    except OSError as exc:
        raise SpoolError(f"spool {path}: cannot create it private (mode 0600): {exc.strerror or exc}") from exc


def _connect(path: str, *, readonly: bool) -> sqlite3.Connection:
    # isolation_level=None turns off the sqlite3 module's implicit BEGINs: every transaction
    # is an explicit one in SpoolReader._transaction. One connection is shared by threads
    # under the reader's lock, hence check_same_thread=False.
    try:
        if readonly:
            target = pathlib.Path(path).absolute().as_uri() + "?mode=ro"
            db = sqlite3.connect(target, uri=True, isolation_level=None, check_same_thread=False)
        else:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if not readonly:
                mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode != "wal":
                    log.warning("spool %s: WAL unavailable (journal mode %s); status readers may block writes", path, mode)
                # NORMAL in WAL mode: a commit survives the process being killed; only an OS
                # crash or power cut may lose the last commits.
                db.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            db.close()
            raise
    except sqlite3.Error as exc:
        raise _translate(path, exc) from exc
    return db


def _translate(path: str, exc: sqlite3.Error) -> SpoolError:
    if getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_FULL:
        return SpoolFull(f"spool {path}: disk full ({exc})")
    return SpoolError(f"spool {path}: {exc}")


def _meta(db: sqlite3.Connection, key: str) -> int:
    return db.execute("SELECT value FROM spool_meta WHERE key = ?", (key,)).fetchone()[0]


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
