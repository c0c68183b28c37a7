"""PostgreSQL's own cost per heartbeat and per event, with one and with two collector processes over one database.

Usage: python bench/pg_cost.py [--agents 10000] [--interval 30] [--seconds 30] [--events 60000] [--clients 4] [--collectors 1,2]
                             [--lock FILE]

One scratch PostgreSQL database, one data directory, and ``dlp-server serve`` processes on their
own loopback ports over that database, as stateless collectors behind a load balancer are. The
agents are enrolled (and their previous heartbeat stored) through the store functions first,
as bench/heartbeat.py does. For each number of collectors, two loads in turn:

- heartbeats: every agent once per ``--interval`` at its own phase (open loop: 10,000 agents
  every 30 s are the 333/s of 20,000 every 60 s), each agent's calls alternating between the
  collectors (a round-robin balancer), measured for ``--seconds`` after every agent has met
  every collector (a collector answers an agent it has not met yet the slow way);
- events: ``--events`` events in 100-event gzip batches (as agents send them), ``--clients``
  kept-alive connections per collector posting back to back (closed loop: as fast as it goes).

Measured for each: the rate, the collectors' CPU (their process trees), the CPU of the
PostgreSQL backends serving the database (sampled every 0.2 s, so a backend that exits keeps
its last reading), and the database's transactions and rows written (pg_stat_database). From
these: what one collector process holds (one core over its CPU per request) and how many
collectors one PostgreSQL carries before its CPU saturates (its cores over the database CPU per
request, divided by one collector's rate). Both are extrapolations from per-request CPU; this
machine has 2 cores for the load generator, the collectors and PostgreSQL together, so neither
end is driven to saturation here. PostgreSQL: DLP_BENCH_PG_URL (default the local ``test``).
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from heartbeat import KeptAlive, enroll_directly, heartbeat_body, schedule  # noqa: E402
from ingest import BATCH_EVENTS, ClientTally, make_batches, post_batches  # noqa: E402
from serving import PG_ADMIN_URL, ScratchPostgres, ServerProcess, init_collector, percentile, serve_collector  # noqa: E402

console = Console(width=170)
SAMPLE_S = 0.2
CONNECTIONS_PER_COLLECTOR = 50
DEFAULT_INTERVAL_S = 60
"""The heartbeat interval collectors tell agents by default (agents.heartbeat_interval_s)."""
FLUSH_SETTLE_S = 3.0
"""Longer than the collectors' liveness flush interval (2 s by default) and PostgreSQL's statistics delay (1 s)."""


class BackendCpu:
    """CPU time of the PostgreSQL backends serving one database, sampled on a thread.

    A backend's CPU is read while it runs; one that exits (a pool's overflow connection) keeps
    its last reading, so at most ``SAMPLE_S`` of its work is missed.
    """

    def __init__(self, database: str) -> None:
        self._needle = f" {database} "
        self._last: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-cpu", daemon=True)

    def __enter__(self) -> BackendCpu:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def seconds(self) -> float:
        self._sample()
        return sum(self._last.values())

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self._sample()

    def _sample(self) -> None:
        for proc in psutil.process_iter(["cmdline", "create_time"]):
            try:
                cmdline = " ".join(proc.info["cmdline"] or ())
                if cmdline.startswith("postgres:") and self._needle in f" {cmdline} ":
                    times = proc.cpu_times()
                    self._last[(proc.pid, proc.info["create_time"])] = times.user + times.system
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue


def database_counters(database: str) -> dict[str, int]:
    """Transactions and rows written in ``database`` so far (pg_stat_database, read from the admin database)."""
    engine = create_engine(PG_ADMIN_URL)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text("SELECT xact_commit, tup_inserted + tup_updated + tup_deleted AS rows FROM pg_stat_database WHERE datname = :name"), {"name": database}
            ).one()
    finally:
        engine.dispose()
    return {"commits": int(row.xact_commit), "rows": int(row.rows)}


@dataclass
class Measure:
    """One load on some collectors: what was done and what it cost."""

    load: str
    collectors: int
    units: int
    """Heartbeats, or events."""
    seconds: float
    collector_cpu: float
    db_cpu: float
    commits: int
    rows: int
    client_cpu: float
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def per_unit_ms(self, cpu: float) -> float:
        return 1000 * cpu / max(1, self.units)


class Metering:
    """CPU and database counters from ``start`` to ``stop``."""

    def __init__(self, servers: list[ServerProcess], backends: BackendCpu, database: str) -> None:
        self._servers, self._backends, self._database = servers, backends, database

    def start(self) -> None:
        self.counters = database_counters(self._database)
        self.server_cpu = sum(s.cpu_seconds() for s in self._servers)
        self.db_cpu = self._backends.seconds()
        self.client_cpu = time.process_time()
        self.started = time.perf_counter()

    def stop(self, *, settle_s: float) -> None:
        """Read the counters after ``settle_s`` more (the collectors' buffered writes, PostgreSQL's
        statistics, which backends report at most once a second); the load's time ends now."""
        self.seconds = time.perf_counter() - self.started
        self.client_cpu = time.process_time() - self.client_cpu
        time.sleep(settle_s)
        self.server_cpu = sum(s.cpu_seconds() for s in self._servers) - self.server_cpu
        self.db_cpu = self._backends.seconds() - self.db_cpu
        after = database_counters(self._database)
        self.commits = after["commits"] - self.counters["commits"]
        self.rows = after["rows"] - self.counters["rows"]


