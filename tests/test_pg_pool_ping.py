"""PostgreSQL pool: connections pinged before use only after being idle, and replaced when the server dropped them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from server.db import engine as engine_module
from server.db.engine import Database
from tests.collector_env import PG_ADMIN_URL, _pg_available
from tests.waiting import wait_for


@pytest.fixture
def db() -> Iterator[Database]:
    if not _pg_available():
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}")
    database = Database(PG_ADMIN_URL, pool_size=1)
    yield database
    database.dispose()


def _backend_pid(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _alive(db: Database, pid: int) -> bool:
    with db.read() as conn:
        return bool(conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}).scalar_one())


def _count_pings(db: Database, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    pings: list[int] = []
    real = db.engine.dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        pings.append(1)
        return real(dbapi_connection)

    monkeypatch.setattr(db.engine.dialect, "do_ping", counted)
    return pings


def test_a_connection_in_use_is_not_pinged(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _backend_pid(db)
    pings = _count_pings(db, monkeypatch)
    for _ in range(5):
        assert _backend_pid(db) == first
    assert pings == []


def test_an_idle_connection_is_pinged_and_replaced_when_dropped(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _backend_pid(db)
    pings = _count_pings(db, monkeypatch)
    admin = Database(PG_ADMIN_URL)
    try:
        with admin.write() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first}).scalar_one()
        wait_for(lambda: not _alive(admin, first), message="the backend's exit")
    finally:
        admin.dispose()
    monkeypatch.setattr(engine_module, "PING_IDLE_S", 0.0)
    second = _backend_pid(db)
    assert second != first, "the dropped connection was replaced before use, not handed out"
    assert pings, "the idle connection was pinged"
