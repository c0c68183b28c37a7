"""Collector benchmarks' plumbing: data directories, scratch PostgreSQL databases and server processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("DLP_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1) of a non-empty sequence."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered))) - 1))]


class ScratchPostgres:
    """Databases created beside ``PG_ADMIN_URL``'s for one run, dropped when it ends."""

    def __init__(self) -> None:
        self._admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        self._names: list[str] = []

    def create(self, purpose: str) -> str:
        name = f"dlp_bench_{purpose}_{uuid.uuid4().hex[:8]}"
        with self._admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self._names.append(name)
        return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"

    def copy(self, url: str, purpose: str) -> str:
        """A new database holding what ``url``'s (one of this run's, with no open connection) holds."""
        name = f"dlp_bench_{purpose}_{uuid.uuid4().hex[:8]}"
        with self._admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{url.rsplit("/", 1)[1]}"'))
        self._names.append(name)
        return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"

    def __enter__(self) -> ScratchPostgres:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._names:
            return
        with self._admin.connect() as conn:
            for name in self._names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self._admin.dispose()


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def dlp_server(*args: str, data_dir: Path) -> dict[str, Any]:
    """Run one ``dlp-server ... --json`` command as a user would and return its JSON."""
    argv = [sys.executable, "-m", "server.cli", *args, "--data-dir", str(data_dir), "--json"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"dlp-server {' '.join(args)} failed: {done.stderr.strip()}")
    return json.loads(done.stdout)


def init_collector(data_dir: Path, database_url: str | None) -> dict[str, Any]:
    """``dlp-server init`` a data directory; PostgreSQL is named in its server.toml."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if database_url:
        (data_dir / "server.toml").write_text(f'database_url = "{database_url}"\n')
    return dlp_server("init", data_dir=data_dir)


def collector_database_url(data_dir: Path, database_url: str | None) -> str:
    return database_url or sqlite_url(data_dir / "collector.db")


class ServerProcess:
    """An HTTP server in its own process on a loopback port, ready once ``ready_path`` answers 200."""

    def __init__(
        self, name: str, argv: Sequence[str], *, port: int, log_path: Path, ready_path: str, env: dict[str, str] | None = None, cwd: Path = ROOT
    ) -> None:
        self.name = name
        self.base_url = f"http://127.0.0.1:{port}"
        self.port = port
        self._log = open(log_path, "wb")
        self.log_path = log_path
        self.proc = subprocess.Popen(list(argv), cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        self._ps = psutil.Process(self.proc.pid)
        self._wait_ready(ready_path)

    def _wait_ready(self, path: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.base_url + path, timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        self.stop()
        raise SystemExit(f"{self.name} did not become ready in {timeout:.0f} s; see {self.log_path}")

    def cpu_seconds(self) -> float:
        """User plus system CPU time so far of the server's whole process tree: with
        ``--workers N`` the supervisor does little and the workers (its children) do the work.

        A child that exited and was waited for counts through its parent's ``children_*`` times.
        """
        total = 0.0
        for proc in (self._ps, *self._children()):
            try:
                times = proc.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            total += times.user + times.system + (times.children_user + times.children_system if proc is self._ps else 0.0)
        return total

    def _children(self) -> list[psutil.Process]:
        try:
            return self._ps.children(recursive=True)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return []

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_collector(data_dir: Path, *, log_path: Path, workers: int = 1, code: Path = ROOT) -> ServerProcess:
    """A real ``dlp-server serve`` on an initialised data directory, run from the checkout ``code``
    (another worktree serves the same data with that commit's collector)."""
    port = free_port()
    argv = [sys.executable, "-m", "server.cli", "serve", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--workers", str(workers)]
    return ServerProcess("dlp-server serve", argv, port=port, log_path=log_path, ready_path="/healthz", cwd=code)


def postgres_backend_cpu_seconds(database_url: str) -> float:
    """CPU time so far of the PostgreSQL backends serving ``database_url``'s database (0 for SQLite).

    Approximate: a backend that exits between two readings (a pool's overflow connection)
    takes its CPU time with it.
    """
    if not database_url.startswith("postgresql"):
        return 0.0
    name = database_url.rsplit("/", 1)[1]
    total = 0.0
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or ())
            if cmdline.startswith("postgres:") and f" {name} " in f" {cmdline} ":
                times = proc.cpu_times()
                total += times.user + times.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total
