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
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_MMAP_BYTES = 256 << 20


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
        if self.dialect == "sqlite":
            self.engine = create_engine(self.url, pool_size=pool_size, max_overflow=20, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
            _configure_sqlite(self.engine)
        else:
            self.engine = create_engine(self.url, pool_size=pool_size, max_overflow=20, pool_pre_ping=True)

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

    def dispose(self) -> None:
        self.engine.dispose()


def _configure_sqlite(engine: Engine) -> None:
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
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("dlp_write") else "BEGIN")
