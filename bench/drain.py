"""Draining a backlog after an outage: 20,000 agents, each holding 100 spooled events, come back at once.

Usage: python bench/drain.py [--backend sqlite|postgresql] [--workers N] [--agents 20000] [--events-per-agent 100]
                             [--backlog-agents N] [--outage 600] [--interval 60] [--after 60] [--max-seconds 600]
                             [--max-in-flight N] [--code CHECKOUT] [--lock FILE]

The agents are enrolled straight on the database (bench/heartbeat.py's ``enroll_directly``, not
timed), then the outage is written as the collector's sweeps leave it: every agent last seen
``--outage`` seconds ago, and offline when that is longer than ``agents.offline_after_s`` (the
default, 600 s, is: each agent's first heartbeat back is an offline -> online transition). Each agent's backlog is built as the real agent sends it (``event_record()`` bodies,
the batch size of ``[server] batch_events``, JSON gzipped at level 5 as agent/transport.py does),
before a real ``dlp-server serve`` starts. Then one asyncio process plays the fleet the moment
the collector is back, each agent as the real one behaves after an outage:

- its heartbeat thread failed through the outage, retrying every 15 s three times, then after 30 s and
  then about once an interval (agent/heartbeat.py ``retry_delay``, jittered), so its first heartbeat back lands
  somewhere in the first one and a half intervals; after the first answer it takes a new random
  phase within ``--interval`` and then beats every ``--interval`` seconds after each answer;
- its shipper was backed off, and since its heartbeats failed too (``collector_lost``) each wait
  lasted ``LOST_WAIT_S`` at least (agent/shipper.py ``lost_wait``). It ships when that wait runs out
  or when a heartbeat gets through after a failed one (``collector_back``); a heartbeat reply that
  names its turn (``ship_after_s``, server/pacing.py) makes it wait for that turn, the latest reply
  winning, and without one it waits the random ``RETURN_JITTER_S`` at most; then it posts its
  batches back to back; a 429 or 503 (or a timeout, a refused connection) waits the next backoff
  delay or the Retry-After, whichever is longer (a 429's Retry-After of at most
  ``PACED_RETRY_AFTER_S`` waited out whole, unless a heartbeat names another turn), exactly as the
  shipper does;
- every request has the agent's 30 s timeout. Shipping opens a connection per batch; heartbeats
  go over a pool of kept-alive connections (``--heartbeat-connections``), as bench/heartbeat.py.

Drain time runs from the first request to the last batch answered 200; the events stored are
then counted in the database (``channel <> 'agent'``) and must equal agents x events. Heartbeat
latency runs from the moment a heartbeat is due to its full reply (the generator's own lateness
and any wait for a pooled connection included) and is reported for heartbeats due while the
backlog drains and, as the peer in the same run, for the ``--after`` seconds after it (the same
fleet and collector without a backlog). Target: heartbeat p99 < 100 ms while draining.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import gzip
import json
import multiprocessing
import os
import random
import shutil
import statistics
import struct
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text, update

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from heartbeat import enroll_directly, heartbeat_body  # noqa: E402
from serving import (  # noqa: E402
    ScratchPostgres,
    collector_database_url,
    init_collector,
    percentile,
    postgres_backend_cpu_seconds,
    serve_collector,
)

from agent.config import ServerSection  # noqa: E402
from agent.heartbeat import LOST_AFTER, first_delay_back, retry_delay  # noqa: E402
from agent.shipper import BACKOFF_MAX_S, LOST_WAIT_S, PACED_RETRY_AFTER_S, RETURN_JITTER_S, Backoff, lost_wait  # noqa: E402
from server.db.engine import Database  # noqa: E402
from server.db.tables import agents as agents_table  # noqa: E402
from server.settings import AgentsSection  # noqa: E402
from server.store.sql import utcnow  # noqa: E402
from tests.collector_env import event_record  # noqa: E402

SEVERITIES = ("low", "medium", "high", "critical")
AGENT_BATCH_EVENTS = ServerSection().batch_events
AGENT_TIMEOUT_S = ServerSection().timeout_s
console = Console(width=160)


def agent_batches(agent: int, events: int, batch_events: int, seed: int) -> list[bytes]:
    """One agent's spooled events as the gzip bodies its shipper posts (agent/transport.py's encoding)."""
    rng = random.Random(seed * 1_000_003 + agent)
    records = [
        event_record(
            id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            host=f"ws-{agent:05d}",
            user=f"user{rng.randrange(50)}",
            path=f"/media/user/STICK/project-{rng.randrange(1000)}/file-{rng.randrange(10**6)}.zip",
            sha256=rng.randbytes(32).hex(),
            severity=rng.choice(SEVERITIES),
        )
        for _ in range(events)
    ]
    return [
        gzip.compress(json.dumps({"events": records[i : i + batch_events]}, ensure_ascii=False, separators=(",", ":")).encode("utf-8"), compresslevel=5)
        for i in range(0, events, batch_events)
    ]


def _batches_for(span: tuple[int, int, int, int, int]) -> list[list[bytes]]:
    start, stop, events, batch_events, seed = span
    return [agent_batches(agent, events, batch_events, seed) for agent in range(start, stop)]


def build_backlogs(agents: int, events: int, batch_events: int, seed: int) -> list[list[bytes]]:
    """Every agent's batches, built in two processes before the clock starts."""
    if not events:
        return [[] for _ in range(agents)]
    step = 500
    spans = [(start, min(agents, start + step), events, batch_events, seed) for start in range(0, agents, step)]
    with ProcessPoolExecutor(2) as pool:
        return [batches for chunk in pool.map(_batches_for, spans) for batches in chunk]


