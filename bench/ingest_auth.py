"""CPU a batch of the ingest route with its agent from memory (``Liveness.identify``) against the authentication read.

Usage: python bench/ingest_auth.py [--backend sqlite|postgresql|both] [--blocks 40] [--per-block 20]

One collector in this process (FastAPI's TestClient, one agent, 100-event JSON batches built
before each block), the two variants interleaved in blocks (ABBA) over the same database: "memory"
is the route as it is; "read" is the route before it authenticated from memory, every batch's
agent read from the database in the write transaction (``identify`` answers None, and the read's
call is recorded as ``record_agent_call`` alone recorded it). Memory is reread and the liveness
buffer flushed between blocks, outside the timing, so both variants pay the same buffered writes.
Reported per batch: this process's CPU (the route, the client's share being the same in both), on
PostgreSQL the CPU of the database's backends for this database (``/proc/PID/schedstat``, so
PostgreSQL must run on this machine), and wall time. One stream: a saving in the round trips shows
in the wall time, not in the rate ``bench/ingest.py`` measures with many clients.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from serving import PG_ADMIN_URL, ScratchPostgres, sqlite_url  # noqa: E402

from server.api import ingest_routes  # noqa: E402
from server.api.agent_routes import record_agent_call  # noqa: E402
from tests.collector_env import enrollment_token, event_record  # noqa: E402

VARIANTS = ("memory", "read")


def backend_cpu(database: str) -> Callable[[], float]:
    """Seconds of CPU the PostgreSQL backends connected to ``database`` have spent (on this machine)."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")

    def spent() -> float:
        with admin.connect() as conn:
            pids = list(conn.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = :name"), {"name": database}).scalars())
        total = 0
        for pid in pids:
            try:
                total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
            except OSError:
                pass  # a backend that ended meanwhile
        return total / 1e9

    return spent


def _read_path(conn: Any, collector: Any, identity: Any, token: Any, address: Any, now: Any) -> Any:
    record_agent_call(conn, collector, identity, address)
    return identity


def measure(database_url: str, blocks: int, per_block: int, db_cpu: Callable[[], float] | None) -> dict[str, list[tuple[float, float, float]]]:
    from fastapi.testclient import TestClient

    from server.api.app import create_app
    from server.collector import Collector
    from server.db.engine import Database
    from server.db.migrate import upgrade
    from server.keys import create_keys
    from server.settings import load_settings

    db = Database(database_url)
    upgrade(db)
    db.dispose()
    data_dir = Path(tempfile.mkdtemp(prefix="dlp-ingest-auth-"))
    (data_dir / "server.toml").write_text("")
    create_keys(data_dir, data_dir / "signing.key")
    collector = Collector(load_settings(data_dir, environ={"DLP_DATABASE_URL": database_url}))
    memory = collector.liveness
    shipped = (memory.identify, ingest_routes._record_and_remember)
    results: dict[str, list[tuple[float, float, float]]] = {variant: [] for variant in VARIANTS}
    try:
        with TestClient(create_app(collector)) as client:
            enrolled = client.post("/api/v1/enroll", json={"token": enrollment_token(collector), "hostname": "ws-1", "os": "linux", "agent_version": "0.1.0"})
            headers = {"Authorization": f"Bearer {enrolled.json()['credential']}", "Content-Type": "application/json"}

            def batch() -> bytes:
                return json.dumps({"events": [event_record(id=str(uuid.uuid4())) for _ in range(100)]}).encode()

            assert client.post("/api/v1/events", content=batch(), headers=headers).status_code == 200
            for block in range(2 * blocks):
                variant = VARIANTS[(block % 2) ^ (block // 2 % 2)]
                bodies = [batch() for _ in range(per_block)]
                with collector.db.read() as conn:
                    memory.refresh(conn)
                memory.flush()
                if variant == "memory":
                    memory.identify, ingest_routes._record_and_remember = shipped
                else:
                    memory.identify, ingest_routes._record_and_remember = (lambda conn, token, now: None), _read_path
                db_before, cpu_before, wall_before = db_cpu() if db_cpu else 0.0, time.process_time(), time.perf_counter()
                for body in bodies:
                    assert client.post("/api/v1/events", content=body, headers=headers).status_code == 200
                cpu, wall = time.process_time() - cpu_before, time.perf_counter() - wall_before
                spent = db_cpu() - db_before if db_cpu else 0.0
                results[variant].append((1000 * cpu / per_block, 1000 * spent / per_block, 1000 * wall / per_block))
    finally:
        memory.identify, ingest_routes._record_and_remember = shipped
        collector.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="postgresql")
    parser.add_argument("--blocks", type=int, default=40, help="blocks of each variant (default 40)")
    parser.add_argument("--per-block", type=int, default=20, help="batches a block (default 20)")
    args = parser.parse_args()
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    with ScratchPostgres() as scratch:
        for backend in backends:
            if backend == "postgresql":
                url = scratch.create("ingest_auth")
                results = measure(url, args.blocks, args.per_block, backend_cpu(url.rsplit("/", 1)[1]))
            else:
                url = sqlite_url(Path(tempfile.mkdtemp(prefix="dlp-ingest-auth-")) / "collector.db")
                results = measure(url, args.blocks, args.per_block, None)
            for variant, rows in results.items():
                cpu, db, wall = (statistics.median(row[i] for row in rows) for i in range(3))
                database = f", PostgreSQL CPU {db:.2f} ms" if backend == "postgresql" else ""
                print(f"{backend} {variant:6s} ({len(rows) * args.per_block} batches), medians of blocks a batch: process CPU {cpu:.2f} ms{database}, wall {wall:.2f} ms")


if __name__ == "__main__":
    main()
