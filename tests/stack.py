"""A collector and an agent as real processes on loopback, and what tests do with them."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.credentials import Credentials
from agent.spool import Spool
from agent.transport import CollectorClient
from tests.agent_process import Agent, write_config
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
    started: list[Agent | ServeProcess] = field(default_factory=list)
    """Every process the test started, killed by the fixture whatever the test did to it."""

    def collector(self, port: int | None = None, tls: tuple[Path, Path] | None = None) -> ServeProcess:
        serve = ServeProcess(self.data_dir, dict(os.environ), port=port, tls=tls)
        self.started.append(serve)  # before waiting: one that never gets ready is still stopped
        serve.wait_ready()
        return serve

    def agent(self, config: Path) -> Agent:
        agent = Agent(config)
        self.started.append(agent)
        return agent

    def stop_all(self) -> None:
        """Kill what the test started, newest first; one that will not stop does not spare the others."""
        errors = []
        while self.started:
            try:
                self.started.pop().stop(signal.SIGKILL)
            except Exception as error:
                errors.append(error)
        if errors:
            raise errors[0]

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

    def stored(self) -> int:
        """Events at the collector, agent-health events aside."""
        with sqlite3.connect(self.data_dir / "collector.db") as db:
            return db.execute("SELECT COUNT(*) FROM events WHERE channel != 'agent'").fetchone()[0]

    def stored_rows(self) -> list[tuple[str, str | None]]:
        """(id, path) of every event at the collector, agent-health events aside."""
        with sqlite3.connect(self.data_dir / "collector.db") as db:
            return db.execute("SELECT id, path FROM events WHERE channel != 'agent'").fetchall()

    def assert_each_once(self, produced: Iterable[str]) -> None:
        """The collector holds exactly the events ``produce`` made, each once and under its own id."""
        faults = delivery_faults(list(produced), self.stored_rows())
        assert not faults, "; ".join(faults)

    def stored_types(self) -> list[str]:
        with sqlite3.connect(self.data_dir / "collector.db") as db:
            return [t for (t,) in db.execute("SELECT type FROM events ORDER BY seq")]


@pytest.fixture
def stack(tmp_path: Path, rules_dir: Path) -> Iterator[Stack]:
    data_dir = tmp_path / "collector"
    result = cli("server.cli", "init", "--data-dir", str(data_dir), "--json")
    assert result.returncode == 0, result.stderr
    made = Stack(tmp_path, data_dir, json.loads(result.stdout)["api_token"], rules_dir)
    try:
        yield made
    finally:
        made.stop_all()


def event_path(event_id: str) -> str:
    """The path ``produce`` gives an event: its content names its id, so a copy under another id shows."""
    return f"/home/jdoe/Desktop/{event_id}.txt"


def delivery_faults(produced: list[str], stored: list[tuple[str, str | None]]) -> list[str]:
    """What keeps ``stored`` (id, path) rows from being ``produced`` delivered exactly once; empty when nothing does.

    The collector's id column is unique, so counting distinct ids there proves nothing: the rows are
    compared with the ids the agent was given, and each row's content with the event that id names.
    """
    faults = []
    expected = set(produced)
    if len(expected) != len(produced):
        faults.append(f"the test produced {len(produced) - len(expected)} ids twice")
    ids = Counter(event_id for event_id, _ in stored)
    paths = Counter(path for _, path in stored)
    if len(stored) != len(expected):
        faults.append(f"stored {len(stored)} for {len(expected)} produced")
    checks = {
        "missing": expected - ids.keys(),
        "never produced": ids.keys() - expected,
        "id stored twice": {event_id for event_id, count in ids.items() if count > 1},
        "event stored under a second id": {str(path) for path, count in paths.items() if count > 1},
        "id holding another event": {event_id for event_id, path in stored if event_id in expected and path != event_path(event_id)},
    }
    faults += [f"{what}: {len(found)}, e.g. {sorted(found)[:3]}" for what, found in checks.items() if found]
    return faults


def produce(spool_path: Path, count: int, *, matched: bool = True, max_bytes: int = 1 << 30) -> list[str]:
    """Put ``count`` events into the agent's spool (``max_bytes``: the agent's cap, which each writer enforces)."""
    ids = []
    with Spool(str(spool_path), max_bytes=max_bytes) as spool:
        for _ in range(count):
            event_id = str(uuid.uuid4())
            event = {"schema": 1, "id": event_id, "type": "file.write", "channel": "file", "occurred_at": "2026-11-24T09:00:00.000Z",
                     "host": "ws-1", "path": event_path(event_id), "status": "match" if matched else "clean",
                     "severity": "high" if matched else None,
                     "matches": [{"rule": "secret_word", "namespace": "testpack", "severity": "high", "offsets": [0]}] if matched else []}
            spool.put(event, matched=matched)
            ids.append(event_id)
    return ids


def spool_depth(spool_path: Path) -> int:
    with Spool.open_readonly(str(spool_path)) as reader:
        return reader.depth()


def delivered(stack: Stack, expected: int, *, timeout: float = 120) -> None:
    wait_for(lambda: stack.stored() >= expected, timeout=timeout, interval=0.2, message=f"{expected} events at the collector")


class FixedLink:
    """One client, no credentials file: the shipper's view of an enrolled agent."""

    def __init__(self, client: CollectorClient) -> None:
        self.identity = None
        self._client = client

    def current(self) -> tuple[CollectorClient, Credentials | None]:
        return self._client, None

    def close(self) -> None:
        self._client.close()