class HttpError(Exception):
    """No usable answer (connection refused or reset, a malformed reply)."""


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """Send ``request`` and read the answer: (status, headers, body)."""
    writer.write(request)
    status_line = await reader.readline()
    if not status_line:
        raise HttpError("closed without an answer")
    status = int(status_line.split()[1])
    headers: dict[bytes, bytes] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, await reader.readexactly(int(headers.get(b"content-length", b"0")))


def _request(host: str, path: str, body: bytes, credential: str, *, gzipped: bool) -> bytes:
    encoding = "Content-Encoding: gzip\r\n" if gzipped else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: dlp-agent/bench\r\nAuthorization: Bearer {credential}\r\n"
        f"Content-Type: application/json\r\n{encoding}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class HeartbeatPool:
    """Kept-alive connections for heartbeats, at most ``size`` in use; a connection that fails or times out is closed."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self._host, self._port = host, port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._slots = asyncio.Semaphore(size)

    async def post(self, body: bytes, credential: str) -> tuple[int, bytes]:
        request = _request(self._host, "/api/v1/heartbeat", body, credential, gzipped=False)
        async with self._slots:
            while self._idle:
                reader, writer = self._idle.pop()
                try:
                    return await self._use(reader, writer, request)
                except (HttpError, ConnectionError):
                    continue  # uvicorn closed this idle connection (it keeps them 5 s): take another, as clients do
            reader, writer = await asyncio.open_connection(self._host, self._port)
            return await self._use(reader, writer, request)

    async def _use(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bytes]:
        try:
            status, headers, content = await _exchange(reader, writer, request)
        except BaseException:
            writer.close()
            raise
        if headers.get(b"connection", b"").lower() != b"close":
            self._idle.append((reader, writer))
        else:
            writer.close()
        return status, content

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()


@dataclass
class Answer:
    status: int
    retry_after: float | None = None
    accepted: int = 0
    duplicates: int = 0


async def post_batch(host: str, port: int, body: bytes, credential: str) -> Answer:
    """One shipper attempt on its own connection."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        status, headers, content = await _exchange(reader, writer, _request(host, "/api/v1/events", body, credential, gzipped=True))
    finally:
        writer.close()
    if status == 200:
        reply = json.loads(content)
        return Answer(status, accepted=reply["accepted"], duplicates=len(reply["duplicates"]))
    retry_after = headers.get(b"retry-after")
    return Answer(status, float(retry_after) if retry_after else None)


