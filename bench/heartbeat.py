"""Heartbeat latency: 10,000 simulated agents, each calling `POST /api/v1/heartbeat` once a minute.

Usage: python bench/heartbeat.py [--backend sqlite|postgresql] [--agents 10000] [--seconds 60] [--interval 60]
                                 [--workers N[,N...]] [--cold] [--denied 1000] [--against CHECKOUT]

The agents are enrolled first by the store functions the enrollment route calls (one token,
then `enrollment.enroll`, `agents.touch` and `addresses.record_agent` per agent, 1,000 agents
per transaction), straight on the database: 10,000 enrollments over HTTP would only measure
enrollment. By default the fleet is in steady state: each agent's previous heartbeat (the
report it will send again) is recorded the same way (`agents.heartbeat`), as a collector
restarted under a running fleet finds it. ``--cold`` leaves that out: every heartbeat of the
first interval is the agent's first contact after enrollment (a new report to store).

Then a real `dlp-server serve` is started and this process fires every agent's
heartbeat at its own phase (random within the agent's even share of the interval) from one
asyncio loop over a pool of kept-alive connections, so the server sees agents/interval
requests every second (167/s by default). The default client is a few lines of asyncio
streams (about 0.3 ms of CPU a request); `--client httpx` uses httpx.AsyncClient, which
costs about 2 ms a request here and so takes more of the CPU the server needs.

Latency runs from the moment a heartbeat is due to its full reply, so time spent waiting for
a free connection or for a late load generator counts; both parts are also shown on their
own. Target: p99 < 100 ms. The load generator and the server share this machine's 2 cores.
Server CPU is that of the whole `serve` process tree (``--workers N``: the workers too); on
PostgreSQL the backends' CPU is shown beside it. After the server stops (which writes what it
holds in memory), every agent answered must have its heartbeat of this run stored.

``--against CHECKOUT`` serves a copy of the same enrolled fleet with another checkout's collector
first (a `git worktree` of an older commit) and prints both with their ratio; ``--workers 1,2``
measures each worker count on its own copy. The first heartbeat of each agent to a server and
the later ones are also shown apart (a server just started meets every agent once).

``--denied N`` puts N denied networks (none holding the loopback address) in the database first,
so the run shows what checking every heartbeat against a denylist costs (server/store/denylist.py).
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from serving import (  # noqa: E402
    ScratchPostgres,
    collector_database_url,
    init_collector,
    percentile,
    postgres_backend_cpu_seconds,
    serve_collector,
)

from server.db.engine import Database  # noqa: E402
from server.db.tables import agent_addresses, denied_networks  # noqa: E402
from server.db.tables import agents as agents_table  # noqa: E402
from server.store import addresses, agents, enrollment  # noqa: E402
from server.store.sql import utcnow  # noqa: E402

ENROLL_CHUNK = 1_000
LOOPBACK = "127.0.0.1"
console = Console(width=150)


def enroll_directly(database_url: str, count: int, *, steady: bool) -> list[str]:
    """``count`` agents enrolled as the route does it, minus HTTP; returns their credentials.

    ``steady``: each agent's previous heartbeat is recorded too, with the report it will send.
    """
    db = Database(database_url)
    credentials = []
    try:
        with db.write() as conn:
            token, _ = enrollment.create_token(conn, vendor="bench", uses=count, lifetime=timedelta(days=1), created_by="bench/heartbeat.py", now=utcnow())
        for start in range(0, count, ENROLL_CHUNK):
            with db.write() as conn:
                for i in range(start, min(count, start + ENROLL_CHUNK)):
                    now = utcnow()
                    enrolled = enrollment.enroll(
                        conn, token=token, hostname=f"ws-{i:05d}", os_name="linux", machine_id=f"m{i}", agent_version="0.1.0", address=LOOPBACK, now=now
                    )
                    agents.touch(conn, agent_id=enrolled.agent_id, address=LOOPBACK, now=now)
                    addresses.record_agent(conn, agent_id=enrolled.agent_id, address=LOOPBACK, country=None, expected=None, now=now)
                    if steady:
                        report = json.loads(heartbeat_body(i))
                        agents.heartbeat(conn, agent_id=enrolled.agent_id, report=report, address=LOOPBACK, now=now)
                        addresses.record_agent(conn, agent_id=enrolled.agent_id, address=LOOPBACK, country=None, expected=None, now=now)
                    credentials.append(enrolled.credential)
    finally:
        db.dispose()
    return credentials


def deny_ranges(database_url: str, count: int) -> None:
    """``count`` denied ranges of mixed lengths and families, half per vendor, none holding the loopback address."""
    rng = random.Random(19)
    rows = []
    for i in range(count):
        if i % 4 == 3:
            cidr = f"2001:db8:{rng.randrange(65536):x}::/48"
        else:
            length = rng.choice((16, 20, 24, 28, 32))
            value = rng.randrange(11 << 24, 126 << 24) >> (32 - length) << (32 - length)
            cidr = f"{value >> 24}.{value >> 16 & 255}.{value >> 8 & 255}.{value & 255}/{length}"
        rows.append({"cidr": cidr, "vendor_id": None, "note": "bench", "created_by": "bench/heartbeat.py", "created_at": utcnow()})
    db = Database(database_url)
    try:
        with db.write() as conn:
            conn.execute(denied_networks.insert(), rows)
    finally:
        db.dispose()


def heartbeat_body(agent: int, spool_depth: int | None = None) -> bytes:
    """What an agent reports: versions, spool state (``spool_depth``, or a small number that varies by agent) and each source's health."""
    return json.dumps(
        {
            "agent_version": "0.1.0",
            "ruleset_version": "148583d2a3f6984c",
            "ruleset_error": None,
            "spool_depth": agent % 7 if spool_depth is None else spool_depth,
            "dropped": 0,
            "sources": {
                "files": {"state": "ok", "message": "watching 412 folder(s)"},
                "usb": {"state": "ok", "message": "no removable volume mounted"},
                "clipboard": {"state": "ok", "message": "polling every 500 ms"},
                "pipeline": {"state": "ok", "message": f"{agent * 13 % 5000} item(s) processed", "queue_depth": "0"},
            },
        }
    ).encode()


