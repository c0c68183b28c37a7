"""Ingest throughput: `dlp-server serve` against a bare FastAPI + SQLAlchemy app with the collector's schema.

Usage: python bench/ingest.py [--backend sqlite|postgresql|both] [--clients 8] [--seconds 10] [--rounds 3]
                              [--workers N] [--max-in-flight N] [--against CHECKOUT]

Each client is one enrolled agent posting 100-event batches (gzip JSON, as an agent sends
them, built before the clock starts) back to back on a kept-alive connection; a 429 (the
collector's admission bound, ``[ingest] max_in_flight``) is followed as the agent follows it:
the same batch again after Retry-After. The collectors run with their own default admission
bound (``--max-in-flight N`` sets another): on SQLite two batches in flight store faster than
eight, whose threads spend the writer's turn waiting for the GIL while others parse. Every
server runs in its own process for the whole run; rounds rotate which one goes first, and a ratio reported is the median of the per-round
ratios (this machine is noisy, so only ratios within one run mean much).

Baseline (bench/baseline_ingest.py --indexes): the same batches into a table with the
collector's unique event id and every secondary index of its events table, by one plain
executemany INSERT, with no authentication, validation or idempotency. Target (issue 20): ours
>= 0.75 of it on each backend. The bare baseline (no unique id, no indexes) is shown for
information. Events/s per server core: events stored per CPU-second of the server's whole
process tree, and on PostgreSQL also per CPU-second of server plus database backends.
``--against CHECKOUT`` adds the collector of another checkout (a `git worktree` of an older
commit) as a fourth contender, for before/after in one run. PostgreSQL: DLP_BENCH_PG_URL
(default the local `test`).
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    free_port,
    postgres_backend_cpu_seconds,
    serve_collector,
    sqlite_url,
)

from tests.collector_env import event_record  # noqa: E402

BATCH_EVENTS = 100
WARM_UP_SECONDS = 2.0
WARM_UP_RATE_CAP = 40_000
SEVERITIES = ("low", "medium", "high", "critical")
OURS, BASELINE, INDEXED = "dlp-server serve", "bare baseline (no indexes)", "baseline (the collector's indexes)"
RETRY_AFTER_CAP_S = 10.0
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
    refused: int = 0
    server_cpu_s: float = 0.0
    db_cpu_s: float = 0.0
    timed_events: int = 0

    def per_core(self, *, with_db: bool = False) -> float:
        """Events stored per CPU-second of the server (and of the database backends with ``with_db``), over the timed rounds."""
        cpu = self.server_cpu_s + (self.db_cpu_s if with_db else 0.0)
        return self.timed_events / cpu if cpu else 0.0


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
    refused: int = 0
    errors: list[str] = field(default_factory=list)


def post_batches(port: int, credential: str, bodies: Sequence[bytes], deadline: float, tally: ClientTally) -> None:
    """One agent: post each body and wait for the reply, until the deadline or the bodies run out;
    a 429 sends the same body again after its Retry-After (the agent's shipper does the same)."""
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip", "Authorization": f"Bearer {credential}"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        pending = list(reversed(bodies))
        while pending and time.monotonic() < deadline:
            body = pending.pop()
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
            elif reply.status == 429:
                tally.refused += 1
                pending.append(body)
                wait = min(float(reply.getheader("Retry-After") or 1), RETRY_AFTER_CAP_S)
                time.sleep(max(0.0, min(wait, deadline - time.monotonic())))
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
    contender.refused += sum(t.refused for t in tallies)
    if not accepted:
        raise SystemExit(f"{contender.name} stored nothing: {contender.errors[:3]}")
    rate = accepted / elapsed
    if warm_up:
        return rate
    if any(t.batches == len(b) for t, b in zip(tallies, bodies)):
        console.print(f"[yellow]{contender.name}: a client ran out of prepared batches before the round's end[/]")
    server_spent = contender.server.cpu_seconds() - server_cpu
    db_spent = postgres_backend_cpu_seconds(contender.database_url) - db_cpu
    contender.server_cpu_s += server_spent
    contender.db_cpu_s += db_spent
    contender.timed_events += accepted
    contender.server_ms_per_batch.append(1000 * server_spent / batches)
    contender.db_ms_per_batch.append(1000 * db_spent / batches)
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


def start_ours(
    work: Path, database_url: str | None, clients: int, *, max_in_flight: int, name: str = OURS, code: Path = HERE.parent, workers: int = 1
) -> Contender:
    data_dir = work / name.replace(" ", "-").replace("/", "-")
    init_collector(data_dir, database_url, code=code, max_in_flight=max_in_flight)
    server = serve_collector(data_dir, log_path=data_dir.with_suffix(".log"), workers=workers, code=code)
    token = dlp_server_of(code, "token", "create", "--vendor", "bench", "--uses", str(clients), data_dir=data_dir)["token"]
    credentials = enroll_agents(server.base_url, token, clients)
    return Contender(name, server, collector_database_url(data_dir, database_url), credentials, "SELECT count(*) FROM events WHERE channel <> 'agent'")


def dlp_server_of(code: Path, *args: str, data_dir: Path) -> dict[str, Any]:
    """``dlp-server ... --json`` of the checkout ``code`` (its settings file and schema are its own)."""
    argv = [sys.executable, "-m", "server.cli", *args, "--data-dir", str(data_dir), "--json"]
    done = subprocess.run(argv, cwd=code, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"dlp-server {' '.join(args)} ({code}) failed: {done.stderr.strip()}")
    return json.loads(done.stdout)


def init_collector(data_dir: Path, database_url: str | None, *, code: Path, max_in_flight: int) -> None:
    """``dlp-server init``; the admission bound (where that checkout has one) set to ``max_in_flight`` unless 0."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if database_url:
        (data_dir / "server.toml").write_text(f'database_url = "{database_url}"\n')
    dlp_server_of(code, "init", data_dir=data_dir)
    if max_in_flight and "max_in_flight" in (code / "server" / "settings.py").read_text():
        with open(data_dir / "server.toml", "a") as settings:
            settings.write(f"\n[ingest]\nmax_in_flight = {max_in_flight}\n")


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
    """Ours, the baseline with our indexes, the bare baseline (and ``--against``), in rounds that rotate their order."""
    work = Path(tempfile.mkdtemp(prefix=f"dlp-ingest-{backend}-"))
    ours_url = scratch.create("collector") if backend == "postgresql" else None
    base_url = scratch.create("baseline") if backend == "postgresql" else sqlite_url(work / "baseline.db")
    indexed_url = scratch.create("indexed") if backend == "postgresql" else sqlite_url(work / "indexed.db")
    workers = args.workers if backend == "postgresql" else 1
    contenders = [
        start_ours(work, ours_url, args.clients, max_in_flight=args.max_in_flight, workers=workers),
        start_baseline(work, indexed_url, args.clients, indexes=True),
        start_baseline(work, base_url, args.clients),
    ]
    if args.against:
        against_url = scratch.create("against") if backend == "postgresql" else None
        against = start_ours(
            work, against_url, args.clients, max_in_flight=args.max_in_flight, name=f"{OURS} ({args.against.name})", code=args.against.resolve(), workers=workers
        )
        contenders.append(against)
    ours, indexed, baseline = contenders[:3]
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
                f"{backend} round {round_no + 1}: ours {ours.rates[-1]:,.0f} ev/s, baseline with our indexes {indexed.rates[-1]:,.0f} ev/s "
                f"(ratio {ours.rates[-1] / indexed.rates[-1]:.2f}), bare baseline {baseline.rates[-1]:,.0f} ev/s (ratio {ours.rates[-1] / baseline.rates[-1]:.2f})"
                + "".join(f", {c.name} {c.rates[-1]:,.0f} ev/s" for c in contenders[3:])
            )
    finally:
        for contender in contenders:
            contender.server.stop()
    for contender in contenders:
        contender.stored = count_stored(contender)
    shutil.rmtree(work, ignore_errors=True)
    return contenders


def _collector(contender: Contender) -> bool:
    return contender.name.startswith(OURS)


def report(results: dict[str, list[Contender]], args: argparse.Namespace) -> bool:
    detail = Table(title=f"Ingest, {args.clients} clients x 100-event gzip batches, {args.rounds} rotating rounds of {args.seconds:g} s")
    columns = (
        "backend", "contender", "events/s per round", "median events/s", "events per server CPU-s", "events per CPU-s with PostgreSQL",
        "server CPU ms/batch", "PostgreSQL CPU ms/batch", "client CPU ms/batch", "429s",
    )  # fmt: skip
    for column in columns:
        detail.add_column(column, justify="left" if column in ("backend", "contender") else "right")
    summary = Table(title="ours / baseline (median of per-round ratios)")
    for column in ("backend", "ratio to the baseline with our indexes", "target", "ratio to the bare baseline", "stored == sent (collectors)", "errors"):
        summary.add_column(column, justify="left" if column == "backend" else "right")
    ok = True
    for backend, contenders in results.items():
        ours, indexed, baseline = contenders[:3]
        for c in contenders:
            detail.add_row(
                backend,
                c.name,
                ", ".join(f"{r:,.0f}" for r in c.rates),
                f"{statistics.median(c.rates):,.0f}",
                f"{c.per_core():,.0f}",
                f"{c.per_core(with_db=True):,.0f}" if backend == "postgresql" else "-",
                f"{statistics.median(c.server_ms_per_batch):.1f}",
                f"{statistics.median(c.db_ms_per_batch):.1f}" if backend == "postgresql" else "-",
                f"{statistics.median(c.client_ms_per_batch):.1f}",
                f"{c.refused:,}" if _collector(c) else "-",
            )
        target = statistics.median(o / b for o, b in zip(ours.rates, indexed.rates))
        to_bare = statistics.median(o / b for o, b in zip(ours.rates, baseline.rates))
        stored_ok = all(c.stored == c.sent for c in contenders if _collector(c))
        errors = sum(len(c.errors) for c in contenders)
        met = target >= 0.75
        ok = ok and met and stored_ok and not errors
        summary.add_row(
            backend,
            f"{target:.2f}" + "".join(f" ({c.name}: {statistics.median(a / b for a, b in zip(c.rates, indexed.rates)):.2f})" for c in contenders[3:]),
            ">= 0.75 " + ("met" if met else "MISSED"),
            f"{to_bare:.2f}",
            "yes" if stored_ok else "NO: " + ", ".join(f"{c.stored:,} != {c.sent:,}" for c in contenders if _collector(c) and c.stored != c.sent),
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
    parser.add_argument(
        "--max-in-flight", type=int, default=0, metavar="N",
        help="the collectors' admission bound ([ingest] max_in_flight; default: the collector's own default)",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=1, help="collector processes on PostgreSQL (SQLite always runs one)")
    parser.add_argument("--against", type=Path, metavar="CHECKOUT", help="also run the collector of this other checkout (e.g. a `git worktree` of an older commit)")
    args = parser.parse_args()
    if args.against and not (args.against / "server" / "cli.py").is_file():
        parser.error(f"--against {args.against}: not a checkout of this project")
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    with ScratchPostgres() as scratch:
        results = {backend: bench_backend(backend, args, scratch) for backend in backends}
        ok = report(results, args)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
