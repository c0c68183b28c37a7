"""SQLite WAL checkpoints of a serving collector: copied by a background thread, outside the writers' turn."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from server.db.engine import SQLITE_AUTOCHECKPOINT_PAGES, WAL_BACKSTOP_PAGES, Database
from server.maintenance import _Checkpointer
from tests.waiting import wait_for

PAGE = 4096
ROWS = 200


def _database(tmp_path: Path) -> tuple[Database, Path]:
    path = tmp_path / "collector.db"
    db = Database(f"sqlite:///{path}")
    with db.write() as conn:
        conn.exec_driver_sql("CREATE TABLE blobs (data BLOB NOT NULL)")
    db.checkpoint()
    return db, path


def _write_pages(db: Database, transactions: int = 4) -> int:
    """About ROWS pages of new data, in a few transactions; the writer's autocheckpoint setting."""
    for _ in range(transactions):
        with db.write() as conn:
            conn.exec_driver_sql("INSERT INTO blobs (data) VALUES (?)", [(os.urandom(PAGE),) for _ in range(ROWS // transactions)])
            setting = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one()
    return int(setting)


def test_writers_leave_the_copy_to_checkpoint_while_it_runs_in_the_background(tmp_path: Path) -> None:
    db, path = _database(tmp_path)
    try:
        assert _write_pages(db) == SQLITE_AUTOCHECKPOINT_PAGES
        db.checkpoint_in_background()
        before = path.stat().st_size
        assert _write_pages(db) == WAL_BACKSTOP_PAGES
        assert path.stat().st_size == before, "under the backstop, the writers copied nothing into the database file"
        db.checkpoint()
        assert path.stat().st_size >= before + ROWS * PAGE
        db.checkpoint_in_background(False)
        assert _write_pages(db) == SQLITE_AUTOCHECKPOINT_PAGES
    finally:
        db.dispose()


def test_checkpointer_copies_after_writes_and_stops(tmp_path: Path) -> None:
    db, path = _database(tmp_path)
    collector: Any = SimpleNamespace(db=db)
    thread = _Checkpointer(collector)
    thread.start()
    try:
        wait_for(lambda: db._autocheckpoint == WAL_BACKSTOP_PAGES, message="the checkpointer's start")
        before = path.stat().st_size
        _write_pages(db)
        wait_for(lambda: path.stat().st_size >= before + ROWS * PAGE, message="the written pages copied into the database file")
    finally:
        thread.stop()
        thread.stop()
        db.dispose()
    assert not thread.is_alive()
    assert db._autocheckpoint == SQLITE_AUTOCHECKPOINT_PAGES, "writers copy for themselves again once it stopped"


def test_checkpoint_is_nothing_on_postgresql() -> None:
    db = Database("postgresql://nobody@127.0.0.1:9/none")
    try:
        db.checkpoint()
    finally:
        db.dispose()
