"""End to end: a file closed in a watched folder -> the event readable through the review API.

Starts a real collector (SQLite) and a real enrolled agent with default intervals, writes
files one at a time into the watched folder, and polls the review API for each file's event.
Then measures the sustained rate one agent ships to one collector: a spool preloaded with
events, drained for a fixed time.

    python bench/e2e.py [--files 1000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from agent.spool import Spool  # noqa: E402
from bench.serving import ROOT, dlp_server, init_collector, percentile, serve_collector  # noqa: E402

MARK = "PROPRIETARY AND CONFIDENTIAL"


def api_events(base_url: str, token: str, limit: int = 200) -> list[dict]:
    request = urllib.request.Request(f"{base_url}/api/v1/events?limit={limit}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())["items"]


def stored_count(data_dir: Path) -> int:
    import sqlite3

    with sqlite3.connect(data_dir / "collector.db") as db:
        return db.execute("SELECT COUNT(*) FROM events WHERE channel != 'agent'").fetchone()[0]


class Agent:
    def __init__(self, home: Path, base_url: str, token: str) -> None:
        self.home = home
        self.watch = home / "Desktop"
        self.watch.mkdir(parents=True, exist_ok=True)
        self.config = home / "agent.toml"
        self.config.write_text(
            f'[files]\nwatch = ["{self.watch}"]\n[usb]\nenabled = false\n[clipboard]\nenabled = false\n[spool]\npath = "spool.db"\n'
        )
        enrolled = subprocess.run(
            [sys.executable, "-m", "agent.cli.main", "enroll", "--config", str(self.config), "--server", base_url, "--token", token],
            cwd=ROOT, capture_output=True, text=True,
        )
        if enrolled.returncode != 0:
            raise SystemExit(f"enroll failed: {enrolled.stderr}")
        self.log = open(home / "agent.log", "ab")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "agent.cli.main", "run", "--config", str(self.config)], cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        time.sleep(1.5)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)


def measure_latency(agent: Agent, base_url: str, token: str, files: int, pause_s: float) -> list[float]:
    """Seconds from each file's close to its event showing in the review API."""
    closed: dict[str, float] = {}
    seen: dict[str, float] = {}
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            now = time.time()
            for item in api_events(base_url, token):
                path = item.get("path") or ""
                if path in closed and path not in seen:
                    seen[path] = now
            time.sleep(0.02)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    for index in range(files):
        path = agent.watch / f"memo-{index:05d}.txt"
        with open(path, "w") as handle:
            handle.write(f"{MARK}\nquarterly numbers {uuid.uuid4()}\n")
        closed[str(path)] = time.time()
        time.sleep(pause_s)
    deadline = time.time() + 30
    while len(seen) < files and time.time() < deadline:
        time.sleep(0.1)
    done.set()
    poller.join(5)
    missing = files - len(seen)
    if missing:
        print(f"warning: {missing} file(s) never showed up within 30 s", file=sys.stderr)
    return [seen[p] - closed[p] for p in seen]


def measure_rate(agent: Agent, data_dir: Path, seconds: float, preload: int) -> tuple[int, float]:
    """Events per second shipped from a preloaded spool (the agent stopped while loading)."""
    agent.stop()
    with Spool(str(agent.home / "spool.db"), max_bytes=1 << 31) as spool:
        for _ in range(preload):
            spool.put(
                {"schema": 1, "id": str(uuid.uuid4()), "type": "file.write", "channel": "file", "occurred_at": "2026-11-24T09:00:00.000Z",
                 "host": "bench", "path": f"/home/bench/Desktop/{uuid.uuid4().hex}.txt", "status": "match", "severity": "high", "size": 1234,
                 "sha256": uuid.uuid4().hex * 2,
                 "matches": [{"rule": "proprietary_and_confidential", "namespace": "confidentiality", "severity": "high", "offsets": [0]}]},
                matched=True,
            )
    before = stored_count(data_dir)
    agent.start()
    started = time.time()
    shipped = 0
    while time.time() - started < seconds and shipped < preload:
        time.sleep(0.5)
        shipped = stored_count(data_dir) - before
    elapsed = time.time() - started
    if shipped >= preload:
        print(f"note: the spool drained in {elapsed:.0f} s, before the {seconds:.0f} s were up; raise --preload", file=sys.stderr)
    return shipped, shipped / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--pause-ms", type=float, default=20.0, help="between files (default 20 ms: 50 files/s)")
    parser.add_argument("--seconds", type=float, default=60.0, help="duration of the sustained-rate run")
    parser.add_argument("--preload", type=int, default=300_000, help="events preloaded into the spool for the rate run")
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="dlp-e2e-") as tmp:
        work = Path(tmp)
        data_dir = work / "collector"
        login = init_collector(data_dir, None)
        server = serve_collector(data_dir, log_path=work / "serve.log")
        try:
            token = dlp_server("token", "create", "--vendor", "bench", data_dir=data_dir)["token"]
            agent = Agent(work / "agent", server.base_url, token)
            agent.start()
            try:
                latencies = measure_latency(agent, server.base_url, login["api_token"], args.files, args.pause_ms / 1000)
                shipped, rate = measure_rate(agent, data_dir, args.seconds, args.preload)
            finally:
                agent.stop()
        finally:
            server.stop()
    table = Table(title="End to end: agent -> collector -> review API (SQLite, default intervals)")
    for column in ("figure", "result", "target"):
        table.add_column(column)
    spread = f"p50 {percentile(latencies, 0.5) * 1000:.0f} ms, p99 {percentile(latencies, 0.99) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
    table.add_row(f"file closed -> event in the review API, {len(latencies)} files", spread, "p99 <= 2 s")
    table.add_row(f"sustained shipping, one agent, up to {args.seconds:.0f} s", f"{rate:,.0f} events/s ({shipped:,} events)", "reported")
    console.print(table)


if __name__ == "__main__":
    main()