def schedule(agents_count: int, interval: float, seconds: float) -> list[tuple[float, int]]:
    """(offset from start, agent) for every heartbeat in the run, sorted.

    Each agent keeps its own phase, drawn at random within its even share of the interval,
    so the rate stays agents/interval in every second of the run.
    """
    firings = []
    for agent in range(agents_count):
        phase = (agent + random.random()) * interval / agents_count
        beat = 0
        while (at := phase + beat * interval) < seconds:
            firings.append((at, agent))
            beat += 1
    firings.sort()
    return firings


@dataclass
class Results:
    latencies: list[float] = field(default_factory=list)
    """Due time to full reply: what the agent waits, including any wait for a free connection."""
    on_wire: list[float] = field(default_factory=list)
    """Request sent to full reply."""
    lags: list[float] = field(default_factory=list)
    """Due time to the load generator starting the request: its own lateness."""
    first: list[bool] = field(default_factory=list)
    """Per latency: the agent's first heartbeat to this server (the first interval of the run)."""
    errors: Counter[str] = field(default_factory=Counter)
    ok_agents: set[int] = field(default_factory=set)
    sent: int = 0
    started: float = 0.0
    finished: float = 0.0


class KeptAlive:
    """Minimal HTTP/1.1 client: pooled keep-alive connections over asyncio streams, one request each at a time."""

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, path: str, body: bytes, credential: str) -> int:
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {self._host}\r\nAuthorization: Bearer {credential}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        while self._idle:
            reader, writer = self._idle.pop()
            status_line = await self._send(reader, writer, request)
            if status_line:
                return await self._finish(reader, writer, status_line)
            # The server closed this idle connection (uvicorn keeps idle ones 5 s): reconnect, as clients do.
            writer.close()
        reader, writer = await asyncio.open_connection(self._host, self._port)
        status_line = await self._send(reader, writer, request)
        if not status_line:
            writer.close()
            raise ConnectionResetError("the server closed a new connection without a reply")
        return await self._finish(reader, writer, status_line)

    @staticmethod
    async def _send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bytes:
        try:
            writer.write(request)
            return await reader.readline()
        except ConnectionError:
            return b""

    async def _finish(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status_line: bytes) -> int:
        try:
            status = int(status_line.split()[1])
            length, close = 0, False
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
                elif name.lower() == b"connection":
                    close = value.strip().lower() == b"close"
            await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        if close:
            writer.close()
        else:
            self._idle.append((reader, writer))
        return status

    async def close(self) -> None:
        for _, writer in self._idle:
            writer.close()


