"""The ingest baseline: a bare FastAPI + SQLAlchemy Core app that stores a gzip JSON batch of events.

Usage: python bench/baseline_ingest.py --database-url URL --port N

``bench/ingest.py`` starts this in its own process under uvicorn, as ``dlp-server serve`` is,
and compares the two. It does what any ingest endpoint must (gunzip, parse the JSON, one
executemany INSERT per batch in one transaction on a table of the columns the collector
keeps) and nothing a product adds: no authentication, no validation beyond the JSON
parsing, no idempotency (no unique id), no secondary indexes, no address records. SQLite
gets the collector's settings (WAL, synchronous=NORMAL, a busy timeout) and the same pool.

``--indexes`` gives the table the collector's unique id and every secondary index of its events
table (read from server/db/tables.py, so the two cannot drift apart; the migrations build the
same set, which tests/test_bench_ingest_baseline.py checks), still with a plain INSERT: the
schema the collector stores into, with none of its code. That is the baseline issue 20 sets the
ingest target against. The collector's foreign keys (agent, vendor) and its rule index
(``event_rules``, a second table) stay out: they are the collector's own cost.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, Request
from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.db.tables import events as collector_events  # noqa: E402

SEVERITY_RANK = {"low": 1, "medium": 2, "high": 3, "critical": 4}
metadata = MetaData()
events = Table(
    "baseline_events",
    metadata,
    Column("seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("id", String(36), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("type", String(64), nullable=False),
    Column("occurred_at", String(40), nullable=False),
    Column("severity", String(16)),
    Column("host", String(255)),
    Column("user_name", String(255)),
    Column("path", Text),
    Column("sha256", String(64)),
    Column("device_serial", String(255)),
    Column("body", Text, nullable=False),
    # Columns the collector fills from the agent's identity, so --indexes has them to index.
    Column("vendor_id", Integer),
    Column("agent_id", String(32)),
    Column("severity_rank", Integer),
    Column("triage_status", String(16)),
    Column("process_name", String(255)),
    Column("destination_host", String(255)),
)


def make_engine(url: str) -> Engine:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    if not url.startswith("sqlite"):
        return create_engine(url, pool_size=10, max_overflow=20)
    engine = create_engine(url, pool_size=10, max_overflow=20, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


async def raw_body(request: Request) -> bytes:
    body = await request.body()
    if request.headers.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    return body


def collector_indexes() -> list[Index]:
    """The collector's unique id and its events table's indexes (server/db/tables.py), on this table's columns.

    Built only when asked for: an Index on a table's columns joins that table's metadata, and
    ``create_all`` would then give the bare baseline the indexes too.
    """
    unique_id = Index("ix_baseline_id", events.c.id, unique=True)
    copies = [
        Index(index.name.replace("ix_events_", "ix_baseline_"), *(events.c[column.name] for column in index.columns), unique=index.unique, **index.dialect_kwargs)
        for index in sorted(collector_events.indexes, key=lambda index: index.name or "")
        if index.name
    ]
    return [unique_id, *copies]


def create_schema(engine: Engine, *, indexes: bool = False) -> None:
    metadata.create_all(engine)
    if indexes:
        for index in collector_indexes():
            index.create(engine, checkfirst=True)


def create_app(engine: Engine, *, indexes: bool = False) -> FastAPI:
    create_schema(engine, indexes=indexes)
    app = FastAPI(title="ingest baseline")

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/api/v1/events")
    def ingest(body: Annotated[bytes, Depends(raw_body)]) -> dict[str, int]:
        rows = [
            {
                "id": record["id"],
                "channel": record["channel"],
                "type": record["type"],
                "occurred_at": record["occurred_at"],
                "severity": record.get("severity"),
                "host": record.get("host"),
                "user_name": record.get("user"),
                "path": record.get("path"),
                "sha256": record.get("sha256"),
                "device_serial": (record.get("device") or {}).get("serial"),
                "vendor_id": 1,
                "agent_id": record.get("host"),
                "severity_rank": SEVERITY_RANK.get(record.get("severity") or "", 0),
                "triage_status": "new",
                "process_name": _base_name((record.get("process") or {}).get("exe")),
                "destination_host": _lower((record.get("destination") or {}).get("host")),
                "body": json.dumps(record, ensure_ascii=False, separators=(",", ":")),
            }
            for record in json.loads(body)["events"]
        ]
        with engine.begin() as conn:
            conn.execute(events.insert(), rows)
        return {"accepted": len(rows)}

    return app


def _base_name(path: Any) -> str | None:
    return path.rsplit("/", 1)[-1] if isinstance(path, str) else None


def _lower(host: Any) -> str | None:
    return host.lower() if isinstance(host, str) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--indexes", action="store_true", help="give the table the collector's unique id and secondary indexes")
    args = parser.parse_args()
    uvicorn.run(create_app(make_engine(args.database_url), indexes=args.indexes), host=args.host, port=args.port, log_level="warning", access_log=False, proxy_headers=False, server_header=False)


if __name__ == "__main__":
    main()