async def _heartbeats(servers: list[ServerProcess], credentials: list[str], metering: Metering, args: argparse.Namespace) -> tuple[list[float], list[str]]:
    """Every agent's heartbeats at its phase, each agent's calls alternating between the collectors.

    A collector answers an agent it has not met the slow way (server/liveness.py), so the first
    ``len(servers)`` intervals, in which every agent meets every collector, are not measured.
    """
    bodies = [heartbeat_body(agent) for agent in range(len(credentials))]
    clients = [KeptAlive("127.0.0.1", server.port) for server in servers]
    slots = [asyncio.Semaphore(CONNECTIONS_PER_COLLECTOR) for _ in servers]
    warm_s = len(servers) * args.interval
    latencies: list[float] = []
    errors: list[str] = []

    async def beat(which: int, agent: int, due: float, measured: bool, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await previous  # an agent sends its next heartbeat once the last one is answered
        async with slots[which]:
            try:
                status = await clients[which].post("/api/v1/heartbeat", bodies[agent], credentials[agent])
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
                errors.append(type(exc).__name__)
                return
        if status != 200:
            errors.append(f"HTTP {status}")
        elif measured:
            latencies.append(time.perf_counter() - due)

    tasks = []
    beats = [0] * len(credentials)
    last: dict[int, asyncio.Task[None]] = {}
    start = time.perf_counter()
    metered = False
    try:
        for offset, agent in schedule(len(credentials), args.interval, warm_s + args.seconds):
            if not metered and offset >= warm_s:
                await asyncio.to_thread(metering.start)
                metered = True
            delay = start + offset - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            which = (agent + beats[agent]) % len(servers)
            beats[agent] += 1
            last[agent] = asyncio.create_task(beat(which, agent, start + offset, metered, last.get(agent)))
            tasks.append(last[agent])
        await asyncio.gather(*tasks)
    finally:
        for client in clients:
            await client.close()
    return latencies, errors


def heartbeat_load(servers: list[ServerProcess], backends: BackendCpu, database: str, credentials: list[str], args: argparse.Namespace) -> Measure:
    metering = Metering(servers, backends, database)
    latencies, errors = asyncio.run(_heartbeats(servers, credentials, metering, args))
    metering.stop(settle_s=FLUSH_SETTLE_S)
    return Measure(
        "heartbeats", len(servers), len(latencies), metering.seconds, metering.server_cpu, metering.db_cpu,
        metering.commits, metering.rows, metering.client_cpu, latencies, errors,
    )


def event_load(servers: list[ServerProcess], backends: BackendCpu, database: str, credentials: list[str], args: argparse.Namespace) -> Measure:
    """``args.events`` events, ``args.clients`` connections per collector, each client its own agent."""
    count = args.clients * len(servers)
    per_client = max(1, args.events // BATCH_EVENTS // count)
    bodies = [make_batches(per_client, client=i) for i in range(count)]
    tallies = [ClientTally() for _ in range(count)]
    never = time.monotonic() + 3600
    threads = [
        threading.Thread(target=post_batches, args=(servers[i % len(servers)].port, credentials[i], bodies[i], never, tallies[i])) for i in range(count)
    ]
    metering = Metering(servers, backends, database)
    time.sleep(FLUSH_SETTLE_S)  # the heartbeats' last buffered writes land before the start
    metering.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    metering.stop(settle_s=FLUSH_SETTLE_S)
    accepted = sum(t.accepted for t in tallies)
    return Measure(
        "events", len(servers), accepted, metering.seconds, metering.server_cpu, metering.db_cpu,
        metering.commits, metering.rows, metering.client_cpu, errors=[e for t in tallies for e in t.errors],
    )


def revision() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE.parent, capture_output=True, text=True, check=False)
    return done.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between one agent's heartbeats (default 30)")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long each heartbeat load is measured, after the warm-up (default 30)")
    parser.add_argument("--events", type=int, default=60_000, help="events each event load posts (default 60,000)")
    parser.add_argument("--clients", type=int, default=4, help="event-posting connections per collector (default 4)")
    parser.add_argument("--collectors", default="1,2", help="numbers of collector processes to measure, in order (default 1,2)")
    parser.add_argument("--lock", type=Path, default=None, metavar="FILE", help="take this flock after enrolling the agents, for the measured part only")
    parser.add_argument("--pg-cores", type=int, default=os.cpu_count() or 1, help="cores to size PostgreSQL with in the extrapolation (default this machine's)")
    args = parser.parse_args()
    counts = [int(n) for n in args.collectors.split(",")]

    work = Path(tempfile.mkdtemp(prefix="dlp-pgcost-"))
    measures: list[Measure] = []
    try:
        with ScratchPostgres() as scratch:
            url = scratch.create("pgcost")
            database = url.rsplit("/", 1)[1]
            data_dir = work / "collector"
            init_collector(data_dir, url)
            with open(data_dir / "server.toml", "a") as settings:
                settings.write(f"\n[ingest]\nmax_in_flight = {args.clients}\n")  # every client's batch admitted, none waits out a 429
            began = time.perf_counter()
            credentials = enroll_directly(url, args.agents, steady=True)
            console.print(f"enrolled {len(credentials):,} agents (previous heartbeat stored) in {time.perf_counter() - began:.1f} s")
            lock = open(args.lock, "a") if args.lock else None  # noqa: SIM115 (held until the process ends)
            if lock is not None:
                console.print(f"waiting for {args.lock}")
                fcntl.flock(lock, fcntl.LOCK_EX)
            load_before = os.getloadavg()
            with BackendCpu(database) as backends:
                for n in counts:
                    servers = [serve_collector(data_dir, log_path=work / f"collector-{n}-{i}.log") for i in range(n)]
                    try:
                        measures.append(heartbeat_load(servers, backends, database, credentials, args))
                        console.print(f"{n} collector(s): heartbeats done")
                        measures.append(event_load(servers, backends, database, credentials, args))
                        console.print(f"{n} collector(s): events done")
                    finally:
                        for server in servers:
                            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(measures, args, load_before)


def report(measures: list[Measure], args: argparse.Namespace, load_before: tuple[float, float, float]) -> None:
    title = (
        f"PostgreSQL's cost per request, {args.agents:,} agents every {args.interval:g} s (measured {args.seconds:g} s once each met each collector), then {args.events:,} events in "
        f"{BATCH_EVENTS}-event batches over {args.clients} connections per collector; commit {revision()}, load before {load_before[0]:.1f}"
    )
    table = Table(title=title)
    for column in ("load", "collectors", "rate", "p50 / p99", "collector CPU ms", "PostgreSQL CPU ms", "commits", "rows written", "client CPU ms", "errors"):
        table.add_column(column, justify="left" if column == "load" else "right")
    for m in measures:
        unit = "heartbeat" if m.load == "heartbeats" else "event"
        ms = [v * 1000 for v in m.latencies]
        table.add_row(
            f"{m.load} (per {unit})",
            str(m.collectors),
            f"{m.units / m.seconds:,.0f}/s",
            f"{statistics.median(ms):.0f} / {percentile(ms, 0.99):.0f} ms" if ms else "-",
            f"{m.per_unit_ms(m.collector_cpu):.3f}",
            f"{m.per_unit_ms(m.db_cpu):.3f}",
            f"{m.commits / max(1, m.units):.3f}",
            f"{m.rows / max(1, m.units):.2f}",
            f"{m.per_unit_ms(m.client_cpu):.3f}",
            str(len(m.errors)) + (f" ({m.errors[0]})" if m.errors else ""),
        )
    console.print(table)

    sizing = Table(title=f"Extrapolated from CPU per request: one collector process on one core, PostgreSQL on {args.pg_cores} core(s)")
    for column in ("load", "collectors measured", "one collector holds", "PostgreSQL carries", "collectors per PostgreSQL", "PG / collector CPU"):
        sizing.add_column(column, justify="left" if column == "load" else "right")
    for m in measures:
        unit = "heartbeats" if m.load == "heartbeats" else "events"
        collector_ms = m.per_unit_ms(m.collector_cpu)
        db_ms = m.per_unit_ms(m.db_cpu)
        holds = 1000 / collector_ms
        carries = args.pg_cores * 1000 / db_ms
        agents = f" ({holds * DEFAULT_INTERVAL_S:,.0f} agents at {DEFAULT_INTERVAL_S} s)" if m.load == "heartbeats" else ""
        sizing.add_row(unit, str(m.collectors), f"{holds:,.0f} {unit}/s{agents}", f"{carries:,.0f} {unit}/s", f"{carries / holds:.1f}", f"{db_ms / collector_ms:.2f}")
    console.print(sizing)
    console.print(f"load average after: {os.getloadavg()[0]:.1f}")
    sys.exit(1 if any(m.errors for m in measures) else 0)


if __name__ == "__main__":
    main()