class HttpxClient:
    """The same requests through httpx.AsyncClient (``--client httpx``)."""

    def __init__(self, base_url: str, connections: int) -> None:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        # trust_env=False: with the default (True) this generator measured a p99 of 160-550 ms
        # against a stub server that answers at once, 8 ms without; the cause was not pursued.
        self._client = httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60.0, trust_env=False)

    async def post(self, path: str, body: bytes, credential: str) -> int:
        reply = await self._client.post(path, content=body, headers={"Authorization": f"Bearer {credential}", "Content-Type": "application/json"})
        return reply.status_code

    async def close(self) -> None:
        await self._client.aclose()


async def beat(
    client: KeptAlive | HttpxClient, slots: asyncio.Semaphore, agent: int, credential: str, body: bytes, due: float, first: bool, results: Results
) -> None:
    results.lags.append(time.perf_counter() - due)
    async with slots:
        sent = time.perf_counter()
        try:
            status = await client.post("/api/v1/heartbeat", body, credential)
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError, httpx.HTTPError) as exc:
            results.errors[type(exc).__name__] += 1
            return
    done = time.perf_counter()
    results.on_wire.append(done - sent)
    results.latencies.append(done - due)
    results.first.append(first)
    if status == 200:
        results.ok_agents.add(agent)
    else:
        results.errors[f"HTTP {status}"] += 1


async def run_load(base_url: str, credentials: list[str], firings: list[tuple[float, int]], connections: int, kind: str = "raw") -> Results:
    results = Results()
    bodies = [heartbeat_body(agent) for agent in range(len(credentials))]
    host, port = base_url.split("//")[1].split(":")
    client = KeptAlive(host, int(port)) if kind == "raw" else HttpxClient(base_url, connections)
    slots = asyncio.Semaphore(connections)
    tasks = []
    met: set[int] = set()
    start = results.started = time.perf_counter()
    try:
        for offset, agent in firings:
            delay = start + offset - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            first = agent not in met
            met.add(agent)
            tasks.append(asyncio.create_task(beat(client, slots, agent, credentials[agent], bodies[agent], start + offset, first, results)))
            results.sent += 1
        await asyncio.gather(*tasks)
    finally:
        results.finished = time.perf_counter()
        await client.close()
    return results


def heartbeats_recorded(database_url: str, since: datetime) -> int:
    """Agents whose last stored heartbeat is from ``since`` on."""
    db = Database(database_url)
    try:
        with db.read() as conn:
            return int(conn.execute(select(func.count()).select_from(agents_table).where(agents_table.c.last_heartbeat_at >= since)).scalar_one())
    finally:
        db.dispose()


@dataclass
class Run:
    """One server's run over the fleet: its code, what the agents saw, what it cost."""

    label: str
    results: Results
    recorded: int
    server_cpu: float
    db_cpu: float
    client_cpu: float


def copy_fleet(scratch: ScratchPostgres, data_dir: Path, pg_url: str | None, into: Path) -> tuple[Path, str]:
    """A second data directory holding the fleet as enrolled (its own database), for a second server.

    Its server.toml names the database alone: the other checkout may not know this one's settings.
    """
    shutil.copytree(data_dir, into)
    if pg_url is None:
        (into / "server.toml").write_text("")
        return into, collector_database_url(into, None)
    copied = scratch.copy(pg_url, "heartbeat")
    (into / "server.toml").write_text(f'database_url = "{copied}"\n')
    return into, copied


def seen_just_now(database_url: str) -> None:
    """The fleet as a server starting under it finds it: every agent seen (and, in steady state,
    heartbeating) within the last interval, however long enrolling it and earlier runs took, so
    none is near ``offline_after_s``. One statement each, not the per-agent store calls."""
    db = Database(database_url)
    now = utcnow()
    try:
        with db.write() as conn:
            conn.execute(agents_table.update().values(last_seen_at=now))
            conn.execute(agents_table.update().where(agents_table.c.last_heartbeat_at.is_not(None)).values(last_heartbeat_at=now))
            conn.execute(agent_addresses.update().values(last_seen_at=now))
    finally:
        db.dispose()


