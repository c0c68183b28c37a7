"""Creating a collector's data directory and database, and opening an existing one."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from server.collector import Collector
from server.db.engine import Database
from server.db.migrate import current_revision, head_revision, upgrade
from server.db.tables import users
from server.keys import create_keys
from server.settings import (
    DEFAULT_SETTINGS_TOML,
    SETTINGS_FILE,
    ServerSettings,
    load_settings,
)
from server.store import audit
from server.store import users as user_store
from server.store.sql import utcnow

FIRST_ADMIN = "admin"


class NotInitialized(Exception):
    """The data directory or database has not been set up with ``dlp-server init``."""


@dataclass(frozen=True)
class InitResult:
    created: bool
    admin_user: str | None
    admin_password: str | None
    api_token: str | None


def initialize(data_dir: str | Path | None) -> InitResult:
    """Set up everything a collector needs; safe to run again (it then changes nothing but the schema)."""
    root = Path(data_dir).expanduser().resolve() if data_dir else None
    if root is not None:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        settings_path = root / SETTINGS_FILE
        if not settings_path.exists():
            settings_path.write_text(DEFAULT_SETTINGS_TOML, encoding="utf-8")
    settings = load_settings(root)
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(settings.data_dir, 0o700)
    create_keys(settings.data_dir, settings.signing_key_path)
    db = Database(settings.effective_database_url)
    try:
        upgrade(db)
        now = utcnow()
        with db.write() as conn:
            if conn.execute(select(func.count()).select_from(users)).scalar_one():
                return InitResult(False, None, None, None)
            user, password, token = user_store.create(conn, name=FIRST_ADMIN, role="admin", now=now)
            audit.append(conn, actor="dlp-server init", action="user.create", target=user.name, details={"role": "admin"}, now=now)
        return InitResult(True, user.name, password, token)
    finally:
        db.dispose()


def open_collector(settings: ServerSettings, *, migrate: bool = False) -> Collector:
    """A collector over an initialised data directory; ``migrate`` applies pending schema changes."""
    if not settings.data_dir.is_dir() or not settings.signing_key_path.exists():
        raise NotInitialized(f"{settings.data_dir} is not a collector data directory; run dlp-server init --data-dir {settings.data_dir}")
    db = Database(settings.effective_database_url)
    if migrate:
        upgrade(db)
    elif current_revision(db) != head_revision():
        db.dispose()
        raise NotInitialized("the database schema is not current; run dlp-server init (or serve, which migrates)")
    return Collector(settings, db=db)