@dataclass
class Beat:
    due: float
    latency: float
    ok: bool


@dataclass
class Fleet:
    """What the simulated fleet saw."""

    beats: list[Beat] = field(default_factory=list)
    beat_errors: Counter[str] = field(default_factory=Counter)
    batch_latencies: list[float] = field(default_factory=list)
    """Send to 200 answer of each stored batch."""
    refused_latencies: list[float] = field(default_factory=list)
    """Send to a 429/503 answer."""
    answers: Counter[str] = field(default_factory=Counter)
    lateness: list[float] = field(default_factory=list)
    """Each heartbeat's start minus the moment it was due: the load generator's own delay."""
    accepted: int = 0
    duplicates: int = 0
    first_request: float = 0.0
    last_stored: float = 0.0
    agents_done: int = 0
    shipper_cpu: float = 0.0
    """CPU time of the shipping process."""
    stop_beats: float = float("inf")


async def sleep_until(moment: float) -> None:
    delay = moment - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


NO_TURN = -1
BACK, LOST = 1, 2
_MESSAGE = struct.Struct("<iib")
"""Heartbeat process -> shipping process: agent, the turn a reply named (``NO_TURN``: none), BACK/LOST/0."""


def ship_after(content: bytes) -> int:
    """The reply's ``ship_after_s``, or ``NO_TURN``."""
    if b'"ship_after_s":' not in content:
        return NO_TURN
    turn = json.loads(content).get("ship_after_s")
    return int(turn) if isinstance(turn, int | float) and turn >= 0 else NO_TURN


@dataclass
class ShipperState:
    """What agent/shipper.py keeps between its waits, set from the heartbeat process's messages."""

    back: asyncio.Event = field(default_factory=asyncio.Event)
    repaced: asyncio.Event = field(default_factory=asyncio.Event)
    not_before: float = 0.0
    turn_told: bool = False
    lost: bool = True

    def heard(self, turn: int, signal: int) -> None:
        """``Shipper.heard`` (first), then ``collector_back`` / ``collector_lost``."""
        if signal != LOST:
            self.turn_told = turn != NO_TURN
            if self.turn_told:
                self.not_before = time.perf_counter() + min(turn, PACED_RETRY_AFTER_S)
                self.repaced.set()
        if signal == BACK:
            self.lost = False
            self.back.set()
        elif signal == LOST:
            self.lost = True


async def wait_event(event: asyncio.Event, until: float) -> bool:
    """``event.wait(delay)``: True when set before ``until``; the event is cleared after."""
    delay = until - time.perf_counter()
    ended = event.is_set()
    if delay > 0 and not ended:
        try:
            await asyncio.wait_for(event.wait(), delay)
            ended = True
        except TimeoutError:
            pass
    event.clear()
    return ended


async def wait_turn(state: ShipperState) -> None:
    """The shipper's ``ship_once`` check: while the collector's named moment is ahead, wait for it (a new turn re-times the wait)."""
    while state.not_before > time.perf_counter():
        await wait_event(state.repaced, state.not_before)


async def wait_back(state: ShipperState, delay: float, rng: random.Random, *, lengthen: bool = True) -> None:
    """The shipper's back-off: the delay (``lost_wait`` of it while heartbeats fail, unless ``lengthen``
    is False), or sooner when a heartbeat gets through again; then its random ``RETURN_JITTER_S``
    unless the reply named a turn."""
    if state.lost and lengthen:
        delay = lost_wait(delay, rng.random)
    if await wait_event(state.back, time.perf_counter() + delay) and not state.turn_told:
        await asyncio.sleep(rng.uniform(0.0, RETURN_JITTER_S))


