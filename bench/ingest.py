"""Ingest throughput: `dlp-server serve` against a bare FastAPI + SQLAlchemy app, same batches, same database.

Usage: python bench/ingest.py [--backend sqlite|postgresql|both] [--clients 8] [--seconds 10] [--rounds 3]

Each client is one enrolled agent posting 100-event batches (gzip JSON, as an agent sends
them, built before the clock starts) back to back on a kept-alive connection. Both servers
run in their own processes for the whole run; rounds alternate which one goes first, and
the ratio reported is the median of the per-round ratios (this machine is noisy, so only
ratios within one run mean much). Target: ours >= 0.75 of the baseline on each backend.
Baseline: bench/baseline_ingest.py. A third contender is the same baseline with the collector's
unique id and secondary indexes on its table (`--indexes`): the share of the gap the stored
schema accounts for. PostgreSQL: DLP_BENCH_PG_URL (default the local `test`).
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from serving import (  # noqa: E402
    ScratchPostgres,
    ServerProcess,
    collector_database_url,
    dlp_server,
    free_port,
    init_collector,
    postgres_backend_cpu_seconds,
    serve_collector,
    sqlite_url,
)

from tests.collector_env import event_record  # noqa: E402

BATCH_EVENTS = 100
WARM_UP_SECONDS = 2.0
WARM_UP_RATE_CAP = 40_000
SEVERITIES = ("low", "medium", "high", "critical")
OURS, BASELINE, INDEXED = "dlp-server serve", "baseline (bare FastAPI + Core)", "baseline + the collector's indexes"
console = Console(width=150)


@dataclass
class Contender:
    name: str
    server: ServerProcess
    database_url: str
    credentials: list[str]
    count_sql: str
    sent: int = 0
    stored: int = 0
    rates: list[float] = field(default_factory=list)
    server_ms_per_batch: list[float] = field(default_factory=list)
    db_ms_per_batch: list[float] = field(default_factory=list)
    client_ms_per_batch: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warm_up_rate: float = 0.0


def make_batches(count: int, *, client: int) -> list[bytes]:
    """``count`` gzip bodies of 100 realistic events, every event id new."""
    bodies = []
    for _ in range(count):
        records = [
            event_record(
                id=str(uuid.uuid4()),
                host=f"ws-{client}",
                user=f"user{random.randrange(50)}",
                path=f"/media/user/STICK/project-{random.randrange(1000)}/file-{random.randrange(10**6)}.zip",
                sha256=random.randbytes(32).hex(),
                severity=random.choice(SEVERITIES),
            )
            for _ in range(BATCH_EVENTS)
        ]
        bodies.append(gzip.compress(json.dumps({"events": records}).encode()))
    return bodies


@dataclass
class ClientTally:
    accepted: int = 0
    batches: int = 0
    errors: list[str] = field(default_factory=list)


def post_batches(port: int, credential: str, bodies: Sequence[bytes], deadline: float, tally: ClientTally) -> None:
    """One agent: post each body and wait for the reply, until the deadline or the bodies run out."""
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip", "Authorization": f"Bearer {credential}"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        for body in bodies:
            if time.monotonic() >= deadline:
                return
            try:
                conn.request("POST", "/api/v1/events", body, headers)
                reply = conn.getresponse()
                data = reply.read()
            except (OSError, http.client.HTTPException) as exc:
                tally.errors.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                continue
            if reply.status == 200:
                tally.accepted += json.loads(data)["accepted"]
                tally.batches += 1
            else:
                tally.errors.append(f"HTTP {reply.status}: {data[:200]!r}")
    finally:
        conn.close()


def run_round(contender: Contender, seconds: float, batches_per_client: int, *, warm_up: bool = False) -> float:
    """Events/s of one timed round; also records the CPU each side spent per batch."""
    bodies = [make_batches(batches_per_client, client=i) for i in range(len(contender.credentials))]
    tallies = [ClientTally() for _ in bodies]
    server_cpu, db_cpu, client_cpu = contender.server.cpu_seconds(), postgres_backend_cpu_seconds(contender.database_url), time.process_time()
    start = time.monotonic()
    threads = [
        threading.Thread(target=post_batches, args=(contender.server.port, credential, client_bodies, start + seconds, tally))
        for credential, client_bodies, tally in zip(contender.credentials, bodies, tallies)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    accepted = sum(t.accepted for t in tallies)
    batches = max(1, sum(t.batches for t in tallies))
    contender.sent += accepted
    contender.errors += [e for t in tallies for e in t.errors]
    if not accepted:
        raise SystemExit(f"{contender.name} stored nothing: {contender.errors[:3]}")
    rate = accepted / elapsed
    if warm_up:
        return rate
    if any(t.batches == len(b) for t, b in zip(tallies, bodies)):
        console.print(f"[yellow]{contender.name}: a client ran out of prepared batches before the round's end[/]")
    contender.server_ms_per_batch.append(1000 * (contender.server.cpu_seconds() - server_cpu) / batches)
    contender.db_ms_per_batch.append(1000 * (postgres_backend_cpu_seconds(contender.database_url) - db_cpu) / batches)
    contender.client_ms_per_batch.append(1000 * (time.process_time() - client_cpu) / batches)
    contender.rates.append(rate)
    return rate


def enroll_agents(base_url: str, token: str, count: int) -> list[str]:
    credentials = []
    for i in range(count):
        body = json.dumps({"token": token, "hostname": f"ws-{i}", "os": "linux", "agent_version": "0.1.0"}).encode()
        conn = http.client.HTTPConnection(base_url.split("//")[1], timeout=30)
        conn.request("POST", "/api/v1/enroll", body, {"Content-Type": "application/json"})
        reply = conn.getresponse()
        payload = reply.read()
        conn.close()
        if reply.status != 200:
            raise SystemExit(f"enrollment failed: {reply.status} {payload!r}")
        credentials.append(json.loads(payload)["credential"])
    return credentials


def start_ours(work: Path, database_url: str | None, clients: int) -> Contender:
    data_dir = work / "collector"
    init_collector(data_dir, database_url)
    server = serve_collector(data_dir, log_path=work / "collector.log")
    token = dlp_server("token", "create", "--vendor", "bench", "--uses", str(clients), data_dir=data_dir)["token"]
    credentials = enroll_agents(server.base_url, token, clients)
    return Contender(OURS, server, collector_database_url(data_dir, database_url), credentials, "SELECT count(*) FROM events WHERE channel <> 'agent'")


def start_baseline(work: Path, database_url: str, clients: int, *, indexes: bool = False) -> Contender:
    port = free_port()
    name = INDEXED if indexes else BASELINE
    argv = [sys.executable, str(HERE / "baseline_ingest.py"), "--database-url", database_url, "--port", str(port), *(["--indexes"] if indexes else [])]
    server = ServerProcess(name, argv, port=port, log_path=work / f"baseline-{port}.log", ready_path="/ping")
    return Contender(name, server, database_url, ["none"] * clients, "SELECT count(*) FROM baseline_events")


def count_stored(contender: Contender) -> int:
    engine = create_engine(contender.database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(contender.count_sql)).scalar_one())
    finally:
        engine.dispose()


def bench_backend(backend: str, args: argparse.Namespace, scratch: ScratchPostgres) -> list[Contender]:
    """Ours, the bare baseline and the baseline with our indexes, in rounds that rotate their order."""
    work = Path(tempfile.mkdtemp(prefix=f"dlp-ingest-{backend}-"))
    ours_url = scratch.create("collector") if backend == "postgresql" else None
    base_url = scratch.create("baseline") if backend == "postgresql" else sqlite_url(work / "baseline.db")
    indexed_url = scratch.create("indexed") if backend == "postgresql" else sqlite_url(work / "indexed.db")
    contenders = [start_ours(work, ours_url, args.clients), start_baseline(work, base_url, args.clients), start_baseline(work, indexed_url, args.clients, indexes=True)]
    ours, baseline, indexed = contenders
    try:
        warm_up_batches = int(WARM_UP_RATE_CAP * WARM_UP_SECONDS / BATCH_EVENTS / args.clients) + 1
        for contender in contenders:
            contender.warm_up_rate = run_round(contender, WARM_UP_SECONDS, warm_up_batches, warm_up=True)
        for round_no in range(args.rounds):
            shift = round_no % len(contenders)
            for contender in contenders[shift:] + contenders[:shift]:
                # Enough prepared batches for 1.6x the fastest rate seen so far (this machine swings ~30%).
                expected = max([contender.warm_up_rate, *contender.rates]) * 1.6
                run_round(contender, args.seconds, int(expected * args.seconds / BATCH_EVENTS / args.clients) + 2)
            console.print(
                f"{backend} round {round_no + 1}: ours {ours.rates[-1]:,.0f} ev/s, baseline {baseline.rates[-1]:,.0f} ev/s "
                f"(ratio {ours.rates[-1] / baseline.rates[-1]:.2f}), with our indexes {indexed.rates[-1]:,.0f} ev/s (ratio {ours.rates[-1] / indexed.rates[-1]:.2f})"
            )
    finally:
        for contender in contenders:
            contender.server.stop()
    for contender in contenders:
        contender.stored = count_stored(contender)
    shutil.rmtree(work, ignore_errors=True)
    return contenders


def report(results: dict[str, list[Contender]], args: argparse.Namespace) -> bool:
    detail = Table(title=f"Ingest, {args.clients} clients x 100-event gzip batches, {args.rounds} rotating rounds of {args.seconds:g} s")
    for column in ("backend", "contender", "events/s per round", "median events/s", "server CPU ms/batch", "PostgreSQL CPU ms/batch", "client CPU ms/batch"):
        detail.add_column(column, justify="left" if column in ("backend", "contender") else "right")
    summary = Table(title="ours / baseline (median of per-round ratios)")
    for column in ("backend", "ratio to the bare baseline", "target", "ratio to the baseline with our indexes", "stored == sent (ours)", "errors"):
        summary.add_column(column, justify="left" if column == "backend" else "right")
    ok = True
    for backend, contenders in results.items():
        ours, baseline, indexed = contenders
        for c in contenders:
            detail.add_row(
                backend,
                c.name,
                ", ".join(f"{r:,.0f}" for r in c.rates),
                f"{statistics.median(c.rates):,.0f}",
                f"{statistics.median(c.server_ms_per_batch):.1f}",
                f"{statistics.median(c.db_ms_per_batch):.1f}" if backend == "postgresql" else "-",
                f"{statistics.median(c.client_ms_per_batch):.1f}",
            )
        ratio = statistics.median(o / b for o, b in zip(ours.rates, baseline.rates))
        to_indexed = statistics.median(o / b for o, b in zip(ours.rates, indexed.rates))
        count = ours.stored
        errors = sum(len(c.errors) for c in contenders)
        met = ratio >= 0.75
        ok = ok and met and count == ours.sent and not errors
        summary.add_row(
            backend,
            f"{ratio:.2f}",
            ">= 0.75 " + ("met" if met else "MISSED"),
            f"{to_indexed:.2f}",
            f"{count:,} == {ours.sent:,}" if count == ours.sent else f"NO: {count:,} != {ours.sent:,}",
            str(errors),
        )
        for error in [e for c in contenders for e in c.errors][:5]:
            console.print(f"[red]{backend}: {error}[/]")
    console.print(detail)
    console.print(summary)
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    with ScratchPostgres() as scratch:
        results = {backend: bench_backend(backend, args, scratch) for backend in backends}
        ok = report(results, args)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
