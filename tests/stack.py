"""A collector and an agent as real processes on loopback, and what tests do with them."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from agent.spool import Spool
from tests.agent_process import write_config
from tests.collector_env import ServeProcess
from tests.waiting import wait_for


def cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=120)


@dataclass
class Stack:
    root: Path
    data_dir: Path
    admin_token: str
    rules_dir: Path

    def collector(self, port: int | None = None, tls: tuple[Path, Path] | None = None) -> ServeProcess:
        serve = ServeProcess(self.data_dir, dict(os.environ), port=port, tls=tls)
        serve.wait_ready()
        return serve

    def token(self) -> str:
        result = cli("server.cli", "token", "create", "--data-dir", str(self.data_dir), "--vendor", "acme-bpo", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["token"]

    def agent_config(self, **server: str) -> Path:
        home = self.root / "agent"
        home.mkdir(exist_ok=True)
        lines = "\n".join(f"{key} = {value}" for key, value in server.items())
        return write_config(home, self.rules_dir, server=lines)

    def enroll(self, config: Path, url: str, *extra: str) -> None:
        result = cli("agent.cli.main", "enroll", "--config", str(config), "--server", url, "--token", self.token(), *extra)
        assert result.returncode == 0, result.stdout + result.stderr

    def stored(self) -> tuple[int, int]:
        """(events, distinct ids) at the collector, agent-health events aside."""
        with sqlite3.connect(self.data_dir / "collector.db") as db:
            return db.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM events WHERE channel != 'agent'").fetchone()

    def stored_types(self) -> list[str]:
        with sqlite3.connect(self.data_dir / "collector.db") as db:
            return [t for (t,) in db.execute("SELECT type FROM events ORDER BY seq")]


@pytest.fixture
def stack(tmp_path: Path, rules_dir: Path) -> Stack:
    data_dir = tmp_path / "collector"
    result = cli("server.cli", "init", "--data-dir", str(data_dir), "--json")
    assert result.returncode == 0, result.stderr
    return Stack(tmp_path, data_dir, json.loads(result.stdout)["api_token"], rules_dir)


def produce(spool_path: Path, count: int, *, matched: bool = True, max_bytes: int = 1 << 30) -> list[str]:
    """Put ``count`` events into the agent's spool (``max_bytes``: the agent's cap, which each writer enforces)."""
    ids = []
    with Spool(str(spool_path), max_bytes=max_bytes) as spool:
        for _ in range(count):
            event = {"schema": 1, "id": str(uuid.uuid4()), "type": "file.write", "channel": "file", "occurred_at": "2026-11-24T09:00:00.000Z",
                     "host": "ws-1", "path": f"/home/jdoe/Desktop/{uuid.uuid4().hex}.txt", "status": "match" if matched else "clean",
                     "severity": "high" if matched else None,
                     "matches": [{"rule": "secret_word", "namespace": "testpack", "severity": "high", "offsets": [0]}] if matched else []}
            spool.put(event, matched=matched)
            ids.append(event["id"])
    return ids


def spool_depth(spool_path: Path) -> int:
    with Spool.open_readonly(str(spool_path)) as reader:
        return reader.depth()


def delivered(stack: Stack, expected: int, *, timeout: float = 120) -> None:
    wait_for(lambda: stack.stored()[0] >= expected, timeout=timeout, interval=0.2, message=f"{expected} events at the collector")


@pytest.fixture
def running() -> Iterator[list]:
    """Processes a test starts; killed at the end whatever happened."""
    started: list = []
    yield started
    for process in started:
        process.stop(signal.SIGKILL)
