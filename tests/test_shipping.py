"""Agent to collector through real processes on loopback: nothing lost, nothing doubled.

Events are put into the running agent's spool by the test (as its pipeline would) so that
thousands can be produced quickly; the agent's own shipper moves them.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from agent.spool import Spool
from tests.agent_process import Agent, write_config
from tests.collector_env import ServeProcess, free_port
from tests.conftest import SECRET_WORD
from tests.faultproxy import fault_proxy_factory  # noqa: F401 (fixture)
from tests.tlscerts import self_signed
from tests.waiting import wait_for


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
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
        result = _cli("server.cli", "token", "create", "--data-dir", str(self.data_dir), "--vendor", "acme-bpo", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["token"]

    def agent_config(self, **server: str) -> Path:
        home = self.root / "agent"
        home.mkdir(exist_ok=True)
        lines = "\n".join(f"{key} = {value}" for key, value in server.items())
        return write_config(home, self.rules_dir, server=lines)

    def enroll(self, config: Path, url: str, *extra: str) -> None:
        result = _cli("agent.cli.main", "enroll", "--config", str(config), "--server", url, "--token", self.token(), *extra)
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
    result = _cli("server.cli", "init", "--data-dir", str(data_dir), "--json")
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


def test_a_file_written_becomes_an_event_at_the_collector(stack, running):
    serve = stack.collector()
    running.append(serve)
    config = stack.agent_config()
    stack.enroll(config, serve.url)
    assert (config.parent / "credentials.json").stat().st_mode & 0o777 == 0o600
    agent = Agent(config)
    running.append(agent)
    (config.parent / "Desktop" / "notes.txt").write_text(f"copied {SECRET_WORD} to my stick\n")
    delivered(stack, 1, timeout=30)
    wait_for(lambda: agent.status().get("last_shipped_at"), timeout=10, message="status shows the shipment")


def test_collector_down_while_20000_events_are_produced(stack, running):
    port = free_port()
    config = stack.agent_config()
    serve = stack.collector(port)
    stack.enroll(config, serve.url)
    serve.stop()
    agent = Agent(config)
    running.append(agent)
    ids = produce(agent.spool, 20_000)
    time.sleep(2)  # the shipper meets a dead collector and backs off
    assert spool_depth(agent.spool) == 20_000
    assert "cannot reach" in agent.read_log()
    running.append(stack.collector(port))
    delivered(stack, 20_000, timeout=240)
    wait_for(lambda: spool_depth(agent.spool) == 0, timeout=60, message="spool drained")
    assert stack.stored() == (20_000, 20_000)
    with sqlite3.connect(stack.data_dir / "collector.db") as db:
        stored_ids = {i for (i,) in db.execute("SELECT id FROM events WHERE channel != 'agent'")}
    assert stored_ids == set(ids)


def test_agent_killed_ten_times_while_shipping(stack, running, fault_proxy_factory):
    serve = stack.collector()
    running.append(serve)
    proxy = fault_proxy_factory(serve.port)
    proxy.hold_replies(0.2)  # slow replies, so the kills land while batches are in flight
    config = stack.agent_config(batch_events="100")
    stack.enroll(config, proxy.url)
    agent = Agent(config)
    ids = produce(agent.spool, 3_000)
    rng = random.Random(7)
    for _ in range(10):
        time.sleep(rng.uniform(0.3, 1.2))
        agent.stop(signal.SIGKILL)
        agent = Agent(config)
    running.append(agent)
    proxy.hold_replies(0)
    delivered(stack, 3_000, timeout=120)
    wait_for(lambda: spool_depth(agent.spool) == 0, timeout=60, message="spool drained")
    assert stack.stored() == (3_000, 3_000)
    assert len(ids) == 3_000


def test_collector_restarted_in_the_middle_of_batches(stack, running):
    port = free_port()
    serve = stack.collector(port)
    config = stack.agent_config(batch_events="200")
    stack.enroll(config, serve.url)
    agent = Agent(config)
    running.append(agent)
    produce(agent.spool, 5_000)
    wait_for(lambda: stack.stored()[0] > 0, timeout=30, message="shipping started")
    serve.stop(signal.SIGKILL)
    restarted = stack.collector(port)
    running.append(restarted)
    delivered(stack, 5_000)
    wait_for(lambda: spool_depth(agent.spool) == 0, timeout=60, message="spool drained")
    assert stack.stored() == (5_000, 5_000)


def test_slow_collector_and_500s_lose_and_double_nothing(stack, running, fault_proxy_factory):
    serve = stack.collector()
    running.append(serve)
    proxy = fault_proxy_factory(serve.port)
    config = stack.agent_config(timeout_s="1", batch_events="100")
    stack.enroll(config, proxy.url)
    proxy.hold_replies(3)  # the collector commits, the agent gives up after 1 s and retries
    agent = Agent(config)
    running.append(agent)
    produce(agent.spool, 300)
    wait_for(lambda: stack.stored()[0] >= 100, timeout=30, message="a batch committed behind a timed-out request")
    assert "did not answer" in agent.read_log()
    proxy.hold_replies(0)
    proxy.release()
    proxy.fail_next(4, 500)
    delivered(stack, 300, timeout=120)
    wait_for(lambda: spool_depth(agent.spool) == 0, timeout=60, message="spool drained")
    assert stack.stored() == (300, 300)
    assert proxy.failed == 4


def test_spool_cap_drops_routine_events_first_and_the_count_arrives(stack, running):
    port = free_port()
    serve = stack.collector(port)
    config = stack.agent_config()
    config.write_text(config.read_text().replace('path = "spool.db"', 'path = "spool.db"\nmax_bytes = 1048576'))
    stack.enroll(config, serve.url)
    serve.stop()
    agent = Agent(config)
    running.append(agent)
    routine = produce(agent.spool, 2_000, matched=False, max_bytes=1 << 20)
    matches = produce(agent.spool, 2_000, matched=True, max_bytes=1 << 20)  # more than fits: routine ones make room
    running.append(stack.collector(port))
    wait_for(lambda: "spool.dropped" in stack.stored_types(), timeout=120, message="drop report at the collector")
    wait_for(lambda: spool_depth(agent.spool) == 0, timeout=60, message="spool drained")
    with sqlite3.connect(stack.data_dir / "collector.db") as db:
        stored = {i for (i,) in db.execute("SELECT id FROM events")}
        reports = [json.loads(b) for (b,) in db.execute("SELECT body FROM events WHERE type = 'spool.dropped'")]
    assert set(matches) <= stored, "match events are never dropped"
    dropped_routine = len(set(routine) - stored)
    assert dropped_routine > 0 and sum(r["dropped"] for r in reports) == dropped_routine


def test_revoked_agent_keeps_spooling_and_ships_after_enrolling_again(stack, running):
    serve = stack.collector()
    running.append(serve)
    config = stack.agent_config()
    stack.enroll(config, serve.url)
    agent_id = json.loads((config.parent / "credentials.json").read_text())["agent_id"]
    assert _cli("server.cli", "agent", "revoke", agent_id, "--data-dir", str(stack.data_dir)).returncode == 0
    agent = Agent(config)
    running.append(agent)
    produce(agent.spool, 50)
    wait_for(lambda: "revoked" in agent.read_log(), timeout=30, message="a clear error about the revocation")
    assert spool_depth(agent.spool) == 50 and stack.stored()[0] == 0
    stack.enroll(config, serve.url)  # IT re-enrolls the running agent
    delivered(stack, 50, timeout=120)


def test_wrong_ca_keeps_events_and_ships_once_fixed(stack, running, tmp_path):
    right, wrong = self_signed(tmp_path / "tls", "collector"), self_signed(tmp_path / "tls", "impostor")
    serve = stack.collector(tls=right)
    running.append(serve)
    config = stack.agent_config()
    stack.enroll(config, serve.url, "--ca", str(right[0]))
    good = config.read_text()
    config.write_text(good.replace("[server]\n", f'[server]\nca_file = "{wrong[0]}"\n'))
    agent = Agent(config)
    produce(agent.spool, 20)
    wait_for(lambda: "check [server] ca_file" in agent.read_log(), timeout=30, message="a clear TLS error")
    assert spool_depth(agent.spool) == 20
    agent.stop()
    config.write_text(good)
    agent = Agent(config)
    running.append(agent)
    delivered(stack, 20, timeout=60)