def run_one(
    label: str, code: Path, data_dir: Path, database_url: str, credentials: list[str], args: argparse.Namespace, workers: int, log_path: Path
) -> Run:
    firings = schedule(args.agents, args.interval, args.seconds)
    seen_just_now(database_url)
    server = serve_collector(data_dir, log_path=log_path, workers=workers, code=code)
    run_started = utcnow()
    try:
        server_cpu, db_cpu, client_cpu = server.cpu_seconds(), postgres_backend_cpu_seconds(database_url), time.process_time()
        results = asyncio.run(run_load(server.base_url, credentials, firings, args.connections, args.client))
        server_cpu = server.cpu_seconds() - server_cpu
        db_cpu = postgres_backend_cpu_seconds(database_url) - db_cpu
        client_cpu = time.process_time() - client_cpu
    finally:
        server.stop()
    return Run(label, results, heartbeats_recorded(database_url, run_started), server_cpu, db_cpu, client_cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between one agent's heartbeats (default 60)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to run (default 60)")
    parser.add_argument("--connections", type=int, default=100, help="most HTTP connections the load generator keeps open (default 100)")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw", help="asyncio streams (default) or httpx.AsyncClient")
    parser.add_argument(
        "--workers", type=lambda text: [int(n) for n in text.split(",")], default=[1],
        help="collector worker processes (PostgreSQL only: SQLite takes one writer process); a list such as 1,2 measures each on copies of one enrolled fleet",
    )  # fmt: skip
    parser.add_argument("--cold", action="store_true", help="no previous heartbeat stored: each agent's first of the run is its first contact")
    parser.add_argument("--denied", type=int, default=0, metavar="N", help="denied networks in the database during the run (default none)")
    parser.add_argument("--lock", type=Path, metavar="FILE", help="hold this lock file (flock) while serving, not while enrolling, so benchmarks sharing it do not measure each other")
    parser.add_argument(
        "--against", type=Path, metavar="CHECKOUT",
        help="first serve a copy of the same fleet with the collector of this other checkout (e.g. a `git worktree` of an older commit), then compare",
    )  # fmt: skip
    args = parser.parse_args()
    if max(args.workers) > 1 and args.backend != "postgresql":
        parser.error("--workers needs --backend postgresql (dlp-server serve refuses several SQLite writer processes)")
    if args.against and not (args.against / "server" / "cli.py").is_file():
        parser.error(f"--against {args.against}: not a checkout of this project")

    work = Path(tempfile.mkdtemp(prefix="dlp-heartbeat-"))
    runs: list[Run] = []
    with ScratchPostgres() as scratch:
        pg_url = scratch.create("heartbeat") if args.backend == "postgresql" else None
        data_dir = work / "collector"
        init_collector(data_dir, pg_url)
        database_url = collector_database_url(data_dir, pg_url)
        began = time.perf_counter()
        credentials = enroll_directly(database_url, args.agents, steady=not args.cold)
        enroll_s = time.perf_counter() - began
        console.print(f"enrolled {len(credentials):,} agents through the store functions in {enroll_s:.1f} s")
        if args.denied:
            deny_ranges(database_url, args.denied)
        tables: list[tuple[int, list[Run]]] = []
        lock = open(args.lock, "a") if args.lock else None  # noqa: SIM115 - held until the runs end
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
            console.print(f"holding {args.lock} from {utcnow():%H:%M:%S}, load {os.getloadavg()[0]:.2f}")
        for workers in args.workers:
            runs = []
            for label, code in ([(f"{args.against.name} (--against)", args.against.resolve())] if args.against else []) + [("this checkout", HERE.parent)]:
                name = f"{'against' if code != HERE.parent else 'this'}-{workers}"
                fleet_dir, fleet_url = copy_fleet(scratch, data_dir, pg_url, work / name)
                runs.append(run_one(label, code, fleet_dir, fleet_url, credentials, args, workers, work / f"{name}.log"))
                console.print(f"{label}, {workers} worker(s): done")
            tables.append((workers, runs))
        if lock is not None:
            console.print(f"released {args.lock} at {utcnow():%H:%M:%S}, load {os.getloadavg()[0]:.2f}")
            lock.close()
    shutil.rmtree(work, ignore_errors=True)
    for workers, runs in tables:
        report(args, workers, runs, enroll_s)
    sys.exit(0 if all(passed(runs[-1]) for _, runs in tables) else 1)


def figures(args: argparse.Namespace, run: Run) -> dict[str, tuple[str, float]]:
    """Each figure's text, and its value for a ratio (0: none)."""
    results = run.results
    wall = results.finished - results.started
    ms = [v * 1000 for v in results.latencies] or [0.0]
    lags = [v * 1000 for v in results.lags] or [0.0]
    wire = [v * 1000 for v in results.on_wire] or [0.0]
    answered = max(1, len(results.latencies))
    p99 = percentile(ms, 0.99)
    errors = sum(results.errors.values())
    return {
        "requests sent": (f"{results.sent:,}", 0.0),
        "achieved rate": (f"{len(results.latencies) / wall:,.1f}/s", 0.0),
        "errors": (f"{errors}" + (f" ({', '.join(f'{k}: {n}' for k, n in results.errors.items())})" if results.errors else ""), 0.0),
        "latency p50": (f"{statistics.median(ms):.1f} ms", statistics.median(ms)),
        "latency p95": (f"{percentile(ms, 0.95):.1f} ms", percentile(ms, 0.95)),
        "latency p99 (target < 100 ms)": (f"{p99:.1f} ms " + ("met" if p99 < 100 else "MISSED"), p99),
        "latency max": (f"{max(ms):.1f} ms", max(ms)),
        **split_latencies(results),
        "send to reply p50 / p99 (no wait for a connection)": (f"{statistics.median(wire):.1f} / {percentile(wire, 0.99):.1f} ms", 0.0),
        "load generator lateness p99 / max (in latency)": (f"{percentile(lags, 0.99):.1f} / {max(lags):.1f} ms", 0.0),
        "agents with this run's heartbeat stored": (f"{run.recorded:,} of {len(results.ok_agents):,} answered 200", 0.0),
        "server CPU (process tree), % of a core": (f"{100 * run.server_cpu / wall:.0f}%", 0.0),
        "server CPU a heartbeat": (f"{1000 * run.server_cpu / answered:.2f} ms", run.server_cpu / answered),
        "PostgreSQL backends CPU a heartbeat (approx.)": (
            f"{1000 * run.db_cpu / answered:.2f} ms ({100 * run.db_cpu / wall:.0f}% of a core)" if args.backend == "postgresql" else "-",
            run.db_cpu / answered,
        ),
        "load generator CPU": (f"{100 * run.client_cpu / wall:.0f}% of a core", 0.0),
    }


def split_latencies(results: Results) -> dict[str, tuple[str, float]]:
    """p50 / p99 of each agent's first heartbeat to this server (the first interval: a collector
    just started meets every agent) and of the later ones, when the run is longer than an interval."""
    first = [v * 1000 for v, f in zip(results.latencies, results.first, strict=True) if f]
    later = [v * 1000 for v, f in zip(results.latencies, results.first, strict=True) if not f]
    if not first or not later:
        return {}
    return {
        "first heartbeat to this server p50 / p99": (f"{statistics.median(first):.1f} / {percentile(first, 0.99):.1f} ms", percentile(first, 0.99)),
        "later heartbeats p50 / p99": (f"{statistics.median(later):.1f} / {percentile(later, 0.99):.1f} ms", percentile(later, 0.99)),
    }


def passed(run: Run) -> bool:
    results = run.results
    ms = [v * 1000 for v in results.latencies] or [0.0]
    return percentile(ms, 0.99) < 100 and not results.errors and run.recorded == len(results.ok_agents)


def report(args: argparse.Namespace, workers_count: int, runs: list[Run], enroll_s: float) -> None:
    state = "cold (first contact)" if args.cold else "steady state"
    workers = f", {workers_count} workers" if workers_count > 1 else ""
    title = f"Heartbeats: {args.agents:,} agents every {args.interval:g} s ({args.agents / args.interval:,.1f}/s) for {args.seconds:g} s, {args.backend}{workers}, {state}"
    extra = f", {args.denied:,} denied ranges" if args.denied else ""
    table = Table(title=f"{title}{extra}, {args.client} client, up to {args.connections} kept-alive connections; enrolled {args.agents:,} in {enroll_s:.0f} s")
    table.add_column("figure")
    columns = [figures(args, run) for run in runs]
    for run in runs:
        table.add_column(run.label, justify="right")
    if len(runs) == 2:
        table.add_column("ratio (this / against)", justify="right")
    for name in columns[0]:
        row = [name, *(column.get(name, ("-", 0.0))[0] for column in columns)]
        if len(runs) == 2:
            before, after = columns[0].get(name, ("", 0.0))[1], columns[1].get(name, ("", 0.0))[1]
            row.append(f"{after / before:.2f}" if before and after else "")
        table.add_row(*row)
    console.print(table)


if __name__ == "__main__":
    main()