class Simulation:
    def __init__(self, args: argparse.Namespace, base_url: str, credentials: list[str], backlogs: list[list[bytes]]) -> None:
        self.args = args
        self.host, port = base_url.split("//")[1].split(":")
        self.port = int(port)
        self.credentials = credentials
        self.backlogs = backlogs
        self.fleet = Fleet()
        self.rng = random.Random(args.seed)
        self.bodies = [heartbeat_body(agent, 0) for agent in range(len(credentials))]
        self.depths = multiprocessing.RawArray("i", [args.events_per_agent if batches else 0 for batches in backlogs])
        """Each agent's spool depth as its heartbeat reports it: written by the shipping process, shared (forked) with the heartbeat one."""
        self.expected = sum(args.events_per_agent for batches in backlogs if batches)

    def _mark_first(self, now: float) -> None:
        if not self.fleet.first_request:
            self.fleet.first_request = now

    def first_beat(self, start: float) -> tuple[float, int]:
        """When an agent's first heartbeat after the outage is due, and how many had failed before it:
        its last one before the outage at a random point of an interval, then agent/heartbeat.py's retries."""
        due, failures = start - self.args.outage - self.rng.uniform(0, self.args.interval), 0
        while due < start:
            failures += 1
            due += retry_delay(failures, self.args.interval, self.rng.random)
        return due, failures

    async def heartbeats(self, agent: int, pool: HeartbeatPool, back_fd: int, start: float) -> None:
        """agent/heartbeat.py after an outage: the first beat where its retries fall, then every interval after an answer."""
        fleet = self.fleet
        due, failures = self.first_beat(start)
        while due < fleet.stop_beats:
            await sleep_until(due)
            began = time.perf_counter()
            fleet.lateness.append(began - due)
            self._mark_first(began)
            content = b""
            try:
                async with asyncio.timeout(AGENT_TIMEOUT_S):
                    depth = self.depths[agent]
                    body = heartbeat_body(agent, depth) if depth else self.bodies[agent]
                    status, content = await pool.post(body, self.credentials[agent])
            except (OSError, HttpError, ValueError, IndexError, asyncio.IncompleteReadError, TimeoutError) as exc:
                status, reason = 0, type(exc).__name__
            else:
                reason = f"HTTP {status}"
            done = time.perf_counter()
            fleet.beats.append(Beat(due, done - due, status == 200))
            if status == 200:
                # The shipper's heard() (every reply: one without a turn resets it) and collector_back().
                self._tell_shipper(back_fd, agent, ship_after(content), BACK if failures else 0)
                due = done + (first_delay_back(self.args.interval, self.rng.random) if failures else self.args.interval)
                failures = 0
            else:
                fleet.beat_errors[reason] += 1
                failures += 1
                if failures == LOST_AFTER:
                    self._tell_shipper(back_fd, agent, NO_TURN, LOST)
                due = done + retry_delay(failures, self.args.interval, self.rng.random)

    def _tell_shipper(self, back_fd: int, agent: int, turn: int, signal: int) -> None:
        """A message to the shipping process, until it has ended (then nothing reads the pipe, and a full one would block this loop)."""
        if self.fleet.stop_beats == float("inf"):
            os.write(back_fd, _MESSAGE.pack(agent, turn, signal))

    async def shipper(self, agent: int, state: ShipperState, start: float) -> None:
        """agent/shipper.py after an outage: backed off (``lost_wait``) until the delay ends or a heartbeat gets through."""
        fleet, batches = self.fleet, self.backlogs[agent]
        if not batches:
            fleet.agents_done += 1
            return
        backoff = Backoff(rand=self.rng.random)
        # Where the agent is in its cycle of retries when the collector comes back (heartbeats failing too).
        pending = start - 2 * LOST_WAIT_S
        while pending < start:
            pending += lost_wait(backoff.next(), self.rng.random)
        await wait_back(state, pending - time.perf_counter(), self.rng, lengthen=False)  # the wait under way: lost_wait already drawn
        sent = 0
        while sent < len(batches):
            await wait_turn(state)
            began = time.perf_counter()
            self._mark_first(began)
            try:
                async with asyncio.timeout(AGENT_TIMEOUT_S):
                    answer = await post_batch(self.host, self.port, batches[sent], self.credentials[agent])
            except (OSError, HttpError, ValueError, KeyError, IndexError, asyncio.IncompleteReadError, TimeoutError) as exc:
                answer, reason = Answer(0), type(exc).__name__
            else:
                reason = f"HTTP {answer.status}"
            done = time.perf_counter()
            fleet.answers[reason] += 1
            if answer.status == 200:
                fleet.batch_latencies.append(done - began)
                fleet.accepted += answer.accepted
                fleet.duplicates += answer.duplicates
                fleet.last_stored = done
                sent += 1
                self.depths[agent] = max(0, self.args.events_per_agent - sent * self.args.batch_events)
                backoff.reset()
                continue
            if answer.status in (429, 503):
                fleet.refused_latencies.append(done - began)
            delay = backoff.next()
            if answer.retry_after is not None and answer.retry_after > delay:
                if answer.status == 429 and answer.retry_after <= PACED_RETRY_AFTER_S:
                    state.not_before = done + answer.retry_after  # the collector's pacing: waited out, as the shipper does
                    continue
                delay = max(delay, min(answer.retry_after, BACKOFF_MAX_S))
            await wait_back(state, delay, self.rng)
        fleet.agents_done += 1

    async def beat_all(self, start: float, back_fd: int, shipped: Connection) -> None:
        """This process: every agent's heartbeats, until ``--after`` seconds after the shipping process reports."""
        fleet, args = self.fleet, self.args
        pool = HeartbeatPool(self.host, self.port, args.heartbeat_connections)
        beating = [asyncio.create_task(self.heartbeats(a, pool, back_fd, start)) for a in range(len(self.credentials))]
        progress = asyncio.create_task(self.progress(start))
        try:
            while not shipped.poll():
                await asyncio.sleep(0.2)
            self.on_shipped(shipped.recv())
            fleet.stop_beats = time.perf_counter() + args.after
            await asyncio.wait(beating, timeout=args.after + AGENT_TIMEOUT_S + 2 * args.interval)
        finally:
            for task in [*beating, progress]:
                task.cancel()
            await asyncio.gather(*beating, progress, return_exceptions=True)
            pool.close()

    def on_shipped(self, shipping: Fleet | str) -> None:
        """Set by ``drive`` to read the CPU times when the drain ends; merges the shipping process's figures."""
        if isinstance(shipping, str):
            raise SystemExit(f"the shipping process failed: {shipping}")
        fleet = self.fleet
        fleet.first_request = min(filter(None, (fleet.first_request, shipping.first_request)), default=0.0)
        for name in ("batch_latencies", "refused_latencies", "answers", "accepted", "duplicates", "last_stored", "agents_done", "shipper_cpu"):
            setattr(fleet, name, getattr(shipping, name))

    async def ship_all(self, start: float, back_fd: int) -> None:
        """The shipping process: every agent's shipper, woken by the heartbeat process through ``back_fd``."""
        states = [ShipperState() for _ in self.credentials]
        pending = b""

        def on_message() -> None:
            nonlocal pending
            pending += os.read(back_fd, 65536)
            whole = len(pending) - len(pending) % _MESSAGE.size
            for agent, turn, signal in _MESSAGE.iter_unpack(pending[:whole]):
                states[agent].heard(turn, signal)
            pending = pending[whole:]

        asyncio.get_running_loop().add_reader(back_fd, on_message)
        shipping = [asyncio.create_task(self.shipper(a, states[a], start)) for a in range(len(self.credentials))]
        progress = asyncio.create_task(self.ship_progress(start))
        try:
            await asyncio.wait(shipping, timeout=self.args.max_seconds + start - time.perf_counter())
        finally:
            for task in [*shipping, progress]:
                task.cancel()
            await asyncio.gather(*shipping, progress, return_exceptions=True)

    async def progress(self, start: float) -> None:
        fleet = self.fleet
        while True:
            await asyncio.sleep(15)
            now = time.perf_counter()
            recent = [b.latency * 1000 for b in fleet.beats if b.due + b.latency >= now - 15]
            console.print(f"{now - start:5.0f} s: heartbeats answered in the last 15 s: {len(recent):,}, p99 {percentile(recent or [0.0], 0.99):,.0f} ms")

    async def ship_progress(self, start: float) -> None:
        fleet = self.fleet
        while True:
            await asyncio.sleep(15)
            console.print(
                f"{time.perf_counter() - start:5.0f} s: {fleet.agents_done:,} agents drained, "
                f"{', '.join(f'{k}: {n:,}' for k, n in fleet.answers.most_common())}"
            )


