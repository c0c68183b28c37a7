"""One database handle for the collector: SQLite (WAL) by default, PostgreSQL by URL.

Every write goes through ``Database.write()``. On SQLite that transaction starts with
``BEGIN IMMEDIATE``: a deferred transaction that reads and then writes can fail at once with
"database is locked" when another writer got in between, which would surface as 500s under
ingest load; taking the write lock up front makes writers queue on ``busy_timeout`` instead.
Within one process, SQLite writers first queue on a thread lock: a writer waiting in SQLite's
busy handler sleeps in steps growing to 100 ms and is not woken when the lock frees, so under
concurrent calls the database sat idle between transactions and throughput collapsed (see
docs/performance.md); the thread lock hands over at once. Other processes still queue on
``busy_timeout``. Reads use plain deferred transactions and never block writers in WAL mode.

Copying the WAL back into the database file (a checkpoint) is SQLite's autocheckpoint by
default: the writer whose commit takes the WAL past 1,000 pages copies it, inside its commit and
so inside the thread lock, and every other writer of the process waits for the copy (and its
fsyncs) too. A collector that serves runs ``checkpoint`` from a thread of its own instead
(server/maintenance.py calls ``checkpoint_in_background``): a PASSIVE checkpoint takes no write
lock, so writers go on committing while it copies. Writers keep an autocheckpoint at
``WAL_BACKSTOP_PAGES``, which bounds the WAL if that thread falls behind or stops, and which under
unbroken writing restarts the WAL from its beginning (a WAL restarts only once every page in it
was copied, which a writer's own checkpoint, holding the thread lock, ensures; the background
thread has copied nearly all of it by then, so that writer's share is small).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError

SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_MMAP_BYTES = 256 << 20
SQLITE_AUTOCHECKPOINT_PAGES = 1_000
"""SQLite's own default: what writers copy at when no thread checkpoints in the background."""
WAL_BACKSTOP_PAGES = 10_000
"""Writers' autocheckpoint while a thread checkpoints in the background: about 40 MB of WAL."""
PING_IDLE_S = 2.0
"""PostgreSQL: pooled connections idle this long are pinged before use (``_ping_when_idle``)."""


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` as customers write it and use the psycopg 3 driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


class Database:
    """The engine plus the read/write transaction discipline described above."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = normalize_url(url)
        self.dialect = make_url(self.url).get_backend_name()
        # Re-entrant, so a nested write in one thread still waits on busy_timeout as before.
        self._writer_turn: AbstractContextManager[Any] = threading.RLock() if self.dialect == "sqlite" else nullcontext()
        self.wrote = threading.Event()
        """Set when a write transaction commits: a SQLite collector's background checkpoint waits for it."""
        self._autocheckpoint = SQLITE_AUTOCHECKPOINT_PAGES
        if self.dialect == "sqlite":
            self.engine = create_engine(self.url, pool_size=pool_size, max_overflow=20, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
            _configure_sqlite(self.engine, self)
        else:
            self.engine = create_engine(self.url, pool_size=pool_size, max_overflow=20)
            _ping_when_idle(self.engine)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            with conn.begin():
                yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with self._writer_turn, self.engine.connect().execution_options(dlp_write=True) as conn:
            with conn.begin():
                yield conn
        self.wrote.set()

    def checkpoint_in_background(self, running: bool = True) -> None:
        """While ``running``, writers leave the WAL's copying to ``checkpoint``, which the caller
        runs from a thread of its own after writes (``wrote``), down to the backstop (module docstring)."""
        self._autocheckpoint = WAL_BACKSTOP_PAGES if running else SQLITE_AUTOCHECKPOINT_PAGES

    def checkpoint(self) -> None:
        """SQLite: copy the WAL's committed pages into the database file now (PASSIVE: no lock
        that writers or readers wait for). Nothing to do on PostgreSQL."""
        if not self.is_sqlite:
            return
        with self.engine.connect() as conn:
            # On the driver's connection, which runs it outside a transaction (pysqlite's
            # isolation_level is None here); SQLAlchemy's would first begin one.
            driver = conn.connection.driver_connection
            assert driver is not None
            driver.execute("PRAGMA wal_checkpoint(PASSIVE)").close()

    def dispose(self) -> None:
        self.engine.dispose()


def _ping_when_idle(engine: Engine) -> None:
    """PostgreSQL: a pooled connection idle for ``PING_IDLE_S`` or more is pinged before use and
    replaced if the server dropped it (a restart, an idle timeout, a proxy); one used within that
    time is handed out as it is. SQLAlchemy's ``pool_pre_ping`` pinged on every checkout: a round
    trip in every transaction, a sixth of an ingest batch's (docs/performance.md). A connection
    that died within the window fails its statement instead; SQLAlchemy then drops every pooled
    connection as old as it, and the caller's retry (an agent's batch or heartbeat) gets a new one."""

    @event.listens_for(engine, "connect")
    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_connection: Any, record: Any) -> None:
        record.info[_RETURNED_AT] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get(_RETURNED_AT, 0.0) < PING_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(f"pooled connection dropped while idle: {exc}") from exc


_RETURNED_AT = "dlp.returned_at"


def _configure_sqlite(engine: Engine, db: Database) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below emit BEGIN itself (pysqlite's own is deferred only).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Reads of the indexes ingest updates come from the OS page cache without a copy into
        # each connection's own cache: 10-15% less CPU per ingest batch (docs/performance.md).
        cursor.execute(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if not conn.get_execution_options().get("dlp_write"):
            conn.exec_driver_sql("BEGIN")
            return
        # Per pooled connection, so a connection opened before ``checkpoint_in_background`` follows it too.
        if conn.info.get(_AUTOCHECKPOINT) != db._autocheckpoint:
            conn.exec_driver_sql(f"PRAGMA wal_autocheckpoint={db._autocheckpoint}")
            conn.info[_AUTOCHECKPOINT] = db._autocheckpoint
        conn.exec_driver_sql("BEGIN IMMEDIATE")


_AUTOCHECKPOINT = "dlp.autocheckpoint"