def ship_process(simulation: Simulation, start: float, back_fd: int, results: Connection) -> None:
    """The shippers' own process (forked, so the backlogs are not copied through a pipe), keeping the heartbeats' timing clear of them."""
    try:
        asyncio.run(simulation.ship_all(start, back_fd))
        simulation.fleet.shipper_cpu = time.process_time()
        results.send(simulation.fleet)
    except Exception as exc:  # noqa: BLE001 (reported by the parent)
        results.send(f"{type(exc).__name__}: {exc}")


def write_outage(database_url: str, seconds: float) -> str:
    """Every agent last seen ``seconds`` ago, and offline if that is past ``agents.offline_after_s``
    (the sweeps that ran while the agents could not reach the collector). Returns the status set."""
    status = "offline" if seconds > AgentsSection.model_fields["offline_after_s"].default else "online"
    seen = utcnow() - timedelta(seconds=seconds)
    db = Database(database_url)
    try:
        with db.write() as conn:
            conn.execute(update(agents_table).values(last_seen_at=seen, last_heartbeat_at=seen, status=status))
    finally:
        db.dispose()
    return status


def count_events(database_url: str) -> int:
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM events WHERE channel <> 'agent'")).scalar_one())
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--workers", type=int, default=1, help="collector worker processes (PostgreSQL only)")
    parser.add_argument("--agents", type=int, default=20_000)
    parser.add_argument("--events-per-agent", type=int, default=100)
    parser.add_argument("--backlog-agents", type=int, default=None, metavar="N", help="only the first N agents hold a backlog (default: all); the rest only beat")
    parser.add_argument("--batch-events", type=int, default=AGENT_BATCH_EVENTS, help=f"the agent's [server] batch_events (default {AGENT_BATCH_EVENTS})")
    parser.add_argument("--outage", type=float, default=600.0, help="seconds the agents were cut off; past agents.offline_after_s (300) they are offline (default 600)")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between one agent's heartbeats (default 60)")
    parser.add_argument("--after", type=float, default=60.0, help="seconds of heartbeats after the drain, the peer figure (default 60)")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="give up on the drain after this long (default 600)")
    parser.add_argument("--heartbeat-connections", type=int, default=200, help="kept-alive connections for heartbeats (default 200)")
    parser.add_argument("--max-in-flight", type=int, default=None, metavar="N", help="the collector's ingest.max_in_flight (default: its own default)")
    parser.add_argument("--code", type=Path, default=None, metavar="CHECKOUT", help="serve the collector from this checkout (a git worktree), not this one")
    parser.add_argument("--lock", type=Path, default=None, metavar="FILE", help="take this flock after the set-up (enrolling, building batches), for the measured part only")
    parser.add_argument("--seed", type=int, default=20)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dlp-drain-"))
    with ScratchPostgres() as scratch:
        pg_url = scratch.create("drain") if args.backend == "postgresql" else None
        data_dir = work / "collector"
        init_collector(data_dir, pg_url)
        if args.max_in_flight is not None:
            with open(data_dir / "server.toml", "a", encoding="utf-8") as settings:
                settings.write(f"\n[ingest]\nmax_in_flight = {args.max_in_flight}\n")
        database_url = collector_database_url(data_dir, pg_url)
        began = time.perf_counter()
        credentials = enroll_directly(database_url, args.agents, steady=True)
        enroll_s = time.perf_counter() - began
        status = write_outage(database_url, args.outage)
        began = time.perf_counter()
        holders = args.agents if args.backlog_agents is None else min(args.agents, args.backlog_agents)
        backlogs = build_backlogs(holders, args.events_per_agent, args.batch_events, args.seed) + [[] for _ in range(args.agents - holders)]
        build_s = time.perf_counter() - began
        body_bytes = sum(len(b) for batches in backlogs for b in batches)
        console.print(
            f"enrolled {args.agents:,} agents in {enroll_s:.0f} s, {status} after a {args.outage:g} s outage; built {sum(len(b) for b in backlogs):,} batches "
            f"({body_bytes / 1e6:,.0f} MB gzipped) in {build_s:.0f} s"
        )
        lock = open(args.lock, "a") if args.lock else None  # noqa: SIM115 (held until the process ends)
        if lock is not None:
            console.print(f"waiting for {args.lock}")
            fcntl.flock(lock, fcntl.LOCK_EX)
            console.print(f"took {args.lock}; load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
        server = serve_collector(data_dir, log_path=work / "collector.log", workers=args.workers, **({"code": args.code} if args.code else {}))
        simulation = Simulation(args, server.base_url, credentials, backlogs)
        try:
            server_cpu, db_cpu, client_cpu = server.cpu_seconds(), postgres_backend_cpu_seconds(database_url), time.process_time()
            drain_cpu: list[tuple[float, float, float, float]] = []
            merge = simulation.on_shipped

            def on_shipped(shipping: Fleet | str) -> None:
                """CPU is read when the drain ends, not when the trailing heartbeats do."""
                merge(shipping)
                beats_cpu = time.process_time() - client_cpu
                drain_cpu.append((server.cpu_seconds() - server_cpu, postgres_backend_cpu_seconds(database_url) - db_cpu, beats_cpu, simulation.fleet.shipper_cpu))

            simulation.on_shipped = on_shipped  # type: ignore[method-assign]
            back_r, back_w = os.pipe()
            received, sent = multiprocessing.get_context("fork").Pipe(duplex=False)
            start = time.perf_counter() + 2.0  # CLOCK_MONOTONIC: the same clock in both processes
            shipper = multiprocessing.get_context("fork").Process(target=ship_process, args=(simulation, start, back_r, sent), name="shippers")
            shipper.start()
            try:
                asyncio.run(simulation.beat_all(start, back_w, received))
            finally:
                shipper.join(30)
                if shipper.is_alive():
                    shipper.kill()
                    shipper.join()
                os.close(back_r)
                os.close(back_w)
        finally:
            server.stop()
        stored = count_events(database_url)
    shutil.rmtree(work, ignore_errors=True)
    ok = report(args, simulation, stored, drain_cpu[0] if drain_cpu else (0.0, 0.0, 0.0, 0.0))
    sys.exit(0 if ok else 1)


def _ms(values: list[float]) -> list[float]:
    return [v * 1000 for v in values] or [0.0]


def _spread(values: list[float]) -> str:
    ms = _ms(values)
    return f"{statistics.median(ms):,.1f} / {percentile(ms, 0.95):,.1f} / {percentile(ms, 0.99):,.1f} / {max(ms):,.1f} ms"


def report(args: argparse.Namespace, simulation: Simulation, stored: int, cpu: tuple[float, float, float, float]) -> bool:
    fleet = simulation.fleet
    drained = fleet.agents_done == args.agents
    end = fleet.last_stored if drained else fleet.first_request + args.max_seconds
    drain_s = max(1e-9, end - fleet.first_request)
    during = [b for b in fleet.beats if b.due <= end]
    after = [b for b in fleet.beats if b.due > end]
    p99_during = percentile(_ms([b.latency for b in during]), 0.99)
    p99_after = percentile(_ms([b.latency for b in after]), 0.99)
    server_cpu, db_cpu, beats_cpu, ship_cpu = cpu
    batches = len(fleet.batch_latencies)
    expected = simulation.expected
    refusals = fleet.answers["HTTP 429"] + fleet.answers["HTTP 503"]
    title = (
        f"Drain after an outage: {args.agents:,} agents x {args.events_per_agent} events, {args.backend}, {args.workers} process(es), "
        f"ingest.max_in_flight {args.max_in_flight or 'default'}; after a {args.outage:g} s outage; "
        f"heartbeats every {args.interval:g} s" + (f"; {args.backlog_agents:,} agents with a backlog" if args.backlog_agents is not None else "")
    )
    table = Table(title=title)
    for column, justify in (("figure", "left"), ("result", "right"), ("note", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    rows = [
        ("drain time (first request to the last batch stored)", f"{drain_s:,.1f} s" + ("" if drained else " (NOT drained: --max-seconds)"), ""),
        ("events stored (counted in the database)", f"{stored:,} of {expected:,}", "met" if stored == expected else "MISSED"),
        ("events/s while draining", f"{stored / drain_s:,.0f}" if drained else f"{fleet.accepted / drain_s:,.0f}", f"{batches:,} batches answered 200"),
        ("heartbeats due while draining", f"{len(during):,} ({len(during) / drain_s:,.0f}/s)", f"{sum(not b.ok for b in during):,} failed"),
        ("heartbeat p50 / p95 / p99 / max while draining", _spread([b.latency for b in during]), "p99 < 100 ms " + ("met" if p99_during < 100 else "MISSED")),
        (f"heartbeat p50 / p95 / p99 / max in the {args.after:g} s after", _spread([b.latency for b in after]), f"{len(after):,} heartbeats, {sum(not b.ok for b in after):,} failed"),
        ("heartbeat p99 while draining / after", f"{p99_during / max(p99_after, 1e-9):.2f}", "same run, same fleet"),
        ("heartbeat failures", ", ".join(f"{k}: {n:,}" for k, n in fleet.beat_errors.most_common()) or "0", ""),
        ("ingest batch latency p50 / p95 / p99 / max (200s)", _spread(fleet.batch_latencies), "send to answer, on a new connection"),
        ("batch answers", ", ".join(f"{k}: {n:,}" for k, n in fleet.answers.most_common()), f"429 + 503: {refusals:,}"),
        ("refusal latency p50 / p99 (429/503)", f"{statistics.median(_ms(fleet.refused_latencies)):.1f} / {percentile(_ms(fleet.refused_latencies), 0.99):.1f} ms", ""),
        ("duplicates reported by the collector", f"{fleet.duplicates:,}", "batches resent after a lost answer"),
        ("server CPU while draining (process tree)", f"{100 * server_cpu / drain_s:.0f}% of a core", f"{1000 * server_cpu / max(1, stored):.2f} ms an event"),
        ("PostgreSQL backends CPU while draining", f"{100 * db_cpu / drain_s:.0f}% of a core" if args.backend == "postgresql" else "-", ""),
        ("load generator CPU while draining", f"{100 * beats_cpu / drain_s:.0f}% + {100 * ship_cpu / drain_s:.0f}% of a core", "heartbeat process + shipping process"),
        ("machine load average at the end (1 / 5 / 15 min)", " / ".join(f"{v:.1f}" for v in os.getloadavg()), "2 cores"),
        ("heartbeat process lateness p99 / max", f"{percentile(_ms(fleet.lateness), 0.99):.1f} / {max(_ms(fleet.lateness)):.1f} ms", "included in heartbeat latency"),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    return drained and stored == expected and p99_during < 100


if __name__ == "__main__":
    main()
